// The crash-proof ring. Every commit is one release store of a position word;
// see docs/design/queue.md for the protocol and the crash analysis.

#include <pactor/runtime/detail/ring.hpp>

#include "internal.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstring>
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

ring ring::create(const ring_options& opts) {
  auto cap = std::bit_ceil(std::max<std::size_t>(opts.capacity, 4096));
  if (cap > (std::size_t{1} << 30))
    throw std::invalid_argument("pactor: queue capacity over 1 GiB");
  if (opts.max_count >= (std::size_t{1} << 28))
    throw std::invalid_argument("pactor: queue max count over 2^28");
  ring r;
  r.seg_ = std::make_shared<segment>(
    segment::create(header_bytes + cap, "pactor-queue"));
  auto* h = new (r.seg_->data()) ring_header{};
  h->version = ring_version;
  h->capacity = cap;
  h->max_count = opts.max_count;
  robust_mutex_init(&h->put_mu);
  robust_mutex_init(&h->get_mu);
  std::atomic_thread_fence(std::memory_order_release);
  h->magic = ring_magic;
  r.h_ = h;
  r.data_ = static_cast<std::byte*>(r.seg_->data()) + header_bytes;
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
      || h->capacity + header_bytes != r.seg_->size())
    throw std::invalid_argument("pactor: fd " + std::to_string(fd)
                                + " is not a pactor queue of this version");
  r.h_ = h;
  r.data_ = static_cast<std::byte*>(r.seg_->data()) + header_bytes;
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
    if (h->spinners[i].compare_exchange_strong(expected, me))
      slot = i;
    else if (expected != me && (++liveness_checks & 63) == 0
             && ::kill(expected, 0) != 0 && errno == ESRCH
             && h->spinners[i].compare_exchange_strong(expected, me))
      slot = i; // a dead spinner's slot (checked now and then)
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
  for (;;) {
    if (!robust_mutex_lock(&h_->get_mu, limit))
      return ring_status::timeout;
    robust_guard guard(&h_->get_mu);
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
      try {
        read({data_ + idx + sizeof(record_header), size});
      } catch (...) {
        h_->head.store(next, std::memory_order_release); // consumed anyway
        guard.unlock();
        std::atomic_thread_fence(std::memory_order_seq_cst);
        wake_sleepers(&h_->not_full);
        throw;
      }
      PACTOR_CRASH_POINT(crash_get_before_commit);
      h_->head.store(next, std::memory_order_release);
      PACTOR_CRASH_POINT(crash_get_after_commit);
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

} // namespace pactor::detail
