// Condition variables and barriers shared between processes.

#include <pactor/runtime/condition.hpp>

#include "internal.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace pactor {

namespace detail {

namespace {
constexpr std::uint64_t condition_magic = 0x646e6f6372746370ULL; // "pctrcond"
constexpr std::uint64_t barrier_magic = 0x7262616272746370ULL;   // "pctrbabr"
constexpr int party_slots = 64;

} // namespace

struct condition_state {
  std::uint64_t magic;
  alignas(64) std::atomic<std::uint32_t> seq;
};

struct party_slot {
  std::atomic<std::int32_t> pid;
  std::atomic<std::uint64_t> start;
  std::atomic<std::uint32_t> arrived; // the generation it last arrived in
};

// The whole barrier state is one futex word, so that every change is one CAS
// and a process killed at any instruction leaves it consistent:
//   bit 0       this round is broken (abort, timeout, a dead party, an
//               action that threw)
//   bit 1       the previous round ended by a reset while parties waited
//   bits 2-17   arrivals in this round
//   bits 18-31  round number (wraps; waiters only compare it)
struct barrier_state {
  std::uint64_t magic;
  std::uint32_t parties;
  alignas(64) std::atomic<std::uint32_t> word;
  party_slot slots[party_slots];
};

} // namespace detail

// --- condition ------------------------------------------------------------

condition::condition(mutex m)
    : seg_(std::make_shared<detail::segment>(
      detail::segment::create(4096, "pactor-condition"))),
      m_(std::move(m)) {
  s_ = new (seg_->data()) detail::condition_state{};
  s_->magic = detail::condition_magic;
}

condition::condition(std::shared_ptr<detail::segment> seg, mutex m)
    : seg_(std::move(seg)), m_(std::move(m)) {
  s_ = static_cast<detail::condition_state*>(seg_->data());
  if (seg_->size() < sizeof(detail::condition_state)
      || s_->magic != detail::condition_magic)
    throw std::invalid_argument("pactor: the fd is not a pactor condition");
}

condition condition::attach(int fd, mutex m) {
  return condition(
    std::make_shared<detail::segment>(detail::segment::attach(fd)),
    std::move(m));
}

condition condition::attach(int) {
  throw std::logic_error("pactor::condition: pass the condition's mutex as "
                         "an argument too and use condition::attach(fd, m)");
}

bool condition::wait_until(detail::wait_limit limit) {
  if (!m_.handle().held_by_caller())
    throw std::logic_error(
      "pactor::condition::wait: the caller does not hold the mutex");
  auto seq = s_->seq.load(std::memory_order_acquire);
  m_.release();
  bool notified = false;
  for (;;) {
    if (s_->seq.load(std::memory_order_acquire) != seq) {
      notified = true;
      break;
    }
    if (limit.none_allowed()
        || !detail::futex_wait(&s_->seq, seq, limit.deadline())) {
      notified = s_->seq.load(std::memory_order_acquire) != seq;
      break;
    }
  }
  m_.acquire();
  return notified;
}

void condition::notify(int n) noexcept {
  s_->seq.fetch_add(1, std::memory_order_acq_rel);
  detail::futex_wake(&s_->seq, n);
}

void condition::notify_all() noexcept {
  s_->seq.fetch_add(1, std::memory_order_acq_rel);
  detail::futex_wake_all(&s_->seq);
}

// --- barrier ------------------------------------------------------------

namespace {

constexpr std::uint32_t broken_bit = 1;
constexpr std::uint32_t reset_bit = 2;
constexpr std::uint32_t count_shift = 2;
constexpr std::uint32_t count_mask = 0xffff;
constexpr std::uint32_t round_shift = 18;

constexpr std::uint32_t round_of(std::uint32_t w) noexcept {
  return w >> round_shift;
}
constexpr std::uint32_t count_of(std::uint32_t w) noexcept {
  return (w >> count_shift) & count_mask;
}
constexpr std::uint32_t next_round(std::uint32_t w) noexcept {
  return ((round_of(w) + 1) << round_shift) & ~(broken_bit | reset_bit);
}

// Breaks round `round` if it is still open. Returns whether this call did.
bool break_round(detail::barrier_state* s, std::uint32_t round) noexcept {
  auto w = s->word.load();
  for (;;) {
    if (round_of(w) != round || (w & broken_bit) != 0)
      return false;
    if (s->word.compare_exchange_weak(w, w | broken_bit)) {
      detail::futex_wake_all(&s->word);
      return true;
    }
  }
}

} // namespace

barrier::barrier(std::uint32_t parties, std::function<void()> action)
    : seg_(std::make_shared<detail::segment>(
      detail::segment::create(8192, "pactor-barrier"))),
      action_(std::move(action)) {
  if (parties == 0 || parties > count_mask)
    throw std::invalid_argument("pactor::barrier: parties must be 1..65535");
  s_ = new (seg_->data()) detail::barrier_state{};
  s_->parties = parties;
  s_->magic = detail::barrier_magic;
}

barrier::barrier(std::shared_ptr<detail::segment> seg) : seg_(std::move(seg)) {
  s_ = static_cast<detail::barrier_state*>(seg_->data());
  if (seg_->size() < sizeof(detail::barrier_state)
      || s_->magic != detail::barrier_magic)
    throw std::invalid_argument("pactor: the fd is not a pactor barrier");
}

barrier barrier::attach(int fd) {
  return barrier(
    std::make_shared<detail::segment>(detail::segment::attach(fd)));
}

std::uint32_t barrier::wait_until(detail::wait_limit limit) {
  auto me = static_cast<std::int32_t>(detail::cached_pid());
  // Register this process as a party (once), so that its death is seen.
  auto start = detail::process_start_time(me);
  detail::party_slot* mine = nullptr;
  for (auto& sl : s_->slots)
    if (sl.pid.load() == me && sl.start.load() == start)
      mine = &sl;
  for (int pass = 0; mine == nullptr && pass < 2; ++pass)
    for (auto& sl : s_->slots) {
      auto pid = sl.pid.load();
      bool free_slot
        = pid == 0 || (pass == 1 && detail::process_gone(pid, sl.start.load()));
      if (free_slot && sl.pid.compare_exchange_strong(pid, me)) {
        sl.start.store(start);
        mine = &sl;
        break;
      }
    }

  // Arrive: one CAS. The last party runs the action first, then trips.
  auto w = s_->word.load();
  std::uint32_t round = 0;
  std::uint32_t index = 0;
  for (;;) {
    if ((w & broken_bit) != 0)
      throw broken_barrier("pactor::broken_barrier: the barrier is broken");
    round = round_of(w);
    if (mine != nullptr)
      mine->arrived.store(round);
    auto count = count_of(w);
    index = s_->parties - 1 - count;
    if (count + 1 == s_->parties) {
      if (action_) {
        try {
          action_();
        } catch (...) {
          break_round(s_, round);
          throw;
        }
      }
      if (s_->word.compare_exchange_strong(w, next_round(w))) {
        detail::futex_wake_all(&s_->word);
        return index;
      }
      continue; // the word changed (abort, reset): look again
    }
    if (s_->word.compare_exchange_weak(w, w + (1U << count_shift)))
      break;
  }

  // Wait for the round to end.
  auto ended = [&](std::uint32_t v) {
    if (round_of(v) != round) {
      // The next round says whether ours ended by a reset.
      if (round_of(v) == ((round + 1) & 0x3fff) && (v & reset_bit) != 0)
        throw broken_barrier("pactor::broken_barrier: the barrier was reset "
                             "while this party waited");
      return true;
    }
    if ((v & broken_bit) != 0)
      throw broken_barrier("pactor::broken_barrier: the barrier was broken "
                           "while this party waited");
    return false;
  };
  for (;;) {
    auto v = s_->word.load(std::memory_order_acquire);
    if (ended(v))
      return index;
    bool in_time = detail::futex_wait(&s_->word, v, limit.deadline(),
                                      std::chrono::milliseconds(50));
    v = s_->word.load(std::memory_order_acquire);
    if (ended(v))
      return index;
    std::int32_t dead = 0;
    for (auto& sl : s_->slots) {
      auto pid = sl.pid.load();
      if (pid != 0 && pid != me && sl.arrived.load() != round
          && detail::process_gone(pid, sl.start.load())) {
        dead = pid;
        break;
      }
    }
    if ((!in_time || dead != 0) && break_round(s_, round))
      throw broken_barrier(
        dead != 0 ? "pactor::broken_barrier: party " + std::to_string(dead)
                      + " died without arriving"
                  : std::string("pactor::broken_barrier: timed out"));
  }
}

void barrier::abort() noexcept {
  break_round(s_, round_of(s_->word.load()));
}

void barrier::reset() {
  auto w = s_->word.load();
  for (;;) {
    auto next = next_round(w);
    if (count_of(w) > 0 && (w & broken_bit) == 0)
      next |= reset_bit; // the current waiters are broken
    if (s_->word.compare_exchange_weak(w, next))
      break;
  }
  detail::futex_wake_all(&s_->word);
}

std::uint32_t barrier::parties() const noexcept {
  return s_->parties;
}

std::uint32_t barrier::n_waiting() const noexcept {
  return count_of(s_->word.load());
}

bool barrier::broken() const noexcept {
  return (s_->word.load() & broken_bit) != 0;
}

} // namespace pactor
