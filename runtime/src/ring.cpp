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
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace pactor::detail {

namespace {

constexpr std::uint64_t ring_magic = 0x676e6972726f7470ULL; // "ptorring"
constexpr std::uint32_t ring_version = 3;
constexpr std::size_t header_bytes = 4096;
constexpr int max_spinner_slots = 8;
constexpr int spin_backoff_max = 8;
constexpr int max_poller_slots = 16;

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
constexpr std::uint32_t kind_side = 3; // payload: side_ref; bytes in a memfd
constexpr std::uint32_t sleepers = 0x80000000U;

// The ring record of a side block, and the datagram that carries its memfd.
struct side_ref {
  std::uint64_t id;
  std::uint64_t size;
};

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

// The Dekker fence between a commit (store) and the sleepers check (load),
// right after a robust mutex unlock. glibc unlocks a robust mutex with an
// atomic exchange, on x86 a locked instruction, which already orders every
// earlier store before every later load: the fence would only repeat it.
// Elsewhere (and under ThreadSanitizer, which models fences) it is kept.
inline void fence_after_unlock() noexcept {
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__SANITIZE_THREAD__)
  std::atomic_signal_fence(std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
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

  // Side blocks: the next id (under put_mu); the socket inodes, so that
  // attach() can tell that the three fds belong together.
  alignas(64) std::uint64_t side_next;
  std::uint64_t tx_ino;
  std::uint64_t rx_ino;
  // wait() callers counted on this ring (putters signal them), and their
  // pids (one slot each while slots last), so that the count of a poller
  // killed inside wait() can be taken back.
  std::atomic<std::uint32_t> pollers;
  std::atomic<std::int32_t> poller_pids[max_poller_slots];
  // Mailbox: (sequence of the record last handed out << 32) | deliveries.
  alignas(64) std::atomic<std::uint64_t> delivery;
  // Mailbox: the consuming process, (start time mod 2^32 << 32) | pid.
  std::atomic<std::uint64_t> consumer;
  // Mailbox: the 64-bit number (records acknowledged before it) of a record
  // at or before the head, within a quarter of the sequence space of it: a
  // record's number is this plus its sequence's distance from it.
  std::atomic<std::uint64_t> count_base;
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

// The socketpair of a ring, owned by its handles in this process.
struct ring_sockets {
  int tx = -1; // side blocks are sent here; wait() notices arrive here
  int rx = -1; // side blocks arrive here; wait() notices are sent here
  ring_sockets() = default;
  ring_sockets(const ring_sockets&) = delete;
  ring_sockets& operator=(const ring_sockets&) = delete;
  ~ring_sockets() {
    for (int fd : {tx, rx})
      if (fd >= 0) {
        unregister_inheritable_fd(fd);
        ::close(fd);
      }
  }
};

namespace {

std::uint64_t inode_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

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
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw_errno("socketpair for a queue");
  r.socks_ = std::make_shared<ring_sockets>();
  r.socks_->tx = sv[0];
  r.socks_->rx = sv[1];
  register_inheritable_fd(sv[0]);
  register_inheritable_fd(sv[1]);
  auto* h = new (r.seg_->data()) ring_header{};
  h->tx_ino = inode_of(sv[0]);
  h->rx_ino = inode_of(sv[1]);
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

ring ring::attach(const ring_fds& fds) {
  int fd = fds[0];
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
  if (fds[1] < 0 || fds[2] < 0 || inode_of(fds[1]) != h->tx_ino
      || inode_of(fds[2]) != h->rx_ino)
    throw std::invalid_argument(
      "pactor: fds " + std::to_string(fds[1]) + " and " + std::to_string(fds[2])
      + " are not the sockets of the queue in fd " + std::to_string(fd));
  r.socks_ = std::make_shared<ring_sockets>();
  r.socks_->tx = ::fcntl(fds[1], F_DUPFD_CLOEXEC, 3);
  r.socks_->rx = ::fcntl(fds[2], F_DUPFD_CLOEXEC, 3);
  if (r.socks_->tx < 0 || r.socks_->rx < 0)
    throw_errno("dup of a queue socket");
  register_inheritable_fd(r.socks_->tx);
  register_inheritable_fd(r.socks_->rx);
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

ring_fds ring::fds() const noexcept {
  return {seg_->fd(), socks_->tx, socks_->rx};
}

int ring::poll_fd() const noexcept {
  return socks_->tx;
}

int ring::add_poller() const noexcept {
  auto me = static_cast<std::int32_t>(cached_pid());
  // Take back the counts of pollers that died inside wait().
  for (auto& slot : h_->poller_pids) {
    auto pid = slot.load(std::memory_order_acquire);
    if (pid != 0 && pid != me && ::kill(pid, 0) != 0 && errno == ESRCH
        && slot.compare_exchange_strong(pid, 0))
      h_->pollers.fetch_sub(1, std::memory_order_seq_cst);
  }
  h_->pollers.fetch_add(1, std::memory_order_seq_cst);
  for (int i = 0; i < max_poller_slots; ++i) {
    std::int32_t expected = 0;
    if (h_->poller_pids[i].compare_exchange_strong(expected, me))
      return i;
  }
  return -1; // counted without a slot
}

void ring::remove_poller(int slot) const noexcept {
  if (slot >= 0)
    h_->poller_pids[slot].store(0, std::memory_order_release);
  h_->pollers.fetch_sub(1, std::memory_order_seq_cst);
}

std::uint32_t ring::poller_count() const noexcept {
  return h_->pollers.load(std::memory_order_acquire);
}

void ring::arm_poller() const noexcept {
  announce_sleeper(&h_->not_empty);
}

void ring::drain_poller() const noexcept {
  char buf[64];
  while (::recv(socks_->tx, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
}

void ring::signal_pollers() const noexcept {
  char c = 'w';
  [[maybe_unused]] auto n
    = ::send(socks_->rx, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// After a commit (and a seq_cst fence): wakes sleeping getters, and signals
// wait() callers, only if one announced itself (bit 31 of not_empty).
void ring::wake_readers() noexcept {
  if ((h_->not_empty.load(std::memory_order_relaxed) & sleepers) == 0)
    return;
  wake_sleepers(&h_->not_empty);
  if (h_->pollers.load(std::memory_order_seq_cst) != 0)
    signal_pollers();
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
  if (size > max_record())
    size = sizeof(side_ref); // the ring holds only its reference
  return h_->capacity - used < record_bytes(size);
}

void ring::close() noexcept {
  h_->closed.store(1, std::memory_order_seq_cst);
  for (auto* w : {&h_->not_empty, &h_->not_full}) {
    w->fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(w);
  }
  if (h_->pollers.load(std::memory_order_seq_cst) != 0)
    signal_pollers();
}

void ring::reopen() noexcept {
  h_->closed.store(0, std::memory_order_seq_cst);
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
  // Looks at the shared word with a growing pause between looks (up to
  // spin_backoff_max pauses): each look pulls the line from the writer, so
  // fewer looks let the writer publish several records per transfer.
  for (int i = 0, backoff = 1;; ++i) {
    if (ready()) {
      hit = true;
      break;
    }
    for (int k = 0; k < backoff; ++k)
      cpu_relax();
    backoff = std::min(backoff * 2, spin_backoff_max);
    if ((i & 63) == 63 && steady::now() >= until)
      break;
  }
  h->spinners[slot].store(0, std::memory_order_release);
  // Adapt: spin the full limit after a hit, half as long after a miss.
  spin_ns = hit ? spin_max_ns : std::max<std::int64_t>(spin_ns / 2, 1000);
  return hit;
}

bool ring::readable() const noexcept {
  auto t = pos_of(h_->tail.load(std::memory_order_acquire));
  auto h = pos_of(h_->head.load(std::memory_order_acquire));
  if (t == h)
    return false;
  // Padding alone is not a message: look past it (without the lock, so the
  // header may be stale; then the answer is "readable", and a get decides).
  const auto cap = h_->capacity;
  auto idx = h & (cap - 1);
  const auto* hdr = reinterpret_cast<const record_header*>(data_ + idx);
  if (hdr->kind != kind_padding)
    return true;
  auto next = (h + record_bytes(hdr->size)) & pos_mask;
  return next != t;
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
  if (size <= max_record())
    return put_record(size, kind_message, write, limit, -1);
  // Larger than the ring: the bytes go to a memfd of their own (written
  // outside any lock); the ring carries a side_ref, the socket the memfd.
  unique_fd block(::memfd_create("pactor-block", MFD_CLOEXEC));
  if (!block)
    throw_errno("memfd_create for a large record");
  if (::ftruncate(block.get(), static_cast<off_t>(size)) != 0)
    throw_errno("ftruncate of a large record");
  void* p
    = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, block.get(), 0);
  if (p == MAP_FAILED)
    throw_errno("mmap of a large record");
  try {
    write(static_cast<std::byte*>(p));
  } catch (...) {
    ::munmap(p, size);
    throw;
  }
  ::munmap(p, size);
  side_ref ref{0, size};
  auto write_ref = [&](std::byte* dst) { std::memcpy(dst, &ref, sizeof ref); };
  return put_record(sizeof ref, kind_side, write_ref, limit, block.get());
}

namespace {

void check_record(std::uint32_t kind, std::size_t size, std::size_t room) {
  bool ok = size <= room
            && (kind == kind_message || kind == kind_padding
                || (kind == kind_side && size == sizeof(side_ref)));
  if (!ok)
    throw std::runtime_error("pactor: queue memory is corrupted (record "
                             "header out of range)");
}

// The first message record from head word `head` up to tail `tail`: the
// padding before it is consumed (head stored past it, one store each, as a
// get commits); nullptr if there is none. Updates `head`.
const record_header* first_message(ring_header* r, std::byte* data,
                                   std::uint64_t& head, std::uint64_t tail,
                                   bool store = true) {
  const auto cap = r->capacity;
  while (pos_of(head) != pos_of(tail)) {
    auto idx = pos_of(head) & (cap - 1);
    const auto* hdr = reinterpret_cast<const record_header*>(data + idx);
    check_record(hdr->kind, hdr->size, cap - idx - sizeof(record_header));
    if (hdr->kind != kind_padding)
      return hdr;
    head = make_word(pos_of(head) + record_bytes(hdr->size), seq_of(head));
    if (store) // (a mailbox reading past held records skips it in place)
      r->head.store(head, std::memory_order_release);
  }
  return nullptr;
}

// Receives the datagram at the front of `sock` (peeking leaves it there),
// with its fd. Returns false if there is none.
bool recv_side(int sock, side_ref& ref, unique_fd& fd, int flags) {
  std::vector<unique_fd> fds;
  auto n = recv_with_fds(sock, {reinterpret_cast<std::byte*>(&ref), sizeof ref},
                         fds, flags | MSG_DONTWAIT);
  if (n == -EAGAIN)
    return false;
  if (n < 0 && n != -EMSGSIZE)
    throw_errno(static_cast<int>(-n), "recvmsg of a large record");
  if (n != static_cast<ssize_t>(sizeof ref) || fds.empty())
    throw std::runtime_error("pactor: queue socket holds a malformed large "
                             "record");
  fd = std::move(fds.front()); // any others close with `fds`
  return true;
}

} // namespace

// Hands the side block that `rec` (a side_ref) names to `read`. Datagrams of
// older ids are orphans of putters killed before their commit (or of getters
// killed before dequeuing): they are dropped.
void ring::read_side(std::span<const std::byte> rec,
                     fn_ref<void(std::span<const std::byte>)> read) {
  side_ref want{};
  std::memcpy(&want, rec.data(), sizeof want);
  for (;;) {
    side_ref got{};
    unique_fd block;
    if (!recv_side(socks_->rx, got, block, MSG_PEEK))
      // (the words help to find out how: docs/design/queue.md, Known gaps)
      throw std::runtime_error(
        "pactor: the large record " + std::to_string(want.id)
        + " is missing from the queue socket (next id "
        + std::to_string(h_->side_next) + ", head seq "
        + std::to_string(seq_of(h_->head.load(std::memory_order_relaxed)))
        + ", tail seq "
        + std::to_string(seq_of(h_->tail.load(std::memory_order_relaxed)))
        + ", " + std::to_string(dropped_orphans_) + " orphans dropped here)");
    if (got.id < want.id) {
      ++dropped_orphans_;
      unique_fd orphan;
      recv_side(socks_->rx, got, orphan, 0);
      continue;
    }
    if (got.id != want.id || got.size != want.size)
      throw std::runtime_error("pactor: the queue socket holds large record "
                               + std::to_string(got.id) + " where "
                               + std::to_string(want.id) + " was expected");
    auto size = static_cast<std::size_t>(want.size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, block.get(), 0);
    if (p == MAP_FAILED)
      throw_errno("mmap of a large record");
    try {
      read({static_cast<const std::byte*>(p), size});
    } catch (...) {
      ::munmap(p, size);
      throw;
    }
    ::munmap(p, size);
    return;
  }
}

// After the head commit: removes the datagram of `rec` from the socket.
void ring::dequeue_side(std::span<const std::byte> rec) noexcept {
  side_ref want{};
  std::memcpy(&want, rec.data(), sizeof want);
  try {
    side_ref got{};
    unique_fd block;
    while (recv_side(socks_->rx, got, block, MSG_PEEK) && got.id <= want.id) {
      unique_fd taken;
      recv_side(socks_->rx, got, taken, 0);
      block.reset();
    }
  } catch (...) { // a malformed datagram: the next read_side reports it
  }
}

// Sends side block `id` (`size` bytes in memfd `block`) on the socket, while
// holding put_mu. Waits for socket space until the limit; false on timeout.
bool ring::send_side(std::uint64_t id, std::size_t size, int block,
                     wait_limit& limit) {
  side_ref ref{id, size};
  msghdr msg{};
  iovec iov{&ref, sizeof ref};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  auto* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &block, sizeof(int));
  for (;;) {
    if (::sendmsg(socks_->tx, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
      return true;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN)
      throw_errno("sendmsg of a large record");
    if (limit.none_allowed())
      return false;
    std::int64_t ms = -1;
    if (const auto& d = limit.deadline()) {
      ms = std::chrono::ceil<std::chrono::milliseconds>(*d - steady::now())
             .count();
      if (ms <= 0)
        return false;
    }
    pollfd pfd{socks_->tx, POLLOUT, 0};
    if (::poll(
          &pfd, 1,
          static_cast<int>(std::min<std::int64_t>(ms < 0 ? 1000 : ms, 1000)))
          < 0
        && errno != EINTR)
      throw_errno("poll on a queue socket");
  }
}

ring_status ring::put_record(std::size_t size, std::uint32_t kind,
                             fn_ref<void(std::byte*)> write, wait_limit& limit,
                             int block) {
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
      hdr->kind = kind;
      write(data_ + idx + sizeof(record_header)); // may throw: not published
      if (block >= 0) {
        // The id is taken before the send, so a putter killed after it
        // never lets a later record reuse it (getters drop orphans).
        side_ref ref{};
        std::memcpy(&ref, data_ + idx + sizeof(record_header), sizeof ref);
        ref.id = h_->side_next;
        h_->side_next = ref.id + 1;
        std::memcpy(data_ + idx + sizeof(record_header), &ref, sizeof ref);
        if (!send_side(ref.id, ref.size, block, limit))
          return ring_status::timeout;
        PACTOR_CRASH_POINT(crash_side_before_commit);
      }
      PACTOR_CRASH_POINT(crash_put_before_commit);
      h_->tail.store(make_word(pos_of(t) + pad + need, seq_of(t) + 1),
                     std::memory_order_release);
      PACTOR_CRASH_POINT(crash_put_after_commit);
      break;
    }
    guard.unlock();
    if (!wait) {
      fence_after_unlock();
      wake_readers();
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
    if (const auto* hdr = first_message(h_, data_, h, t)) {
      auto idx = pos_of(h) & (cap - 1);
      auto size = std::size_t{hdr->size};
      auto next = make_word(pos_of(h) + record_bytes(size), seq_of(h) + 1);
      std::uint64_t gets = 0;
      if (slot != nullptr) { // joinable: announce the get before its commit
        gets = slot->gets_word.load(std::memory_order_relaxed) >> 1;
        slot->pending_old = h;
        slot->pending_new = next;
        slot->gets_word.store((gets << 1) | pending_bit,
                              std::memory_order_release);
      }
      const std::span<const std::byte> rec{data_ + idx + sizeof(record_header),
                                           size};
      const bool side = hdr->kind == kind_side;
      try {
        if (side)
          read_side(rec, read);
        else
          read(rec);
      } catch (...) {
        h_->head.store(next, std::memory_order_release); // consumed anyway
        if (side)
          dequeue_side(rec);
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
      if (side) {
        PACTOR_CRASH_POINT(crash_side_after_commit);
        dequeue_side(rec);
      }
      if (slot != nullptr)
        slot->gets_word.store((gets + 1) << 1, std::memory_order_release);
      guard.unlock();
      fence_after_unlock();
      wake_sleepers(&h_->not_full);
      return ring_status::ok;
    }
    guard.unlock();
    if (auto st = await_message(h != h0, t, limit); st != ring_status::ok)
      return st;
  }
}

// After a look found no message (get, peek): wakes putters if padding was
// consumed, then says closed, or waits for the tail to move from `t`
// (ok: look again) or times out.
ring_status ring::await_message(bool consumed_padding, std::uint64_t t,
                                wait_limit& limit) {
  if (consumed_padding) { // putters may wait for that room
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wake_sleepers(&h_->not_full);
  }
  if (h_->closed.load(std::memory_order_acquire) != 0)
    return ring_status::closed;
  if (!wait_for_change(h_->tail, t, h_->not_empty, limit))
    return ring_status::timeout;
  return ring_status::ok;
}

// --- mailbox: single consumer, read in place, ack after handling ---------

// Makes this process the mailbox's one consumer, unless another live process
// is: a consumer's claim passes on when it exits.
void ring::claim_consumer() {
  auto me = cached_pid();
  auto mine
    = (my_start_time() & 0xffffffffU) << 32 | static_cast<std::uint32_t>(me);
  auto cur = h_->consumer.load(std::memory_order_acquire);
  for (;;) {
    if (cur == mine)
      break;
    if (cur != 0) {
      auto pid = static_cast<std::int32_t>(cur & 0xffffffffU);
      bool gone = (::kill(pid, 0) != 0 && errno == ESRCH)
                  || (process_start_time(pid) & 0xffffffffU) != (cur >> 32);
      if (!gone)
        throw std::logic_error(
          "pactor::mailbox: process " + std::to_string(pid)
          + " is receiving from this mailbox (one consumer at a time)");
    }
    if (h_->consumer.compare_exchange_weak(cur, mine,
                                           std::memory_order_acq_rel))
      break;
  }
  consumer_pid_ = me;
}

ring_status
ring::peek(fn_ref<void(std::span<const std::byte>, std::uint32_t)> read,
           wait_limit limit) {
  if (peeked_)
    throw unacknowledged();
  if (consumer_pid_ != cached_pid())
    claim_consumer();
  const auto cap = h_->capacity;
  for (;;) {
    // Past the held records, if any: they stay until the next ack().
    auto h = held_ ? read_ : h_->head.load(std::memory_order_relaxed);
    auto t = h_->tail.load(std::memory_order_acquire);
    const auto h0 = h;
    if (const auto* hdr = first_message(h_, data_, h, t, !held_)) {
      auto idx = pos_of(h) & (cap - 1);
      auto size = std::size_t{hdr->size};
      auto seq = seq_of(h);
      std::uint32_t count = 1;
      // Count the delivery before handing the record out: a consumer killed
      // after this store makes the next one see a redelivery. A record
      // before the one last counted was handed out before, held unacked
      // when its consumer died: at least its second delivery (the count of
      // the newer record is kept, so that a record that kills every
      // consumer is still found).
      auto prev = h_->delivery.load(std::memory_order_relaxed);
      auto prev_seq = prev >> 32;
      auto prev_count = static_cast<std::uint32_t>(prev & 0xffffffffU);
      auto behind = (prev_seq - seq) & seq_mask;
      if (prev_seq == seq && prev_count != 0) {
        count = prev_count + 1;
        h_->delivery.store((seq << 32) | count, std::memory_order_release);
      } else if (prev_count != 0 && behind != 0 && behind < seq_mask / 4) {
        count = 2;
      } else {
        h_->delivery.store((seq << 32) | count, std::memory_order_release);
      }
      const std::span<const std::byte> rec{data_ + idx + sizeof(record_header),
                                           size};
      peeked_next_ = make_word(pos_of(h) + record_bytes(size), seq + 1);
      peeked_number_ = number_of(seq);
      peeked_side_ = hdr->kind == kind_side;
      if (peeked_side_) {
        side_ref ref{};
        std::memcpy(&ref, rec.data(), sizeof ref);
        peeked_side_id_ = ref.id;
        auto with_count
          = [&](std::span<const std::byte> bytes) { read(bytes, count); };
        peeked_ = true;
        read_side(rec, with_count);
      } else {
        peeked_ = true;
        read(rec, count);
      }
      PACTOR_CRASH_POINT(crash_peek_delivered);
      return ring_status::ok;
    }
    if (auto st = await_message(h != h0, t, limit); st != ring_status::ok)
      return st;
  }
}

std::uint64_t ring::number_of(std::uint64_t seq) const noexcept {
  auto base = h_->count_base.load(std::memory_order_relaxed);
  return base + ((seq - base) & seq_mask);
}

// Stores the head word, and moves the count base along once it falls a
// quarter of the sequence space behind (a kill between the two stores
// leaves the old base, still valid).
void ring::store_head(std::uint64_t word) noexcept {
  h_->head.store(word, std::memory_order_release);
  auto base = h_->count_base.load(std::memory_order_relaxed);
  auto ahead = (seq_of(word) - base) & seq_mask;
  if (ahead >= seq_mask / 4)
    h_->count_base.store(base + ahead, std::memory_order_relaxed);
}

void ring::hold() {
  if (!peeked_)
    throw std::logic_error("pactor::mailbox::hold: no message to hold");
  if (peeked_side_)
    throw std::logic_error("pactor::mailbox::hold: a large record (side "
                           "block) must be acknowledged, not held");
  read_ = peeked_next_;
  held_ = true;
  peeked_ = false;
}

std::uint64_t ring::ack_word() const noexcept {
  if (peeked_)
    return peeked_next_;
  if (held_)
    return read_;
  return h_->head.load(std::memory_order_relaxed);
}

void ring::ack() {
  if (!peeked_ && !held_)
    throw std::logic_error("pactor::mailbox::ack: no message to acknowledge");
  store_head(ack_word());
  peeked_ = false;
  held_ = false;
  PACTOR_CRASH_POINT(crash_ack_after_commit);
  if (peeked_side_) {
    peeked_side_ = false;
    side_ref ref{peeked_side_id_, 0};
    dequeue_side({reinterpret_cast<const std::byte*>(&ref), sizeof ref});
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_sleepers(&h_->not_full);
}

bool ring::ack_to(std::uint64_t word) {
  if (peeked_ || held_)
    throw std::logic_error("pactor::mailbox::ack_to: messages are held");
  if (consumer_pid_ != cached_pid())
    claim_consumer();
  auto h = h_->head.load(std::memory_order_acquire);
  auto t = h_->tail.load(std::memory_order_acquire);
  // Only forward, and not past the tail: a word from this mailbox's past.
  auto ahead = (seq_of(word) - seq_of(h)) & seq_mask;
  auto room = (seq_of(t) - seq_of(h)) & seq_mask;
  auto span = (pos_of(word) - pos_of(h)) & pos_mask;
  if (ahead == 0 || ahead > room || span > ((pos_of(t) - pos_of(h)) & pos_mask))
    return false;
  store_head(word);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wake_sleepers(&h_->not_full);
  return true;
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
