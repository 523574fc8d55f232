// How an actor is started: its name, its mailbox's bounds, and what a send
// to a full mailbox does.

#pragma once

#include <pactor/serialization/adaptors.hpp>

#include <msgpack.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pactor {

/// What a send does when the receiver's mailbox is full.
enum class overflow : std::uint8_t {
  block,       ///< wait up to send_timeout, then throw queue_full
  fail,        ///< throw queue_full at once
  drop_newest, ///< drop the message being sent (kept as a dead letter)
  /// keep only the newest `mailbox_messages` waiting: the actor drops
  /// older ones (dead letters; a request gets remote_error
  /// "pactor::message_dropped") as it takes them. Senders never wait; if
  /// the mailbox's bytes are full, the message sent is dropped instead.
  drop_oldest,
};

/// How the next incarnation of a restarted actor begins.
enum class restart_mode : std::uint8_t {
  /// From its constructor (Erlang's and CAF's restart).
  cold,
  /// From its constructor, then the state it last committed with an
  /// acknowledgement (`warm_state()`, docs/warm_restart.md): exactly the
  /// state after the last message it acknowledged.
  warm,
};

/// What a warm restart does with a committed state that does not decode
/// (the state type changed, or its decoding throws).
enum class bad_state : std::uint8_t {
  /// Start cold (the constructor's state), with a dead letter recording it.
  cold_start,
  /// Do not start: the incarnation ends with reason exception
  /// ("pactor::stash_error").
  fail,
};

/// A resource limit set in the actor's process before it starts
/// (setrlimit: resource is RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_CPU, ...).
struct resource_limit {
  int resource = 0;
  std::uint64_t soft = 0;
  std::uint64_t hard = 0;
  MSGPACK_DEFINE(resource, soft, hard)
};

struct spawn_options {
  /// The process name (shown by ps); empty: "actor-<id>".
  std::string name{};
  /// Bytes of messages the mailbox holds (larger messages travel in side
  /// blocks, docs/queues.md).
  std::size_t mailbox_bytes = std::size_t{1} << 20;
  /// Most messages the mailbox holds; 0: bounded by bytes only. With
  /// overflow::drop_oldest (where it must be set): how many waiting
  /// messages the actor keeps.
  std::size_t mailbox_messages = 0;
  overflow on_full = overflow::block;
  /// block: how long a send waits for room.
  std::chrono::milliseconds send_timeout{10000};
  /// How long the actor spins on its empty mailbox before it sleeps;
  /// negative: the system's actor_system_options::spin.
  std::chrono::nanoseconds spin{-1};
  /// cold or warm restart (warm: the actor class has `warm_state()`).
  restart_mode restart = restart_mode::cold;
  /// warm: the most bytes the encoded state may take (a state that grows
  /// past it ends the incarnation with "pactor::state_too_large").
  std::size_t state_bytes = std::size_t{64} << 10;
  /// warm: commit the state with every N-th message (1: every message). The
  /// messages in between stay unacknowledged until the commit (a crash
  /// redelivers them all); a batch also ends when the mailbox is empty, at
  /// a large message and at a stop.
  std::uint32_t commit_every = 1;
  /// warm: a committed state that does not decode.
  bad_state on_bad_state = bad_state::cold_start;
  /// Keep the mailbox open when the actor ends, so that messages sent
  /// meanwhile wait for its restart instead of failing with actor_exited
  /// (supervised children that will be restarted).
  bool keep_mailbox_open = false;
  /// Resource limits set in each incarnation's process before it starts.
  std::vector<resource_limit> limits{};
  /// CPUs the actor may run on (sched_setaffinity); empty: any.
  std::vector<int> cpus{};
  /// A memory cap in bytes (0: none) through a cgroup of its own (cgroup v1
  /// memory controller, or v2 with memory enabled); an incarnation that
  /// exceeds it is killed by the kernel (its exit reason says "out of
  /// memory"). Where the host offers no writable memory cgroup the actor
  /// does not start (exit reason pactor::resource_limit, saying why).
  std::uint64_t memory_limit = 0;
};

namespace detail {
/// spawn_options as they travel to the node.
struct spawn_wire {
  std::string name{};
  std::uint64_t mailbox_bytes = 0;
  std::uint64_t mailbox_messages = 0;
  overflow on_full = overflow::block;
  std::int64_t send_timeout_ms = 0;
  std::int64_t spin_ns = -1;
  restart_mode restart = restart_mode::cold;
  std::uint64_t state_bytes = 0;
  std::uint32_t commit_every = 1;
  bad_state on_bad_state = bad_state::cold_start;
  bool keep_mailbox_open = false;
  std::vector<resource_limit> limits{};
  std::vector<int> cpus{};
  std::uint64_t memory_limit = 0;
  MSGPACK_DEFINE(name, mailbox_bytes, mailbox_messages, on_full,
                 send_timeout_ms, spin_ns, restart, state_bytes, commit_every,
                 on_bad_state, keep_mailbox_open, limits, cpus, memory_limit)
};
/// spawn_options as they travel (validated: std::invalid_argument naming
/// the field).
spawn_wire to_wire(const spawn_options& opts);
/// What a sender needs to know about a mailbox.
struct send_policy {
  overflow on_full = overflow::block;
  std::int64_t send_timeout_ms = 10000;
  MSGPACK_DEFINE(on_full, send_timeout_ms)
};
} // namespace detail

} // namespace pactor
