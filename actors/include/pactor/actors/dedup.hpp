// Telling repeats apart: the origin of a message, and a filter that keeps
// the first copy of each. Delivery is at least once; a message redelivered
// to an actor that sent messages while handling it makes it send them
// again, tagged with the same origin (docs/warm_restart.md).

#pragma once

#include <pactor/actors/actor_ref.hpp>

#include <msgpack.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>

namespace pactor {

/// Where a message came from: the actor that sent it, the message it was
/// handling then (its number in that actor's mailbox: the same on every
/// redelivery), and which of the messages sent while handling it this is
/// (from 1).
struct message_origin {
  actor_ref from;
  std::uint64_t message = 0;
  std::uint32_t index = 0;
  friend bool operator==(const message_origin&, const message_origin&)
    = default;
  MSGPACK_DEFINE(from, message, index)
};

namespace this_actor {
/// The origin of the message being handled; nullopt for a message sent
/// from outside a handler (the program, on_start, timers) or by the node.
std::optional<message_origin> origin();
} // namespace this_actor

/// Keeps, per sending actor, the newest origin seen, and says whether a
/// message is new. An actor handles its mailbox in order and a redelivery
/// replays it in order, so a repeat is never newer than what was seen
/// (for a sender that sends the same messages when it handles a message
/// again). Part of a warm actor's state, it is committed with the message
/// that it accepted: then each message is taken exactly once.
class dedup {
public:
  /// Whether a message with origin `o` is new (and notes it); a message
  /// with no origin always is.
  bool first_time(const std::optional<message_origin>& o) {
    if (!o)
      return true;
    auto key = std::make_pair(o->message, o->index);
    auto [it, fresh] = last_.try_emplace(o->from.id(), key);
    if (fresh)
      return true;
    if (key <= it->second)
      return false;
    it->second = key;
    return true;
  }
  /// The same for the message being handled (this_actor::origin()).
  bool first_time() {
    return first_time(this_actor::origin());
  }
  /// Senders tracked.
  [[nodiscard]] std::size_t senders() const noexcept {
    return last_.size();
  }
  MSGPACK_DEFINE(last_)

private:
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint32_t>> last_;
};

} // namespace pactor
