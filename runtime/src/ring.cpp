// The crash-proof ring. Every commit is one release store of a position word;
// see docs/design/queue.md for the protocol and the crash analysis.

#include <pactor/runtime/detail/ring.hpp>

#include "internal.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>

namespace pactor::detail {

namespace {

constexpr std::uint64_t ring_magic = 0x676e6972726f7470ULL; // "ptorring"
constexpr std::uint32_t ring_version = 1;
constexpr std::size_t header_bytes = 4096;
constexpr int max_spinner_slots = 8;

// Position words: (sequence << 36) | (byte position mod 2^36).
constexpr int pos_bits = 36;
constexpr std::uint64_t pos_mask = (std::uint64_t{1} << pos_bits) - 1;
constexpr std::uint64_t seq_mask = (std::uint64_t{1} << (64 - pos_bits)) - 1;

constexpr std::uint64_t pos_of(std::uint64_t w) noexcept {
  return w & pos_mask;
}
constexpr std::uint64_t seq_of(std::uint64_t w) noexcept {
  return w >> pos_bits;
}
constexpr std::uint64_t make_word(std::uint64_t pos, std::uint64_t seq) {
  return ((seq & seq_mask) << pos_bits) | (pos & pos_mask);
}

constexpr std::uint32_t kind_message = 1;
constexpr std::uint32_t kind_padding = 2;

struct record_header {
  std::uint32_t size;
  std::uint32_t kind;
};

constexpr std::size_t record_bytes(std::size_t payload) noexcept {
  return (sizeof(record_header) + payload + 7) & ~std::size_t{7};
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int spinner_limit() {
  static const int limit = [] {
    auto n = static_cast<int>(std::thread::hardware_concurrency());
    return std::clamp(n - 1, 1, max_spinner_slots);
  }();
  return limit;
}

} // namespace

struct ring_header {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  std::uint64_t capacity;
  std::uint64_t max_count;
  std::uint32_t data_offset; // header bytes before the data area
  std::uint32_t is_joinable;
  std::atomic<std::uint32_t> closed;

  alignas(64) pthread_mutex_t put_mu;
  // The put side's view of head: written under put_mu, read also by a
  // waiting putter after it unlocked (hence atomic, relaxed).
  std::atomic<std::uint64_t> head_cache;
  alignas(64) std::atomic<std::uint64_t> tail;

  alignas(64) pthread_mutex_t get_mu;
  alignas(64) std::atomic<std::uint64_t> head;

  alignas(64) std::atomic<std::uint32_t> not_empty;
  alignas(64) std::atomic<std::uint32_t> not_full;
  alignas(64) std::atomic<std::int32_t> spinners[max_spinner_slots];
};
static_assert(sizeof(ring_header) <= header_bytes);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

constexpr int consumer_slots = 128;
constexpr std::uint64_t pending_bit = 1;

// One consumer process's accounting in a joinable ring. `gets` is stored as
// gets << 1 | pending: a get sets pending (with the head words before and
// after it) before its head commit, and stores gets + 1 without pending after
// it, so the next get_mu holder can repair a get cut short by a kill.
struct alignas(64) consumer_slot_t {
  std::atomic<std::int32_t> pid;
  std::atomic<std::uint64_t> start_time; // of pid, against pid reuse
  std::atomic<std::uint64_t> gets_word;
  std::atomic<std::uint64_t> dones;
  std::uint64_t pending_old; // head word before the pending get
  std::uint64_t pending_new; // head word after it
};

struct joinable_section {
  pthread_mutex_t reg_mu;             // slot retirement and join's sums
  std::atomic<std::uint64_t> retired; // gets of retired slots
  std::atomic<std::uint64_t> lost;    // tasks lost to dead consumers
  std::atomic<std::int32_t> last_lost_pid;
  alignas(64) std::atomic<std::uint32_t> join_wake;
  consumer_slot_t slots[consumer_slots];
};

namespace {

constexpr std::size_t joinable_bytes
  = (sizeof(joinable_section) + 4095) / 4096 * 4096;

std::uint64_t my_start_time() {
  static std::atomic<pid_t> for_pid{0};
  static std::atomic<std::uint64_t> value{0};
  auto me = cached_pid();
  if (for_pid.load() != me) {
    value.store(process_start_time(me));
    for_pid.store(me);
  }
  return value.load();
}

} // namespace

ring ring::create(const ring_options& opts) {
  auto cap = std::bit_ceil(std::max<std::size_t>(opts.capacity, 4096));
  if (cap > (std::size_t{1} << 30))
    throw std::invalid_argument("pactor: queue capacity over 1 GiB");
  if (opts.max_count >= (std::size_t{1} << 28))
    throw std::invalid_argument("pactor: queue max count over 2^28");
  ring r;
  auto offset = header_bytes + (opts.joinable ? joinable_bytes : 0);
  r.seg_
    = std::make_shared<segment>(segment::create(offset + cap, "pactor-queue"));
  auto* h = new (r.seg_->data()) ring_header{};
  h->version = ring_version;
  h->capacity = cap;
  h->max_count = opts.max_count;
  h->data_offset = static_cast<std::uint32_t>(offset);
  h->is_joinable = opts.joinable ? 1 : 0;
  robust_mutex_init(&h->put_mu);
  robust_mutex_init(&h->get_mu);
  if (opts.joinable) {
    auto* j = new (static_cast<std::byte*>(r.seg_->data()) + header_bytes)
      joinable_section{};
    robust_mutex_init(&j->reg_mu);
  }
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = ring_magic;
  r.h_ = h;
  r.data_ = static_cast<std::byte*>(r.seg_->data()) + offset;
  return r;
}

ring ring::attach(int fd) {
  ring r;
  r.seg_ = std::make_shared<segment>(segment::attach(fd));
  if (r.seg_->size() < header_bytes + 4096)
    throw std::invalid_argument("pactor: fd " + std::to_string(fd)
                                + " is not a pactor queue (too small)");
  auto* h = static_cast<ring_header*>(r.seg_->data());
  if (h->magic != ring_magic || h->version != ring_version
      || h->data_offset < header_bytes
      || h->capacity + h->data_offset != r.seg_->size())
    throw std::invalid_argument("pactor: fd " + std::to_string(fd)
                                + " is not a pactor queue of this version");
  r.h_ = h;
  r.data_ = static_cast<std::byte*>(r.seg_->data()) + h->data_offset;
  r.lost_seen_ = r.lost_tasks(); // a new handle reports only new losses
  return r;
}

std::size_t ring::capacity() const noexcept {
  return h_->capacity;
}

std::size_t ring::max_count() const noexcept {
  return h_->max_count;
}

std::size_t ring::max_record() const noexcept {
  return h_->capacity - sizeof(record_header);
}

std::size_t ring::size() const noexcept {
  auto t = h_->tail.load(std::memory_order_acquire);
  auto h = h_->head.load(std::memory_order_acquire);
  return static_cast<std::size_t>((seq_of(t) - seq_of(h)) & seq_mask);
}

bool ring::full(std::size_t size) const noexcept {
  auto t = h_->tail.load(std::memory_order_acquire);
  auto h = h_->head.load(std::memory_order_acquire);
  auto used = (pos_of(t) - pos_of(h)) & pos_mask;
  auto count = (seq_of(t) - seq_of(h)) & seq_mask;
  if (h_->max_count != 0 && count >= h_->max_count)
    return true;
  return h_->capacity - used < record_bytes(size);
}

void ring::close() noexcept {
  h_->closed.store(1, std::memory_order_seq_cst);
  for (auto* w : {&h_->not_empty, &h_->not_full}) {
    w->fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(w);
  }
}

bool ring::closed() const noexcept {
  return h_->closed.load(std::memory_order_acquire) != 0;
}

void ring::spin(std::chrono::nanoseconds limit) noexcept {
  spin_max_ns_ = std::max<std::int64_t>(0, limit.count());
  spin_ns_ = spin_max_ns_;
}

// Spins until `ready()` (bounded, adaptive; only if a spinner slot is free:
// never more spinners than CPUs to spare). Returns whether it became ready.
template <class Ready>
static bool spin_phase(ring_header* h, std::int64_t& spin_ns,
                       std::int64_t spin_max_ns, unsigned& liveness_checks,
                       const deadline_t& deadline, Ready ready) {
  if (spin_ns <= 0)
    return false;
  auto me = static_cast<std::int32_t>(cached_pid());
  int slot = -1;
  for (int i = 0; i < spinner_limit() && slot < 0; ++i) {
    std::int32_t expected = 0;
    bool free_slot = h->spinners[i].compare_exchange_strong(expected, me);
    // A dead spinner's slot is reclaimed (its liveness checked now and then).
    bool dead_owner = !free_slot && expected != me
                      && (++liveness_checks & 63) == 0
                      && ::kill(expected, 0) != 0 && errno == ESRCH
                      && h->spinners[i].compare_exchange_strong(expected, me);
    if (free_slot || dead_owner)
      slot = i;
  }
  if (slot < 0)
    return false;
  auto until = steady::now() + std::chrono::nanoseconds(spin_ns);
  if (deadline)
    until = std::min(until, *deadline);
  bool hit = false;
  for (int i = 0;; ++i) {
    if (ready()) {
      hit = true;
      break;
    }
    cpu_relax();
    if ((i & 63) == 63 && steady::now() >= until)
      break;
  }
  h->spinners[slot].store(0, std::memory_order_release);
  // Adapt: spin the full limit after a hit, half as long after a miss.
  spin_ns = hit ? spin_max_ns : std::max<std::int64_t>(spin_ns / 2, 1000);
  return hit;
}

bool ring::readable() const noexcept {
  return pos_of(h_->tail.load(std::memory_order_acquire))
         != pos_of(h_->head.load(std::memory_order_acquire));
}

bool ring::spin_until_ready(bool for_write, std::size_t size) {
  return spin_phase(h_, spin_ns_, spin_max_ns_, liveness_checks_, std::nullopt,
                    [&] { return for_write ? writable(size) : readable(); });
}

// Waits until `word` differs from `seen` (or the ring closes): first a
// bounded spin, then futex sleeps.
bool ring::wait_for_change(std::atomic<std::uint64_t>& word, std::uint64_t seen,
                           std::atomic<std::uint32_t>& futex_word,
                           wait_limit& limit) {
  auto changed = [&] {
    return word.load(std::memory_order_acquire) != seen
           || h_->closed.load(std::memory_order_acquire) != 0;
  };
  if (limit.none_allowed())
    return changed();
  const auto& deadline = limit.deadline();
  if (spin_phase(h_, spin_ns_, spin_max_ns_, liveness_checks_, deadline,
                 changed))
    return true;
  for (;;) {
    auto expect = announce_sleeper(&futex_word);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (changed())
      return true;
    if (!futex_wait(&futex_word, expect, deadline))
      return changed();
    if (changed())
      return true;
  }
}

ring_status ring::put(std::size_t size, fn_ref<void(std::byte*)> write,
                      wait_limit limit) {
  if (size > max_record())
    throw std::length_error(
      "pactor: a record of " + std::to_string(size)
      + " bytes does not fit in a queue of " + std::to_string(h_->capacity)
      + " bytes (create the queue with a larger capacity)");
  const auto cap = h_->capacity;
  const auto need = record_bytes(size);
  for (;;) {
    if (h_->closed.load(std::memory_order_acquire) != 0)
      return ring_status::closed;
    if (!robust_mutex_lock(&h_->put_mu, limit))
      return ring_status::timeout;
    robust_guard guard(&h_->put_mu);
    PACTOR_CRASH_POINT(crash_put_locked);
    auto t = h_->tail.load(std::memory_order_relaxed);
    bool wait = false;
    for (;;) {
      auto idx = pos_of(t) & (cap - 1);
      auto to_end = cap - idx;
      auto pad = to_end < need ? to_end : 0;
      auto cached = h_->head_cache.load(std::memory_order_relaxed);
      auto used = (pos_of(t) - pos_of(cached)) & pos_mask;
      auto count = (seq_of(t) - seq_of(cached)) & seq_mask;
      bool count_ok = h_->max_count == 0 || count < h_->max_count;
      if (cap - used < pad + need || !count_ok) {
        auto fresh = h_->head.load(std::memory_order_acquire);
        if (fresh != cached) {
          h_->head_cache.store(fresh, std::memory_order_relaxed);
          continue;
        }
        if (pad != 0 && cap - used >= pad) {
          // Publish the padding alone; the record follows at the start.
          auto* hdr = reinterpret_cast<record_header*>(data_ + idx);
          hdr->size = static_cast<std::uint32_t>(pad - sizeof(record_header));
          hdr->kind = kind_padding;
          t = make_word(pos_of(t) + pad, seq_of(t));
          h_->tail.store(t, std::memory_order_release);
          continue;
        }
        wait = true;
        break;
      }
      if (pad != 0) {
        auto* hdr = reinterpret_cast<record_header*>(data_ + idx);
        hdr->size = static_cast<std::uint32_t>(pad - sizeof(record_header));
        hdr->kind = kind_padding;
        idx = 0;
      }
      auto* hdr = reinterpret_cast<record_header*>(data_ + idx);
      hdr->size = static_cast<std::uint32_t>(size);
      hdr->kind = kind_message;
      write(data_ + idx + sizeof(record_header)); // may throw: not published
      PACTOR_CRASH_POINT(crash_put_before_commit);
      h_->tail.store(make_word(pos_of(t) + pad + need, seq_of(t) + 1),
                     std::memory_order_release);
      PACTOR_CRASH_POINT(crash_put_after_commit);
      break;
    }
    guard.unlock();
    if (!wait) {
      std::atomic_thread_fence(std::memory_order_seq_cst);
      wake_sleepers(&h_->not_empty);
      return ring_status::ok;
    }
    // Full: wait (without the lock) until a getter moves head.
    auto seen = h_->head.load(std::memory_order_acquire);
    if (seen != h_->head_cache.load(std::memory_order_relaxed))
      continue;
    if (!wait_for_change(h_->head, seen, h_->not_full, limit))
      return ring_status::timeout;
  }
}

ring_status ring::get(fn_ref<void(std::span<const std::byte>)> read,
                      wait_limit limit) {
  const auto cap = h_->capacity;
  consumer_slot_t* slot
    = h_->is_joinable != 0 ? &joinable()->slots[consumer_slot()] : nullptr;
  for (;;) {
    bool owner_died = false;
    if (!robust_mutex_lock(&h_->get_mu, limit, 100, &owner_died))
      return ring_status::timeout;
    robust_guard guard(&h_->get_mu);
    if (owner_died)
      repair_pending();
    PACTOR_CRASH_POINT(crash_get_locked);
    auto h = h_->head.load(std::memory_order_relaxed);
    const auto h0 = h;
    auto t = h_->tail.load(std::memory_order_acquire);
    while (pos_of(h) != pos_of(t)) {
      auto idx = pos_of(h) & (cap - 1);
      auto* hdr = reinterpret_cast<const record_header*>(data_ + idx);
      auto size = std::size_t{hdr->size};
      if (size > cap - idx - sizeof(record_header)
          || (hdr->kind != kind_message && hdr->kind != kind_padding))
        throw std::runtime_error("pactor: queue memory is corrupted (record "
                                 "header out of range)");
      if (hdr->kind == kind_padding) {
        h = make_word(pos_of(h) + record_bytes(size), seq_of(h));
        h_->head.store(h, std::memory_order_release);
        continue;
      }
      auto next = make_word(pos_of(h) + record_bytes(size), seq_of(h) + 1);
      std::uint64_t gets = 0;
      if (slot != nullptr) { // joinable: announce the get before its commit
        gets = slot->gets_word.load(std::memory_order_relaxed) >> 1;
        slot->pending_old = h;
        slot->pending_new = next;
        slot->gets_word.store((gets << 1) | pending_bit,
                              std::memory_order_release);
      }
      try {
        read({data_ + idx + sizeof(record_header), size});
      } catch (...) {
        h_->head.store(next, std::memory_order_release); // consumed anyway
        if (slot != nullptr) { // nobody can work on it: it counts as done
          slot->gets_word.store((gets + 1) << 1, std::memory_order_release);
          slot->dones.fetch_add(1, std::memory_order_acq_rel);
        }
        guard.unlock();
        std::atomic_thread_fence(std::memory_order_seq_cst);
        wake_sleepers(&h_->not_full);
        if (slot != nullptr)
          wake_sleepers(&joinable()->join_wake);
        throw;
      }
      PACTOR_CRASH_POINT(crash_get_before_commit);
      h_->head.store(next, std::memory_order_release);
      PACTOR_CRASH_POINT(crash_get_after_commit);
      if (slot != nullptr)
        slot->gets_word.store((gets + 1) << 1, std::memory_order_release);
      guard.unlock();
      std::atomic_thread_fence(std::memory_order_seq_cst);
      wake_sleepers(&h_->not_full);
      return ring_status::ok;
    }
    guard.unlock();
    if (h != h0) { // only padding was consumed: putters may wait for it
      std::atomic_thread_fence(std::memory_order_seq_cst);
      wake_sleepers(&h_->not_full);
    }
    if (h_->closed.load(std::memory_order_acquire) != 0)
      return ring_status::closed;
    if (!wait_for_change(h_->tail, t, h_->not_empty, limit))
      return ring_status::timeout;
  }
}

// --- joinable rings ------------------------------------------------------

joinable_section* ring::joinable() const noexcept {
  return reinterpret_cast<joinable_section*>(reinterpret_cast<std::byte*>(h_)
                                             + header_bytes);
}

// Called by a get_mu holder that took the mutex over from a dead owner: a
// get it cut short either committed (head == pending_new) or did not.
void ring::repair_pending() noexcept {
  if (h_->is_joinable == 0)
    return;
  auto head = h_->head.load(std::memory_order_acquire);
  for (auto& sl : joinable()->slots) {
    auto w = sl.gets_word.load(std::memory_order_acquire);
    if ((w & pending_bit) == 0)
      continue;
    auto gets = w >> 1;
    sl.gets_word.store((head == sl.pending_new ? gets + 1 : gets) << 1,
                       std::memory_order_release);
  }
}

int ring::consumer_slot() {
  auto me = static_cast<std::int32_t>(cached_pid());
  if (slot_ >= 0 && slot_pid_ == me)
    return slot_;
  auto* j = joinable();
  auto start = my_start_time();
  for (int i = 0; i < consumer_slots; ++i)
    if (j->slots[i].pid.load() == me
        && j->slots[i].start_time.load() == start) {
      slot_ = i;
      slot_pid_ = me;
      return i;
    }
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < consumer_slots; ++i) {
      std::int32_t expected = 0;
      if (j->slots[i].pid.compare_exchange_strong(expected, me)) {
        j->slots[i].start_time.store(start);
        slot_ = i;
        slot_pid_ = me;
        return i;
      }
    }
    int pid = 0;
    std::uint64_t count = 0;
    retire_dead(pid, count); // frees the slots of dead consumers
  }
  throw std::runtime_error("pactor::joinable_queue: more than "
                           + std::to_string(consumer_slots)
                           + " live consumer processes");
}

// Retires the slots of consumer processes that are gone: their unfinished
// tasks are lost (counted in `lost` and as done). Holds reg_mu.
void ring::retire_dead(int& lost_pid, std::uint64_t& lost_count) {
  auto* j = joinable();
  auto forever = wait_limit::forever();
  robust_mutex_lock(&j->reg_mu, forever);
  robust_guard reg(&j->reg_mu);
  bool retired_any = false;
  for (auto& sl : j->slots) {
    auto pid = sl.pid.load(std::memory_order_acquire);
    if (pid == 0 || !process_gone(pid, sl.start_time.load()))
      continue;
    if ((sl.gets_word.load() & pending_bit) != 0) {
      // It died inside a get: taking get_mu over repairs the slot.
      bool died = false;
      auto limit = wait_limit::forever();
      robust_mutex_lock(&h_->get_mu, limit, 100, &died);
      if (died)
        repair_pending();
      robust_mutex_unlock(&h_->get_mu);
    }
    auto gets = sl.gets_word.load() >> 1;
    auto dones = sl.dones.load();
    auto lost = gets > dones ? gets - dones : 0;
    j->retired.fetch_add(gets);
    if (lost > 0) {
      j->lost.fetch_add(lost);
      j->last_lost_pid.store(pid);
      lost_pid = pid;
      lost_count += lost;
    }
    sl.gets_word.store(0);
    sl.dones.store(0);
    sl.start_time.store(0);
    sl.pid.store(0, std::memory_order_release);
    retired_any = true;
  }
  reg.unlock();
  if (retired_any) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wake_sleepers(&j->join_wake);
  }
}

// Puts (the tail's sequence) minus tasks done or lost. Holds reg_mu.
std::uint64_t ring::unfinished_locked() const noexcept {
  auto* j = joinable();
  std::uint64_t done = j->retired.load();
  for (auto& sl : j->slots)
    done += sl.dones.load();
  auto puts = seq_of(h_->tail.load(std::memory_order_acquire));
  return (puts - done) & seq_mask;
}

void ring::task_done() {
  if (h_->is_joinable == 0)
    throw std::logic_error("pactor: task_done on a queue that is not joinable");
  auto& sl = joinable()->slots[consumer_slot()];
  auto dones = sl.dones.load();
  for (;;) {
    auto gets = sl.gets_word.load() >> 1;
    if (dones >= gets)
      throw std::logic_error("pactor::joinable_queue::task_done: called more "
                             "times than this process got items");
    if (sl.dones.compare_exchange_weak(dones, dones + 1))
      break;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_sleepers(&joinable()->join_wake);
}

bool ring::is_joinable() const noexcept {
  return h_->is_joinable != 0;
}

std::uint64_t ring::lost_tasks() const noexcept {
  return h_->is_joinable != 0 ? joinable()->lost.load() : 0;
}

bool ring::join(wait_limit limit) {
  if (h_->is_joinable == 0)
    throw std::logic_error("pactor: join on a queue that is not joinable");
  auto* j = joinable();
  auto unfinished = [&] {
    auto forever = wait_limit::forever();
    robust_mutex_lock(&j->reg_mu, forever);
    auto u = unfinished_locked();
    robust_mutex_unlock(&j->reg_mu);
    return u;
  };
  for (;;) {
    int pid = 0;
    std::uint64_t count = 0;
    retire_dead(pid, count);
    auto lost_now = j->lost.load();
    if (lost_now > lost_seen_) {
      auto delta = lost_now - lost_seen_;
      lost_seen_ = lost_now;
      throw tasks_lost(j->last_lost_pid.load(), delta);
    }
    if (unfinished() == 0)
      return true;
    if (limit.none_allowed())
      return false;
    auto expect = announce_sleeper(&j->join_wake);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (unfinished() == 0)
      return true;
    // Wake at least every 50 ms to look for consumers that died.
    if (!futex_wait(&j->join_wake, expect, limit.deadline(),
                    std::chrono::milliseconds(50)))
      return unfinished() == 0;
  }
}

} // namespace pactor::detail
