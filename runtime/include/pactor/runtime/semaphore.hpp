// Process-shared semaphores and events (cf. multiprocessing.Semaphore,
// BoundedSemaphore and Event).

#pragma once

#include <pactor/runtime/detail/fd_handle.hpp>
#include <pactor/runtime/detail/sync.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

namespace pactor {

namespace detail {
struct semaphore_state;
struct event_state;
} // namespace detail

/// A counting semaphore shared between processes (Python's Semaphore; with
/// bounded = true, BoundedSemaphore). It has no owner: a process that dies
/// after acquiring without releasing keeps its unit, as in Python.
///
/// Example:
///
///     pactor::semaphore slots(4);
///     if (slots.acquire(std::chrono::seconds(1))) { ...; slots.release(); }
class semaphore {
public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  explicit semaphore(std::uint32_t initial = 1, bool bounded = false);

  /// Takes one unit, waiting while there is none.
  void acquire() {
    acquire_until(detail::wait_limit::forever());
  }
  /// Takes one unit, waiting at most `timeout`; returns whether it did.
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(detail::wait_limit::after(timeout));
  }
  /// Takes one unit if there is one now.
  bool try_acquire() {
    return acquire_until(detail::wait_limit::none());
  }
  /// Gives `n` units back. A bounded semaphore throws std::logic_error if
  /// that would exceed its initial value (Python's ValueError).
  void release(std::uint32_t n = 1);
  /// Returns the number of units now (Python's get_value()).
  [[nodiscard]] std::uint32_t value() const noexcept;

  // Lockable, for std::lock_guard / std::counting_semaphore-like use.
  void lock() {
    acquire();
  }
  bool try_lock() {
    return try_acquire();
  }
  void unlock() {
    release();
  }

  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  static semaphore attach(int fd);

private:
  explicit semaphore(std::shared_ptr<detail::segment> seg);
  bool acquire_until(detail::wait_limit limit);
  std::shared_ptr<detail::segment> seg_;
  detail::semaphore_state* s_ = nullptr;
};

/// A flag that processes can wait for (Python's Event).
class event {
public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  event();

  /// Sets the flag and wakes every waiter.
  void set() noexcept;
  /// Clears the flag.
  void clear() noexcept;
  [[nodiscard]] bool is_set() const noexcept;
  /// Waits until the flag is set.
  void wait() {
    wait_until(detail::wait_limit::forever());
  }
  /// Waits at most `timeout`; returns whether the flag is set.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::wait_limit::after(timeout));
  }

  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  static event attach(int fd);

private:
  explicit event(std::shared_ptr<detail::segment> seg);
  bool wait_until(detail::wait_limit limit);
  std::shared_ptr<detail::segment> seg_;
  detail::event_state* s_ = nullptr;
};

} // namespace pactor
