// Process-shared building blocks: futexes, robust mutexes, memfd segments,
// crash points. Internal; used by queue, lock and value.

#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <pthread.h>
#include <sys/types.h>
#include <vector>

namespace pactor::detail {

using steady = std::chrono::steady_clock;
/// An absolute deadline; nullopt waits forever.
using deadline_t = std::optional<steady::time_point>;

/// Returns a deadline `timeout` from now (negative = already passed).
deadline_t deadline_after(std::chrono::nanoseconds timeout);

/// How long a call may wait: forever, not at all, or a timeout whose
/// deadline is fixed the first time the call has to wait (so a call that
/// does not wait never reads the clock).
class wait_limit {
public:
  static wait_limit forever() noexcept {
    return wait_limit(kind::forever, {});
  }
  static wait_limit none() noexcept {
    return wait_limit(kind::none, {});
  }
  /// Any duration; rounded up to whole nanoseconds.
  template <class Rep, class Period>
  static wait_limit after(std::chrono::duration<Rep, Period> timeout) noexcept {
    return wait_limit(kind::timeout,
                      std::chrono::ceil<std::chrono::nanoseconds>(timeout));
  }
  /// Returns whether the call may not wait at all.
  [[nodiscard]] bool none_allowed() const noexcept {
    return kind_ == kind::none;
  }
  /// Returns the absolute deadline (nullopt = forever), fixing it now if
  /// this is the first wait.
  const deadline_t& deadline() {
    if (!fixed_) {
      fixed_ = true;
      if (kind_ == kind::timeout)
        deadline_ = steady::now() + timeout_;
      else if (kind_ == kind::none)
        deadline_ = steady::time_point::min();
    }
    return deadline_;
  }

private:
  enum class kind : std::uint8_t { forever, none, timeout };
  wait_limit(kind k, std::chrono::nanoseconds t) noexcept
      : kind_(k), timeout_(t) {
  }
  kind kind_;
  std::chrono::nanoseconds timeout_;
  deadline_t deadline_;
  bool fixed_ = false;
};

/// Returns this process's pid, cached (refreshed in fork children).
pid_t cached_pid() noexcept;
/// Returns the calling thread's id, cached per thread (refreshed in fork
/// children).
pid_t cached_tid() noexcept;

/// Waits on a process-shared futex while `*word == expected`, at most until
/// `deadline` (and at most `cap` per call). Returns false on timeout.
bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                const deadline_t& deadline,
                std::chrono::nanoseconds cap = std::chrono::seconds(1));

/// Wakes every waiter on a process-shared futex.
void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept;

/// Wakes up to `n` waiters on a process-shared futex.
void futex_wake(std::atomic<std::uint32_t>* word, int n) noexcept;

/// A futex word whose bit 31 says "someone sleeps": wakers pay a system call
/// only then. See docs/design/queue.md for the protocol.
inline constexpr std::uint32_t sleepers_bit = 0x80000000U;

/// Marks `word` as having sleepers; returns the value to wait for.
std::uint32_t announce_sleeper(std::atomic<std::uint32_t>* word) noexcept;

/// After publishing (with a seq_cst fence before): wakes sleepers if any.
void wake_sleepers(std::atomic<std::uint32_t>* word) noexcept;

/// Initializes a process-shared, robust mutex in shared memory.
void robust_mutex_init(pthread_mutex_t* m);

/// Locks a robust mutex: spins `spin` trylocks, then blocks until
/// `deadline`. A mutex whose owner died is taken over and made consistent;
/// `owner_died` tells the caller. Returns false on timeout.
bool robust_mutex_lock(pthread_mutex_t* m, wait_limit& limit, int spin = 100,
                       bool* owner_died = nullptr);

/// Unlocks a robust mutex.
void robust_mutex_unlock(pthread_mutex_t* m) noexcept;

/// Owns a robust mutex lock (RAII).
class robust_guard {
public:
  explicit robust_guard(pthread_mutex_t* m) noexcept : m_(m) {
  }
  robust_guard(const robust_guard&) = delete;
  robust_guard& operator=(const robust_guard&) = delete;
  ~robust_guard() {
    unlock();
  }
  void unlock() noexcept {
    if (m_ != nullptr)
      robust_mutex_unlock(m_);
    m_ = nullptr;
  }

private:
  pthread_mutex_t* m_;
};

/// A memfd segment mapped shared (mode 0600, nothing in /dev/shm). The fd is
/// registered as inheritable, so fork children keep it (to pass it on).
class segment {
public:
  /// Creates a zero-filled segment of `size` bytes.
  static segment create(std::size_t size, const char* name);
  /// Maps the segment behind `fd` (which it duplicates).
  static segment attach(int fd);

  segment() noexcept = default;
  segment(segment&& other) noexcept;
  segment& operator=(segment&& other) noexcept;
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;
  ~segment();

  [[nodiscard]] void* data() const noexcept {
    return addr_;
  }
  [[nodiscard]] std::size_t size() const noexcept {
    return size_;
  }
  [[nodiscard]] int fd() const noexcept {
    return fd_;
  }

private:
  void reset() noexcept;
  int fd_ = -1;
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

/// Registers an fd that fork children keep open (pactor objects' segments).
void register_inheritable_fd(int fd);
void unregister_inheritable_fd(int fd) noexcept;
/// Returns the registered fds, sorted.
std::vector<int> inheritable_fds();

/// While alive, collects the fds of pactor objects packed as process
/// arguments, so that spawn and forkserver children receive them.
class fd_collector {
public:
  fd_collector() noexcept;
  fd_collector(const fd_collector&) = delete;
  fd_collector& operator=(const fd_collector&) = delete;
  ~fd_collector();
  [[nodiscard]] const std::vector<int>& fds() const noexcept {
    return fds_;
  }
  /// Adds `fd` to the innermost live collector on this thread, if any.
  static void collect(int fd);

private:
  std::vector<int> fds_;
  fd_collector* outer_;
};

/// Test builds (PACTOR_CRASH_POINTS) kill the process at an armed point.
/// A point is armed by the PACTOR_CRASH_AT environment variable "N:K": the
/// K-th time point N is reached (K from 1), the process SIGKILLs itself.
void crash_point_hit(int n) noexcept;
void crash_point_arm(int n, long countdown) noexcept;

} // namespace pactor::detail

#ifdef PACTOR_CRASH_POINTS
#  define PACTOR_CRASH_POINT(n) ::pactor::detail::crash_point_hit(n)
#else
#  define PACTOR_CRASH_POINT(n) ((void)0)
#endif
