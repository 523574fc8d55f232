// The crash-proof shared-memory ring under queue<T> (and later the mailbox).
// Protocol and crash analysis: docs/design/queue.md.

#pragma once

#include <pactor/runtime/detail/sync.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

namespace pactor::detail {

struct ring_header;
struct ring_sockets;

/// A non-owning reference to a callable (valid during the call only).
template <class Sig>
class fn_ref;

template <class R, class... A>
class fn_ref<R(A...)> {
public:
  template <class F>
  fn_ref(F& f) noexcept // NOLINT(google-explicit-constructor)
      : obj_(&f), call_([](void* o, A... a) -> R {
          return (*static_cast<F*>(o))(std::forward<A>(a)...);
        }) {
  }
  R operator()(A... a) const {
    return call_(obj_, std::forward<A>(a)...);
  }

private:
  void* obj_;
  R (*call_)(void*, A...);
};

enum class ring_status : std::uint8_t { ok, timeout, closed };

struct ring_options {
  /// Data bytes (rounded up to a power of two, at least 4 KiB, at most 1 GiB).
  std::size_t capacity = std::size_t{1} << 20;
  /// Most records at once; 0 = bounded by bytes only.
  std::size_t max_count = 0;
  /// Track gets and task_done per consumer process (joinable_queue).
  bool joinable = false;
};

/// Thrown by join() when consumer processes died holding tasks they had
/// taken and not marked done: those tasks are lost (counted as done, so that
/// later joins can finish).
class tasks_lost : public std::runtime_error {
public:
  tasks_lost(int pid, std::uint64_t count)
      : std::runtime_error("pactor::tasks_lost: process " + std::to_string(pid)
                           + " died holding " + std::to_string(count)
                           + " unfinished task(s)"),
        pid_(pid), count_(count) {
  }
  /// Returns the dead process's pid (the first one found).
  [[nodiscard]] int pid() const noexcept {
    return pid_;
  }
  /// Returns how many tasks were lost in this call.
  [[nodiscard]] std::uint64_t count() const noexcept {
    return count_;
  }

private:
  int pid_;
  std::uint64_t count_;
};

/// Crash points in the ring (for torture tests).
enum ring_crash_point : int {
  crash_put_locked = 101,         // holding the put lock, nothing written
  crash_put_before_commit = 102,  // record written, tail not published
  crash_put_after_commit = 103,   // published, lock still held
  crash_get_locked = 111,         // holding the get lock
  crash_get_before_commit = 112,  // record read, head not advanced
  crash_get_after_commit = 113,   // head advanced, lock still held
  crash_peek_delivered = 121,     // mailbox: record handed out, not acked
  crash_ack_after_commit = 122,   // mailbox: head advanced, side block kept
  crash_side_before_commit = 131, // side block sent, record not published
  crash_side_after_commit = 132,  // get: head advanced, side block queued
};

/// Thrown by ring::peek when the previous record was not acknowledged.
class unacknowledged : public std::logic_error {
public:
  unacknowledged()
      : std::logic_error("pactor::mailbox: receive before ack() of the "
                         "previous message") {
  }
};

/// The fds of a ring: its memfd segment and the two ends of its socketpair
/// (side blocks travel from [1] to [2], wait() notices from [2] to [1]).
using ring_fds = std::array<int, 3>;

/// A multi-producer multi-consumer ring of variable-length byte records in
/// a memfd segment. Handles share the segment (copies are cheap).
class ring {
public:
  /// Creates a new ring.
  static ring create(const ring_options& opts);
  /// Maps the ring behind `fds` (duplicated). Throws std::invalid_argument
  /// if they do not hold one pactor ring.
  static ring attach(const ring_fds& fds);

  /// Appends a record of `size` bytes that `write` fills in place. Blocks
  /// while full, until `deadline`. If `write` throws, nothing is published.
  /// A record larger than the ring goes to a side block (its own memfd).
  ring_status put(std::size_t size, fn_ref<void(std::byte*)> write,
                  wait_limit limit);

  /// Takes the oldest record and hands it to `read` in place; the record is
  /// consumed once `read` returns or throws. Blocks while empty.
  ring_status get(fn_ref<void(std::span<const std::byte>)> read,
                  wait_limit limit);

  /// Mailbox (one consumer process at a time: the first peek claims the
  /// mailbox; std::logic_error while another live process holds it; the
  /// claim passes on when it exits): hands the oldest record to `read` in place
  /// with its delivery count (1, or more when an earlier consumer received
  /// it and died before ack()), and keeps it until ack(). Blocks while
  /// empty. Throws unacknowledged if the previous record was not acked.
  ring_status peek(fn_ref<void(std::span<const std::byte>, std::uint32_t)> read,
                   wait_limit limit);
  /// Mailbox: consumes the record the last peek handed out, and the held
  /// ones before it. Throws std::logic_error if there is none.
  void ack();
  /// Mailbox: keeps the record the last peek handed out (and those held
  /// before it) until the next ack(); the next peek reads past it. A
  /// consumer that dies holding records leaves them all for the next, each
  /// counted as a redelivery. A large record (side block) cannot be held
  /// (std::logic_error): ack it.
  void hold();
  /// Mailbox: whether the record the last peek handed out is a large one
  /// (a side block), which must be acked rather than held.
  [[nodiscard]] bool peeked_large() const noexcept {
    return peeked_ && peeked_side_;
  }
  /// Mailbox: whether a record is handed out or held (ack() has work).
  [[nodiscard]] bool holding() const noexcept {
    return peeked_ || held_;
  }
  /// Mailbox: the head word ack() would store now (the actors' state stash
  /// records it with the state).
  [[nodiscard]] std::uint64_t ack_word() const noexcept;
  /// Mailbox: acknowledges every record before head word `word` (one that
  /// ack_word() gave an earlier consumer) if it is ahead of the head and not
  /// past the tail; returns whether it moved. Only with nothing peeked or
  /// held.
  bool ack_to(std::uint64_t word);
  /// Mailbox: the number of the record the last peek handed out (how many
  /// records were acknowledged before it), the same for every delivery of
  /// it: its identity in the mailbox's stream.
  [[nodiscard]] std::uint64_t peeked_number() const noexcept {
    return peeked_number_;
  }

  /// Returns the number of records (exact at the instant it is read).
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept;
  [[nodiscard]] std::size_t max_count() const noexcept;
  /// Returns the largest record payload that fits.
  [[nodiscard]] std::size_t max_record() const noexcept;
  /// Returns whether a record of `size` bytes would have to wait.
  [[nodiscard]] bool full(std::size_t size = 0) const noexcept;

  /// Refuses further puts; getters drain, then see `closed`.
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept;
  /// Accepts puts again after close() (a restarted actor's mailbox).
  void reopen() noexcept;

  /// joinable only: marks one task taken by this process as done. Throws
  /// std::logic_error if this process has no unfinished task.
  void task_done();
  /// joinable only: waits until every task put was marked done; returns
  /// false on timeout; throws tasks_lost when it finds consumers that died
  /// holding tasks.
  bool join(wait_limit limit);
  /// joinable only: tasks lost to dead consumers so far.
  [[nodiscard]] std::uint64_t lost_tasks() const noexcept;

  /// Sets how long a waiting get or put spins before sleeping (0 = never).
  void spin(std::chrono::nanoseconds limit) noexcept;

  [[nodiscard]] int fd() const noexcept {
    return seg_->fd();
  }
  /// Returns the fds that attach() needs.
  [[nodiscard]] ring_fds fds() const noexcept;

  // --- wait(): readiness through a pollable fd ---------------------------
  /// The fd that becomes readable when a poller should look again.
  [[nodiscard]] int poll_fd() const noexcept;
  /// Counts this caller as a poller (once per wait() call); returns the
  /// slot to give back to remove_poller. The counts of pollers killed
  /// inside wait() are taken back here.
  int add_poller() const noexcept;
  void remove_poller(int slot) const noexcept;
  /// wait() callers counted now (tests).
  [[nodiscard]] std::uint32_t poller_count() const noexcept;
  /// Asks putters to signal poll_fd() on their next commit.
  void arm_poller() const noexcept;
  /// Empties poll_fd() (non-blocking).
  void drain_poller() const noexcept;
  /// Makes poll_fd() readable for the other pollers.
  void signal_pollers() const noexcept;
  /// Returns whether the ring tracks tasks (joinable_queue).
  [[nodiscard]] bool is_joinable() const noexcept;

  /// Returns whether a get would find a record now (no lock taken).
  [[nodiscard]] bool readable() const noexcept;
  /// Returns whether a record of `size` bytes would fit now.
  [[nodiscard]] bool writable(std::size_t size) const noexcept {
    return !full(size);
  }
  /// Spins (bounded, adaptive, within the spinner limit) until readable()
  /// or writable(size) holds, as `for_write` asks; returns whether it does.
  bool spin_until_ready(bool for_write, std::size_t size);

private:
  ring() = default;
  struct joinable_section* joinable() const noexcept;
  int consumer_slot();
  void repair_pending() noexcept;
  std::uint64_t unfinished_locked() const noexcept;
  void retire_dead(int& lost_pid, std::uint64_t& lost_count);
  bool wait_for_change(std::atomic<std::uint64_t>& word, std::uint64_t seen,
                       std::atomic<std::uint32_t>& futex_word,
                       wait_limit& limit);
  void wake_readers() noexcept;
  ring_status await_message(bool consumed_padding, std::uint64_t t,
                            wait_limit& limit);
  ring_status put_record(std::size_t size, std::uint32_t kind,
                         fn_ref<void(std::byte*)> write, wait_limit& limit,
                         int block);
  bool send_side(std::uint64_t id, std::size_t size, int block,
                 wait_limit& limit);
  void read_side(std::span<const std::byte> ref,
                 fn_ref<void(std::span<const std::byte>)> read);
  void dequeue_side(std::span<const std::byte> ref) noexcept;
  void claim_consumer();
  std::uint64_t number_of(std::uint64_t seq) const noexcept;
  void store_head(std::uint64_t word) noexcept;

  std::shared_ptr<segment> seg_;
  std::shared_ptr<ring_sockets> socks_;
  ring_header* h_ = nullptr;
  std::byte* data_ = nullptr;
  std::int64_t spin_max_ns_ = 50000;
  std::int64_t spin_ns_ = 50000; // adaptive, per process and handle
  unsigned liveness_checks_ = 0;
  int slot_ = -1;               // this process's consumer slot (joinable)
  pid_t slot_pid_ = 0;          // the pid that claimed slot_ (fork changes it)
  std::uint64_t lost_seen_ = 0; // lost tasks this handle has reported
  std::uint64_t peeked_next_ = 0; // mailbox: head after the peeked record
  bool peeked_ = false;           // mailbox: a record awaits ack()
  pid_t consumer_pid_ = 0;        // mailbox: this process holds the claim
  bool peeked_side_ = false;
  std::uint64_t peeked_side_id_ = 0;
  std::uint64_t peeked_number_ = 0;
  std::uint64_t read_ = 0; // mailbox: where the next peek reads when held_
  bool held_ = false;      // mailbox: records held (handled, not acked)
  std::uint64_t dropped_orphans_ = 0; // side datagrams dropped (diagnostics)
};

} // namespace pactor::detail
