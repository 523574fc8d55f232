// Futexes, robust mutexes, memfd segments, the inheritable-fd registry and
// crash points.

#include <pactor/runtime/detail/sync.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fcntl.h>
#include <linux/futex.h>
#include <mutex>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace pactor::detail {

deadline_t deadline_after(std::chrono::nanoseconds timeout) {
  return steady::now() + timeout;
}

bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                const deadline_t& deadline, std::chrono::nanoseconds cap) {
  auto wait = cap;
  if (deadline) {
    auto left = *deadline - steady::now();
    if (left <= std::chrono::nanoseconds::zero())
      return false;
    wait = std::min<std::chrono::nanoseconds>(left, cap);
  }
  timespec ts{static_cast<time_t>(wait.count() / 1000000000),
              static_cast<long>(wait.count() % 1000000000)};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT,
            expected, &ts, nullptr, 0);
  return !deadline || steady::now() < *deadline;
}

void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept {
  futex_wake(word, INT_MAX);
}

void futex_wake(std::atomic<std::uint32_t>* word, int n) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, n,
            nullptr, nullptr, 0);
}

std::uint32_t announce_sleeper(std::atomic<std::uint32_t>* word) noexcept {
  auto v = word->load(std::memory_order_relaxed);
  while ((v & sleepers_bit) == 0
         && !word->compare_exchange_weak(v, v | sleepers_bit,
                                         std::memory_order_seq_cst)) {
  }
  return v | sleepers_bit;
}

void wake_sleepers(std::atomic<std::uint32_t>* word) noexcept {
  auto v = word->load(std::memory_order_relaxed);
  if ((v & sleepers_bit) == 0)
    return;
  word->store((v + 1) & ~sleepers_bit, std::memory_order_relaxed);
  futex_wake_all(word);
}

void robust_mutex_init(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int rc = ::pthread_mutex_init(m, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0)
    throw_errno(rc, "pthread_mutex_init");
}

namespace {
std::atomic<pid_t> pid_cache{0};
void forget_pid() noexcept {
  pid_cache.store(0, std::memory_order_relaxed);
}
} // namespace

pid_t cached_tid() noexcept {
  thread_local pid_t for_pid = 0;
  thread_local pid_t tid = 0;
  auto pid = cached_pid(); // changes in a fork child: refresh then
  if (for_pid != pid) {
    tid = ::gettid();
    for_pid = pid;
  }
  return tid;
}

pid_t cached_pid() noexcept {
  auto pid = pid_cache.load(std::memory_order_relaxed);
  if (pid == 0) {
    static const bool registered = [] {
      ::pthread_atfork(nullptr, nullptr, forget_pid);
      return true;
    }();
    (void)registered;
    pid = ::getpid();
    pid_cache.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

bool robust_mutex_lock(pthread_mutex_t* m, wait_limit& limit, int spin,
                       bool* owner_died) {
  int rc = ::pthread_mutex_trylock(m);
  // Test and test-and-set: spin reading the lock word (glibc's public
  // __data.__lock, 0 when free) and try only when it looks free, so that
  // waiting does not pull the cache line away from the holder.
  // Between looks the waiter backs off (1, 2, 4 ... 16 pauses), so that a
  // holder that releases and takes the lock again in a loop keeps the line.
  for (int i = 0, backoff = 1; rc == EBUSY && i < spin; ++i) {
#if defined(__x86_64__) || defined(__i386__)
    for (int k = 0; k < backoff; ++k)
      __builtin_ia32_pause();
#endif
    backoff = std::min(backoff * 2, 16);
    if (__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) == 0)
      rc = ::pthread_mutex_trylock(m);
  }
  if (rc == EBUSY && limit.none_allowed())
    return false;
  if (rc == EBUSY) {
    const auto& deadline = limit.deadline();
    if (deadline) {
#if defined(__SANITIZE_THREAD__)
      // GCC 12's ThreadSanitizer does not intercept pthread_mutex_clocklock
      // (it would then report our unlock as unlocking an unlocked mutex):
      // use the intercepted timedlock with the deadline on the wall clock.
      auto left = *deadline - steady::now();
      auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
        (std::chrono::system_clock::now() + left).time_since_epoch());
      timespec ts{static_cast<time_t>(wall.count() / 1000000000),
                  static_cast<long>(wall.count() % 1000000000)};
      rc = ::pthread_mutex_timedlock(m, &ts);
#else
      auto mono = std::chrono::duration_cast<std::chrono::nanoseconds>(
        deadline->time_since_epoch());
      timespec ts{static_cast<time_t>(mono.count() / 1000000000),
                  static_cast<long>(mono.count() % 1000000000)};
      rc = ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
    } else {
      rc = ::pthread_mutex_lock(m);
    }
  }
  if (rc == ETIMEDOUT)
    return false;
  if (rc == EOWNERDEAD) {
    // Every commit in pactor's shared structures is a single store, so the
    // protected state is consistent at any instruction: nothing to repair.
    ::pthread_mutex_consistent(m);
    if (owner_died != nullptr)
      *owner_died = true;
    return true;
  }
  if (rc != 0)
    throw_errno(rc, "pthread_mutex_lock");
  return true;
}

void robust_mutex_unlock(pthread_mutex_t* m) noexcept {
  ::pthread_mutex_unlock(m);
}

// --- segments ---------------------------------------------------------

segment segment::create(std::size_t size, const char* name) {
  segment s;
  s.fd_ = ::memfd_create(name, MFD_CLOEXEC);
  if (s.fd_ < 0)
    throw_errno("memfd_create");
  ::fchmod(s.fd_, 0600);
  if (::ftruncate(s.fd_, static_cast<off_t>(size)) != 0)
    throw_errno("ftruncate");
  s.size_ = size;
  s.addr_ = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd_, 0);
  if (s.addr_ == MAP_FAILED) {
    s.addr_ = nullptr;
    throw_errno("mmap");
  }
  register_inheritable_fd(s.fd_);
  return s;
}

segment segment::attach(int fd) {
  segment s;
  s.fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (s.fd_ < 0)
    throw_errno("dup of a segment fd");
  struct stat st {};
  if (::fstat(s.fd_, &st) != 0)
    throw_errno("fstat of a segment fd");
  s.size_ = static_cast<std::size_t>(st.st_size);
  s.addr_
    = ::mmap(nullptr, s.size_, PROT_READ | PROT_WRITE, MAP_SHARED, s.fd_, 0);
  if (s.addr_ == MAP_FAILED) {
    s.addr_ = nullptr;
    throw_errno("mmap");
  }
  register_inheritable_fd(s.fd_);
  return s;
}

segment::segment(segment&& other) noexcept
    : fd_(other.fd_), addr_(other.addr_), size_(other.size_) {
  other.fd_ = -1;
  other.addr_ = nullptr;
  other.size_ = 0;
}

segment& segment::operator=(segment&& other) noexcept {
  if (this != &other) {
    reset();
    std::swap(fd_, other.fd_);
    std::swap(addr_, other.addr_);
    std::swap(size_, other.size_);
  }
  return *this;
}

segment::~segment() {
  reset();
}

void segment::reset() noexcept {
  if (addr_ != nullptr)
    ::munmap(addr_, size_);
  if (fd_ >= 0) {
    unregister_inheritable_fd(fd_);
    ::close(fd_);
  }
  addr_ = nullptr;
  fd_ = -1;
  size_ = 0;
}

// --- inheritable fds ----------------------------------------------------

namespace {

struct fd_registry {
  std::mutex mu;
  std::vector<int> fds;
};

fd_registry& registry() {
  static auto* r = new fd_registry; // never destroyed
  return *r;
}

thread_local fd_collector* current_collector = nullptr;

} // namespace

void register_inheritable_fd(int fd) {
  auto& r = registry();
  std::lock_guard lk(r.mu);
  r.fds.insert(std::upper_bound(r.fds.begin(), r.fds.end(), fd), fd);
}

void unregister_inheritable_fd(int fd) noexcept {
  auto& r = registry();
  std::lock_guard lk(r.mu);
  auto it = std::lower_bound(r.fds.begin(), r.fds.end(), fd);
  if (it != r.fds.end() && *it == fd)
    r.fds.erase(it);
}

std::vector<int> inheritable_fds() {
  auto& r = registry();
  std::lock_guard lk(r.mu);
  return r.fds;
}

fd_collector::fd_collector() noexcept : outer_(current_collector) {
  current_collector = this;
}

fd_collector::~fd_collector() {
  current_collector = outer_;
}

void fd_collector::collect(int fd) {
  if (current_collector != nullptr)
    current_collector->fds_.push_back(fd);
}

// --- crash points -------------------------------------------------------

namespace {

std::atomic<int> armed_point{-1};
std::atomic<long> armed_countdown{0};

[[maybe_unused]] const bool armed_from_env = [] {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): static initialization
  if (const char* spec = std::getenv("PACTOR_CRASH_AT")) {
    char* end = nullptr;
    long n = std::strtol(spec, &end, 10);
    long k
      = (end != nullptr && *end == ':') ? std::strtol(end + 1, nullptr, 10) : 1;
    crash_point_arm(static_cast<int>(n), k);
  }
  return true;
}();

} // namespace

void crash_point_arm(int n, long countdown) noexcept {
  armed_countdown.store(countdown, std::memory_order_relaxed);
  armed_point.store(n, std::memory_order_relaxed);
}

void crash_point_hit(int n) noexcept {
  if (armed_point.load(std::memory_order_relaxed) != n)
    return;
  if (armed_countdown.fetch_sub(1, std::memory_order_relaxed) == 1)
    ::kill(::getpid(), SIGKILL);
}

} // namespace pactor::detail
