// Semaphores and events: a counter or flag plus a futex word with a sleepers
// bit, so release and set make a system call only when someone sleeps.

#include <pactor/runtime/semaphore.hpp>

#include "internal.hpp"

#include <stdexcept>
#include <string>

namespace pactor {

namespace detail {

namespace {
constexpr std::uint64_t semaphore_magic = 0x6d65737274636170ULL; // "pactrsem"
constexpr std::uint64_t event_magic = 0x7476657274636170ULL;     // "pactrevt"

template <class State>
State* checked_state(segment& seg, std::uint64_t magic, const char* what) {
  auto* s = static_cast<State*>(seg.data());
  if (seg.size() < sizeof(State) || s->magic != magic)
    throw std::invalid_argument(std::string("pactor: the fd is not a pactor ")
                                + what);
  return s;
}
} // namespace

struct semaphore_state {
  std::uint64_t magic;
  std::uint32_t max; // 0 = unbounded
  alignas(64) std::atomic<std::uint32_t> count;
  alignas(64) std::atomic<std::uint32_t> wake;
};

struct event_state {
  std::uint64_t magic;
  alignas(64) std::atomic<std::uint32_t> flag;
  alignas(64) std::atomic<std::uint32_t> wake;
};

} // namespace detail

semaphore::semaphore(std::uint32_t initial, bool bounded)
    : seg_(std::make_shared<detail::segment>(
      detail::segment::create(4096, "pactor-semaphore"))) {
  s_ = new (seg_->data()) detail::semaphore_state{};
  s_->max = bounded ? initial : 0;
  s_->count.store(initial);
  s_->magic = detail::semaphore_magic;
}

semaphore::semaphore(std::shared_ptr<detail::segment> seg)
    : seg_(std::move(seg)) {
  s_ = detail::checked_state<detail::semaphore_state>(
    *seg_, detail::semaphore_magic, "semaphore");
}

semaphore semaphore::attach(int fd) {
  return semaphore(
    std::make_shared<detail::segment>(detail::segment::attach(fd)));
}

bool semaphore::acquire_until(detail::wait_limit limit) {
  for (;;) {
    auto c = s_->count.load(std::memory_order_acquire);
    while (c > 0) {
      if (s_->count.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel))
        return true;
    }
    if (limit.none_allowed())
      return false;
    auto expect = detail::announce_sleeper(&s_->wake);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (s_->count.load(std::memory_order_acquire) > 0)
      continue;
    if (!detail::futex_wait(&s_->wake, expect, limit.deadline()))
      return try_acquire();
  }
}

void semaphore::release(std::uint32_t n) {
  auto c = s_->count.load(std::memory_order_relaxed);
  do {
    if (s_->max != 0 && c + n > s_->max)
      throw std::logic_error("pactor::semaphore::release: a bounded "
                             "semaphore released too many times");
  } while (
    !s_->count.compare_exchange_weak(c, c + n, std::memory_order_acq_rel));
  std::atomic_thread_fence(std::memory_order_seq_cst);
  detail::wake_sleepers(&s_->wake);
}

std::uint32_t semaphore::value() const noexcept {
  return s_->count.load(std::memory_order_acquire);
}

event::event()
    : seg_(std::make_shared<detail::segment>(
      detail::segment::create(4096, "pactor-event"))) {
  s_ = new (seg_->data()) detail::event_state{};
  s_->magic = detail::event_magic;
}

event::event(std::shared_ptr<detail::segment> seg) : seg_(std::move(seg)) {
  s_ = detail::checked_state<detail::event_state>(*seg_, detail::event_magic,
                                                  "event");
}

event event::attach(int fd) {
  return event(std::make_shared<detail::segment>(detail::segment::attach(fd)));
}

void event::set() noexcept {
  s_->flag.store(1, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  detail::wake_sleepers(&s_->wake);
}

void event::clear() noexcept {
  s_->flag.store(0, std::memory_order_release);
}

bool event::is_set() const noexcept {
  return s_->flag.load(std::memory_order_acquire) != 0;
}

bool event::wait_until(detail::wait_limit limit) {
  for (;;) {
    if (is_set())
      return true;
    if (limit.none_allowed())
      return false;
    auto expect = detail::announce_sleeper(&s_->wake);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (is_set())
      return true;
    if (!detail::futex_wait(&s_->wake, expect, limit.deadline()))
      return is_set();
  }
}

} // namespace pactor
