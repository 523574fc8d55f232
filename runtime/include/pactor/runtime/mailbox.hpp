// mailbox<T>: the multi-producer single-consumer front-end of the crash-proof
// ring. The consumer reads a message in place and acknowledges it after
// handling it, so a consumer killed in between leaves the message for the
// next one (at-least-once), which sees a delivery count above one.

#pragma once

#include <pactor/runtime/queue.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace pactor {

/// receive() before ack() of the previous message (a std::logic_error).
using unacknowledged = detail::unacknowledged;

/// A message received from a mailbox, not yet acknowledged.
template <class T>
struct letter {
  T value;
  /// 1 on the first delivery; more when earlier consumers received this
  /// message and died before acknowledging it.
  std::uint32_t delivery = 1;
  [[nodiscard]] bool redelivered() const noexcept {
    return delivery > 1;
  }
};

/// A bounded multi-producer single-consumer mailbox of T in shared memory.
///
/// Any process may put; one process at a time receives. `receive` hands out
/// the oldest message and keeps it in the mailbox until `ack()`: if the
/// consumer dies first, the next consumer (a restarted one) receives the same
/// message again, with `delivery` counting the attempts. Puts, sizes, closing
/// and passing to other processes work as for queue<T> (docs/queues.md).
///
/// Example:
///
///     pactor::mailbox<std::string> box;
///     box.put("job");
///     auto l = box.receive(std::chrono::seconds(1));
///     handle(l.value);   // if this process dies here, "job" stays
///     box.ack();         // now it is gone
template <class T>
class mailbox {
public:
  /// Travels to spawn/forkserver children as its fds (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  /// A mailbox of at most `maxsize` messages (0 = bounded by bytes only).
  explicit mailbox(std::size_t maxsize = 0, queue_options opts = {})
      : ring_(detail::ring::create({opts.capacity_bytes, maxsize})) {
    ring_.spin(opts.spin);
  }

  /// Maps the mailbox behind `fds` (another mailbox's fds()).
  static mailbox attach(const std::array<int, 3>& fds) {
    return mailbox(detail::ring::attach(fds));
  }

  /// Appends `value`, blocking while the mailbox is full.
  void put(const T& value) {
    put_until(value, detail::wait_limit::forever());
  }
  /// Appends `value`, waiting at most `timeout`; throws queue_full.
  template <class Rep, class Period>
  void put(const T& value, std::chrono::duration<Rep, Period> timeout) {
    put_until(value, detail::wait_limit::after(timeout));
  }
  /// Appends `value` if there is room now; returns whether it did.
  bool try_put(const T& value) {
    try {
      put_until(value, detail::wait_limit::none());
      return true;
    } catch (const queue_full&) {
      return false;
    }
  }

  /// Returns the oldest message, blocking while empty; it stays until ack().
  /// Throws unacknowledged if the previous one was not acked,
  /// queue_closed once closed and drained, decode_error for a message that
  /// is not a T (that message is consumed).
  letter<T> receive() {
    return *receive_until(detail::wait_limit::forever(), true);
  }
  /// As receive(), waiting at most `timeout`; throws queue_empty.
  template <class Rep, class Period>
  letter<T> receive(std::chrono::duration<Rep, Period> timeout) {
    return *receive_until(detail::wait_limit::after(timeout), true);
  }
  /// As receive(), without waiting.
  std::optional<letter<T>> try_receive() {
    return receive_until(detail::wait_limit::none(), false);
  }

  /// Hands the oldest message's encoded bytes to `f(bytes, delivery)` in
  /// place (valid during the call); the message stays until ack(). Returns
  /// false on timeout; throws queue_closed once closed and drained.
  template <class F, class Rep, class Period>
  bool receive_bytes(F&& f, std::chrono::duration<Rep, Period> timeout) {
    return receive_bytes_until(f, detail::wait_limit::after(timeout));
  }

  /// Consumes the message the last receive handed out. Throws
  /// std::logic_error if there is none.
  void ack() {
    ring_.ack();
  }

  [[nodiscard]] std::size_t size() const noexcept {
    return ring_.size();
  }
  [[nodiscard]] bool empty() const noexcept {
    return ring_.size() == 0;
  }
  [[nodiscard]] bool full() const noexcept {
    return ring_.full();
  }
  /// Closes the mailbox for every process (as queue<T>::close).
  void close() noexcept {
    ring_.close();
  }
  [[nodiscard]] bool closed() const noexcept {
    return ring_.closed();
  }
  [[nodiscard]] std::array<int, 3> fds() const noexcept {
    return ring_.fds();
  }
  /// The ring under the mailbox (for pactor::wait).
  [[nodiscard]] const detail::ring& ring() const noexcept {
    return ring_;
  }

private:
  explicit mailbox(detail::ring r) : ring_(std::move(r)) {
  }

  void put_until(const T& value, detail::wait_limit limit) {
    detail::put_value(ring_, value, limit);
  }

  template <class F>
  bool receive_bytes_until(F& f, detail::wait_limit limit) {
    auto read = [&](std::span<const std::byte> bytes, std::uint32_t delivery) {
      f(bytes, delivery);
    };
    switch (ring_.peek(read, limit)) {
    case detail::ring_status::ok:
      return true;
    case detail::ring_status::timeout:
      return false;
    case detail::ring_status::closed:
      throw queue_closed();
    }
    return false;
  }

  std::optional<letter<T>> receive_until(detail::wait_limit limit,
                                         bool throw_on_timeout) {
    std::optional<letter<T>> out;
    bool undecodable = false;
    auto read = [&](std::span<const std::byte> bytes, std::uint32_t delivery) {
      undecodable = true;
      out.emplace(letter<T>{decode_payload<T>(bytes), delivery});
      undecodable = false;
    };
    try {
      if (receive_bytes_until(read, limit))
        return out;
    } catch (...) {
      if (undecodable)
        ring_.ack(); // nobody can handle it: consumed, as in queue<T>
      throw;
    }
    if (throw_on_timeout)
      throw queue_empty();
    return std::nullopt;
  }

  detail::ring ring_;
};

} // namespace pactor
