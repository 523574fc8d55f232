// Process-shared, death-aware mutexes (cf. multiprocessing.Lock and RLock).

#pragma once

#include <pactor/runtime/detail/fd_handle.hpp>
#include <pactor/runtime/detail/sync.hpp>

#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

namespace pactor {

/// The outcome of an acquire.
enum class lock_status : std::uint8_t {
  /// The caller holds the lock.
  acquired,
  /// The caller holds the lock, which it took over from an owner that died
  /// while holding it; the protected data may be half updated.
  acquired_owner_died,
  /// The timeout passed (or, for try_acquire, the lock was busy).
  timeout,
};

namespace detail {

/// A robust process-shared mutex in its own segment (or inside another).
class shared_mutex_handle {
public:
  shared_mutex_handle(bool recursive, std::size_t extra_bytes);
  shared_mutex_handle(std::shared_ptr<segment> seg, pthread_mutex_t* m);
  static shared_mutex_handle attach(int fd);

  lock_status acquire(wait_limit limit);
  void release();
  [[nodiscard]] bool previous_owner_died() const noexcept;
  /// Returns whether the calling thread holds the mutex.
  [[nodiscard]] bool held_by_caller() const noexcept;
  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  [[nodiscard]] std::byte* extra() const noexcept;
  [[nodiscard]] const std::shared_ptr<segment>& seg() const noexcept {
    return seg_;
  }

private:
  std::shared_ptr<segment> seg_;
  pthread_mutex_t* m_;
};

} // namespace detail

/// A mutex shared between processes (Python's Lock). When a holder dies (even
/// by SIGKILL), the next acquire takes the lock over and is told
/// (lock_status::acquired_owner_died). Only the holder may release it.
/// Lockable, so std::lock_guard and std::unique_lock work.
///
/// Example:
///
///     pactor::mutex l;
///     pactor::process p([l]() mutable { std::lock_guard g(l); ... });
///     if (l.acquire(std::chrono::seconds(1)) == pactor::lock_status::timeout)
///       ...;
class mutex {
public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  mutex() : h_(false, 0) {
  }

  /// Waits for the lock.
  lock_status acquire() {
    return h_.acquire(detail::wait_limit::forever());
  }
  /// Waits at most `timeout` for the lock.
  template <class Rep, class Period>
  lock_status acquire(std::chrono::duration<Rep, Period> timeout) {
    return h_.acquire(detail::wait_limit::after(timeout));
  }
  /// Takes the lock if it is free now.
  lock_status try_acquire() {
    return h_.acquire(detail::wait_limit::none());
  }
  /// Releases the lock; throws std::logic_error if the caller does not hold
  /// it.
  void release() {
    h_.release();
  }
  /// Returns whether the current holder took the lock over from a dead
  /// owner.
  [[nodiscard]] bool previous_owner_died() const noexcept {
    return h_.previous_owner_died();
  }

  // Lockable.
  void lock() {
    acquire();
  }
  bool try_lock() {
    return try_acquire() != lock_status::timeout;
  }
  void unlock() {
    release();
  }

  [[nodiscard]] int fd() const noexcept {
    return h_.fd();
  }
  /// Maps the mutex behind `fd` (from another process).
  static mutex attach(int fd) {
    return mutex(detail::shared_mutex_handle::attach(fd));
  }

  /// Internal: a mutex over an existing handle (value<T>, array<T>).
  explicit mutex(detail::shared_mutex_handle h) : h_(std::move(h)) {
  }
  /// Internal: the handle.
  [[nodiscard]] const detail::shared_mutex_handle& handle() const noexcept {
    return h_;
  }

private:
  detail::shared_mutex_handle h_;
};

/// A recursive mutex (Python's RLock): its holder may acquire it again and
/// must release it as often.
class recursive_mutex : public mutex {
public:
  recursive_mutex() : mutex(detail::shared_mutex_handle(true, 0)) {
  }
  /// Maps the recursive mutex behind `fd` (from another process).
  static recursive_mutex attach(int fd) {
    return recursive_mutex(detail::shared_mutex_handle::attach(fd));
  }

private:
  explicit recursive_mutex(detail::shared_mutex_handle h)
      : mutex(std::move(h)) {
  }
};

} // namespace pactor
