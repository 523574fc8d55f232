// queue<T>: the crash-proof multi-producer multi-consumer queue in shared
// memory (cf. Python's multiprocessing.Queue).

#pragma once

#include <pactor/runtime/detail/fd_handle.hpp>
#include <pactor/runtime/detail/ring.hpp>
#include <pactor/serialization/codec.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace pactor {

namespace detail {
/// Refuses a message that no receiver would accept (decode_limits'
/// max_payload, 64 MiB by default): the sender learns it, not the receiver.
inline void check_message_size(std::size_t size) {
  if (size > decode_limits{}.max_payload)
    throw std::length_error("pactor: a message of " + std::to_string(size)
                            + " bytes is over the limit receivers accept ("
                            + std::to_string(decode_limits{}.max_payload)
                            + " bytes)");
}
} // namespace detail

class queue_full;
class queue_closed;

namespace detail {
/// Encodes `value` into a record of `r` (queue<T> and mailbox<T> put).
/// Throws queue_full on timeout, queue_closed, std::length_error.
template <class T>
void put_value(ring& r, const T& value, wait_limit limit);
} // namespace detail

/// Base of the queue outcomes a caller handles.
class queue_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// get timed out on an empty queue (Python's queue.Empty).
class queue_empty : public queue_error {
public:
  queue_empty() : queue_error("pactor::queue_empty: the queue stayed empty") {
  }
};

/// put timed out on a full queue (Python's queue.Full).
class queue_full : public queue_error {
public:
  queue_full() : queue_error("pactor::queue_full: the queue stayed full") {
  }
};

/// put on a closed queue, or get on a closed and drained one.
class queue_closed : public queue_error {
public:
  queue_closed() : queue_error("pactor::queue_closed: the queue is closed") {
  }
};

template <class T>
void detail::put_value(ring& r, const T& value, wait_limit limit) {
  auto size = packed_size(value);
  check_message_size(size);
  auto write = [&](std::byte* dst) { pack_into(value, {dst, size}); };
  switch (r.put(size, write, limit)) {
  case ring_status::ok:
    return;
  case ring_status::timeout:
    throw queue_full();
  case ring_status::closed:
    throw queue_closed();
  }
}

/// Sizes and behaviour of a queue.
struct queue_options {
  /// Bytes of records the queue holds (a power of two; at least 4 KiB, at
  /// most 1 GiB). A message larger than the ring travels in a side block (a
  /// memfd of its own, passed over the queue's socket).
  std::size_t capacity_bytes = std::size_t{1} << 20;
  /// How long a waiting get or put spins before it sleeps; 0 = never spin.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
};

/// A bounded multi-producer multi-consumer FIFO queue of T in shared memory.
///
/// Messages are encoded with msgpack. A put that returned is never lost, and
/// a process killed at any instruction inside put or get neither blocks nor
/// corrupts the queue for the others (docs/design/queue.md). `queue` is a
/// handle: copies share the queue; it reaches fork children by inheritance
/// and spawn/forkserver children as a target argument.
///
/// Example:
///
///     pactor::queue<std::string> q;
///     pactor::process p([q]() mutable { q.put("hello"); });
///     p.start();
///     std::string s = q.get(std::chrono::seconds(5)); // queue_empty on
///     timeout p.join();
template <class T>
class queue {
public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  /// A queue of at most `maxsize` messages (0 = bounded by bytes only).
  explicit queue(std::size_t maxsize = 0, queue_options opts = {})
      : ring_(detail::ring::create({opts.capacity_bytes, maxsize})) {
    ring_.spin(opts.spin);
  }

  /// Maps the queue behind `fds` (a queue<T>'s fds() from another process,
  /// passed with pass_fds or SCM_RIGHTS).
  static queue attach(const std::array<int, 3>& fds) {
    return queue(detail::ring::attach(fds));
  }

  /// Appends `value`, blocking while the queue is full.
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

  /// Removes and returns the oldest message, blocking while empty.
  T get() {
    return *get_until(detail::wait_limit::forever(), true);
  }

  /// Removes and returns the oldest message, waiting at most `timeout`;
  /// throws queue_empty.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return *get_until(detail::wait_limit::after(timeout), true);
  }

  /// Removes and returns the oldest message if there is one.
  std::optional<T> try_get() {
    return get_until(detail::wait_limit::none(), false);
  }

  /// Returns the number of messages (exact at the instant it is read).
  [[nodiscard]] std::size_t size() const noexcept {
    return ring_.size();
  }
  [[nodiscard]] bool empty() const noexcept {
    return ring_.size() == 0;
  }
  /// Returns whether a small put would have to wait.
  [[nodiscard]] bool full() const noexcept {
    return ring_.full();
  }
  /// Returns the largest encoded message that fits in the ring itself
  /// (larger ones go to side blocks).
  [[nodiscard]] std::size_t max_message_bytes() const noexcept {
    return ring_.max_record();
  }

  /// Closes the queue for every process: puts throw queue_closed; gets
  /// drain what is there, then throw queue_closed.
  void close() noexcept {
    ring_.close();
  }
  [[nodiscard]] bool closed() const noexcept {
    return ring_.closed();
  }

  /// Returns the fds behind the queue (its memfd and its socketpair), to
  /// pass with pass_fds and give to attach().
  [[nodiscard]] std::array<int, 3> fds() const noexcept {
    return ring_.fds();
  }

  /// The ring under the queue (for pactor::wait).
  [[nodiscard]] const detail::ring& ring() const noexcept {
    return ring_;
  }

protected:
  explicit queue(detail::ring r) : ring_(std::move(r)) {
  }
  queue(std::size_t maxsize, const queue_options& opts, bool joinable)
      : ring_(detail::ring::create({opts.capacity_bytes, maxsize, joinable})) {
    ring_.spin(opts.spin);
  }

private:
  void put_until(const T& value, detail::wait_limit limit) {
    detail::put_value(ring_, value, limit);
  }

  std::optional<T> get_until(detail::wait_limit limit, bool throw_on_timeout) {
    std::optional<T> out;
    auto read = [&](std::span<const std::byte> payload) {
      out.emplace(decode_payload<T>(payload));
    };
    switch (ring_.get(read, limit)) {
    case detail::ring_status::ok:
      return out;
    case detail::ring_status::timeout:
      if (throw_on_timeout)
        throw queue_empty();
      return std::nullopt;
    case detail::ring_status::closed:
      throw queue_closed();
    }
    return out;
  }

protected:
  detail::ring ring_;
};

/// Thrown by joinable_queue::join when consumer processes died holding tasks
/// they had taken but not marked done (Python's JoinableQueue would hang).
using tasks_lost = detail::tasks_lost;

/// A queue whose consumers mark each task done, so that a producer can wait
/// for all of them (Python's JoinableQueue). Death-aware: when a consumer
/// process dies holding unfinished tasks, join() throws tasks_lost (once)
/// instead of hanging forever, and counts those tasks as done.
///
/// Example:
///
///     pactor::joinable_queue<job> jobs;
///     // workers: auto j = jobs.get(); work(j); jobs.task_done();
///     for (auto& j : batch) jobs.put(j);
///     jobs.join();                     // every job done (or tasks_lost)
template <class T>
class joinable_queue : public queue<T> {
public:
  explicit joinable_queue(std::size_t maxsize = 0, queue_options opts = {})
      : queue<T>(maxsize, opts, true) {
  }

  /// Maps the joinable queue behind `fd`; std::invalid_argument if the queue
  /// there is not joinable.
  static joinable_queue attach(const std::array<int, 3>& fds) {
    auto r = detail::ring::attach(fds);
    if (!r.is_joinable())
      throw std::invalid_argument("pactor::joinable_queue::attach: the queue "
                                  "is not joinable");
    return joinable_queue(std::move(r));
  }

  /// Marks one task this process got as done. Throws std::logic_error if
  /// this process has no unfinished task (Python's ValueError).
  void task_done() {
    this->ring_.task_done();
  }

  /// Waits until every task put has been marked done.
  void join() {
    this->ring_.join(detail::wait_limit::forever());
  }

  /// Waits at most `timeout`; returns whether every task was done.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->ring_.join(detail::wait_limit::after(timeout));
  }

  /// Returns how many tasks were lost to dead consumers so far.
  [[nodiscard]] std::uint64_t lost_tasks() const noexcept {
    return this->ring_.lost_tasks();
  }

private:
  explicit joinable_queue(detail::ring r) : queue<T>(std::move(r)) {
  }
};

} // namespace pactor
