// Process-shared condition variables and barriers (cf.
// multiprocessing.Condition and Barrier).

#pragma once

#include <pactor/runtime/detail/fd_handle.hpp>
#include <pactor/runtime/detail/sync.hpp>
#include <pactor/runtime/lock.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>

namespace pactor {

namespace detail {
struct condition_state;
struct barrier_state;
} // namespace detail

/// A condition variable shared between processes, tied to a pactor::mutex
/// (Python's Condition). wait() must be called holding the mutex.
///
/// Example:
///
///     pactor::mutex m;
///     pactor::condition ready(m);
///     { std::lock_guard g(m); ready.wait_for([&] { return flag.raw(); }, 5s);
///     }
class condition {
public:
  /// Travels to spawn/forkserver children as its fd; the mutex must be passed
  /// too and given to attach().
  using pactor_fd_handle = void;

  explicit condition(mutex m);

  /// Releases the mutex, waits for a notify, re-acquires the mutex. Throws
  /// std::logic_error if the caller does not hold the mutex.
  void wait() {
    wait_until(detail::wait_limit::forever());
  }
  /// As wait(), at most `timeout`; returns false on timeout (spurious
  /// wake-ups return true, as in Python).
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::wait_limit::after(timeout));
  }
  /// Waits until `pred()` holds, at most `timeout`; returns pred().
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    auto limit = detail::wait_limit::after(timeout);
    while (!pred()) {
      if (!wait_until(limit))
        return pred();
    }
    return true;
  }
  /// Wakes up to `n` waiters.
  void notify(int n = 1) noexcept;
  /// Wakes every waiter.
  void notify_all() noexcept;

  [[nodiscard]] mutex& get_mutex() noexcept {
    return m_;
  }
  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  /// Maps the condition behind `fd`, tied to the mutex `m` (which must be
  /// the one it was created with, mapped in this process).
  static condition attach(int fd, mutex m);
  /// For the fd adaptor: a condition whose mutex is attached separately
  /// is not usable; use attach(fd, m).
  static condition attach(int fd);

private:
  condition(std::shared_ptr<detail::segment> seg, mutex m);
  bool wait_until(detail::wait_limit limit);
  std::shared_ptr<detail::segment> seg_;
  detail::condition_state* s_ = nullptr;
  mutex m_;
};

/// The barrier was broken: by abort(), reset() while parties waited, a
/// timeout, an action that threw, or a registered party that died.
class broken_barrier : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A barrier for `parties` participants in any processes (Python's Barrier).
/// Death-aware: every process that waits on it registers; when a registered
/// party dies without arriving, the waiters get broken_barrier instead of
/// hanging. (A party that dies before its first wait is unknown to the
/// barrier: give wait a timeout for that case.)
class barrier {
public:
  using pactor_fd_handle = void;

  /// `action` runs in the process whose arrival completes a round (before
  /// the others are released); it is local to this handle (a spawn child's
  /// attached handle has none).
  explicit barrier(std::uint32_t parties, std::function<void()> action = {});

  /// Waits for all parties; returns this party's arrival index (parties - 1
  /// for the first to arrive, 0 for the last). Throws broken_barrier.
  std::uint32_t wait() {
    return wait_until(detail::wait_limit::forever());
  }
  /// As wait(); a timeout breaks the barrier for every party (Python).
  template <class Rep, class Period>
  std::uint32_t wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::wait_limit::after(timeout));
  }
  /// Breaks the barrier: current and future waiters get broken_barrier.
  void abort() noexcept;
  /// Returns the barrier to its initial state; current waiters get
  /// broken_barrier.
  void reset();
  [[nodiscard]] std::uint32_t parties() const noexcept;
  [[nodiscard]] std::uint32_t n_waiting() const noexcept;
  [[nodiscard]] bool broken() const noexcept;

  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  static barrier attach(int fd);

private:
  explicit barrier(std::shared_ptr<detail::segment> seg);
  std::uint32_t wait_until(detail::wait_limit limit);
  std::shared_ptr<detail::segment> seg_;
  detail::barrier_state* s_ = nullptr;
  std::function<void()> action_;
};

} // namespace pactor
