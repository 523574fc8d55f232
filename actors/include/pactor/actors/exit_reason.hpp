// Exit reasons, and the down and exit messages that carry them.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/serialization/adaptors.hpp>

#include <msgpack.hpp>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace pactor {

/// Why an actor's process ended.
enum class exit_kind : std::uint8_t {
  normal,    ///< it stopped itself (stop(), or its behaviour ended)
  shutdown,  ///< asked to stop (actor_system shutdown, stop(ref))
  exception, ///< an exception escaped a handler of a tell (type, message)
  exit_code, ///< the process exited with `code` without saying why
  signal,    ///< killed by signal `code` (core_dumped tells a core dump)
  killed,    ///< killed by the node (kill(ref), or a shutdown timeout)
  linked,    ///< killed because linked actor `other` died (reason in message)
  unknown,   ///< ended so long ago that its reason is no longer kept
  /// killed by the kernel for memory (code = SIGKILL): it hit its memory
  /// cap (spawn_options::memory_limit), or the system's OOM killer chose it
  /// (seen as a rise of /proc/vmstat oom_kill at its SIGKILL: best effort)
  out_of_memory,
};

/// Who ended and why.
struct exit_reason {
  exit_kind kind = exit_kind::normal;
  int code = 0;             ///< exit code or signal number
  bool core_dumped = false; ///< signal: a core was dumped
  std::string type;         ///< exception: its type name
  std::string message;      ///< exception: what(); linked: the other's reason
  std::uint64_t other = 0;  ///< linked: the id of the actor that died first
  std::uint32_t incarnation = 0; ///< which start of the actor ended (1, 2...)

  /// normal or shutdown: links do not propagate these.
  [[nodiscard]] bool is_normal() const noexcept {
    return kind == exit_kind::normal || kind == exit_kind::shutdown;
  }
  /// "normal", "exception std::runtime_error: boom", "signal 11 (core
  /// dumped)", "killed", ...
  [[nodiscard]] std::string to_string() const;
  friend std::ostream& operator<<(std::ostream& os, const exit_reason& r) {
    return os << r.to_string();
  }
  MSGPACK_DEFINE(kind, code, core_dumped, type, message, other, incarnation)
};

/// Sent by the node to each monitor of an actor that ended (once per
/// incarnation).
struct down {
  actor_ref who;
  exit_reason reason;
  MSGPACK_DEFINE(who, reason)
};

/// A message nobody could handle, kept by the node for inspection
/// (actor_system::take_dead_letters).
struct dead_letter {
  actor_ref to;               ///< whose mailbox it was in
  actor_ref from;             ///< its sender (nobody if none)
  std::uint64_t type = 0;     ///< its type tag
  std::uint32_t delivery = 0; ///< its delivery count when it was given up
                              ///< (poison: max_deliveries + 1)
  std::string why; ///< "poison message ...", "no handler", "does not decode"
  std::vector<std::byte> payload; ///< the encoded message (may be empty)
  MSGPACK_DEFINE(to, from, type, delivery, why, payload)
};

/// Sent by the node to an actor that traps exits when a linked actor ended.
struct exit_msg {
  actor_ref from;
  exit_reason reason;
  MSGPACK_DEFINE(from, reason)
};

} // namespace pactor
