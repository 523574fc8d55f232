// pactor::wait: the first ready of several queues, mailboxes, pipe ends,
// process sentinels and fds (Python's multiprocessing.connection.wait).

#pragma once

#include <pactor/runtime/detail/ring.hpp>
#include <pactor/runtime/mailbox.hpp>
#include <pactor/runtime/pipe.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <vector>

namespace pactor {

/// Something pactor::wait can wait for. Holds a reference: the object must
/// outlive the wait() call.
class waitable {
public:
  /// Ready when a get would not wait: a message is there, or the queue is
  /// closed (a get then throws queue_closed).
  template <class T>
  waitable(const queue<T>& q) noexcept // NOLINT(google-explicit-constructor)
      : ring_(&q.ring()) {
  }
  /// Ready when a receive would not wait.
  template <class T>
  waitable(const mailbox<T>& m) noexcept // NOLINT(google-explicit-constructor)
      : ring_(&m.ring()) {
  }
  /// Ready when a recv would not wait: a message is there, or the peer is
  /// gone (recv then throws eof_error). The end must be able to receive.
  template <class T>
  waitable(
    const connection<T>& c) noexcept // NOLINT(google-explicit-constructor)
      : end_(&c.end()) {
  }
  /// Ready when the (started) process has exited: its sentinel.
  waitable(const process& p) // NOLINT(google-explicit-constructor)
      : fd_(p.sentinel()) {
  }
  /// Ready when the ring has a record (the layer above queues: actors).
  static waitable of_ring(const detail::ring& r) noexcept {
    waitable w;
    w.ring_ = &r;
    return w;
  }
  /// Ready when `fd` is readable (a socket, a pipe, a pidfd...).
  static waitable readable_fd(int fd) noexcept {
    waitable w;
    w.fd_ = fd;
    return w;
  }

private:
  waitable() noexcept = default;
  friend std::vector<std::size_t> wait(std::span<const waitable>,
                                       detail::wait_limit);
  const detail::ring* ring_ = nullptr;
  const detail::pipe_end* end_ = nullptr;
  int fd_ = -1;
};

/// Waits until at least one of `objects` is ready, or the limit passes;
/// returns the indices of the ready ones (ascending; empty on timeout).
/// With only queues and mailboxes, no system call when one is ready at once;
/// a sleeping waiter is woken by the put, send or exit that makes an object
/// ready. Throws std::invalid_argument for a process not started or an fd
/// that is closed.
std::vector<std::size_t> wait(std::span<const waitable> objects,
                              detail::wait_limit limit);

/// Waits without a time limit.
inline std::vector<std::size_t> wait(std::span<const waitable> objects) {
  return wait(objects, detail::wait_limit::forever());
}
inline std::vector<std::size_t> wait(std::initializer_list<waitable> objects) {
  return wait(std::span<const waitable>(objects.begin(), objects.size()),
              detail::wait_limit::forever());
}

/// Waits at most `timeout` (zero: just look).
template <class Rep, class Period>
std::vector<std::size_t> wait(std::span<const waitable> objects,
                              std::chrono::duration<Rep, Period> timeout) {
  return wait(objects, detail::wait_limit::after(timeout));
}
template <class Rep, class Period>
std::vector<std::size_t> wait(std::initializer_list<waitable> objects,
                              std::chrono::duration<Rep, Period> timeout) {
  return wait(std::span<const waitable>(objects.begin(), objects.size()),
              detail::wait_limit::after(timeout));
}

} // namespace pactor
