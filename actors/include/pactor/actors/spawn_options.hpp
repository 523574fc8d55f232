// How an actor is started: its name, its mailbox's bounds, and what a send
// to a full mailbox does.

#pragma once

#include <pactor/serialization/adaptors.hpp>

#include <msgpack.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace pactor {

/// What a send does when the receiver's mailbox is full.
enum class overflow : std::uint8_t {
  block,       ///< wait up to send_timeout, then throw queue_full
  fail,        ///< throw queue_full at once
  drop_newest, ///< drop the message being sent (kept as a dead letter)
};

struct spawn_options {
  /// The process name (shown by ps); empty: "actor-<id>".
  std::string name{};
  /// Bytes of messages the mailbox holds (larger messages travel in side
  /// blocks, docs/queues.md).
  std::size_t mailbox_bytes = std::size_t{1} << 20;
  /// Most messages the mailbox holds; 0: bounded by bytes only.
  std::size_t mailbox_messages = 0;
  overflow on_full = overflow::block;
  /// block: how long a send waits for room.
  std::chrono::milliseconds send_timeout{10000};
  /// How long the actor spins on its empty mailbox before it sleeps;
  /// negative: the system's actor_system_options::spin.
  std::chrono::nanoseconds spin{-1};
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
  MSGPACK_DEFINE(name, mailbox_bytes, mailbox_messages, on_full,
                 send_timeout_ms, spin_ns)
};
/// What a sender needs to know about a mailbox.
struct send_policy {
  overflow on_full = overflow::block;
  std::int64_t send_timeout_ms = 10000;
  MSGPACK_DEFINE(on_full, send_timeout_ms)
};
} // namespace detail

} // namespace pactor
