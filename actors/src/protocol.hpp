// The node's control protocol: one SOCK_SEQPACKET packet per request and per
// reply, msgpack-encoded. Internal to the actor layer.

#pragma once

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/exit_reason.hpp>

#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pactor::detail {

enum class rpc_op : std::uint8_t {
  hello,             ///< root: who am I (a = 0) -> a = root id
  spawn,             ///< blob = packed_target, name -> a = id, b = pid
  resolve,           ///< a = id -> fds: mailbox (3), replies (3); b = alive
  monitor,           ///< a = watcher, b = target -> ok (down now if dead)
  demonitor,         ///< a = watcher, b = target
  link,              ///< a, b
  unlink,            ///< a, b
  trap_exit,         ///< a = id, b = 0/1
  reg,               ///< name, a = id -> ok / error if taken
  unreg,             ///< name
  whereis,           ///< name -> a = id (0: none)
  exiting,           ///< a = id, blob = exit_reason (the actor's own report)
  stop,              ///< a = id: ask it to stop (shutdown message)
  kill,              ///< a = id: SIGKILL
  dead_letter,       ///< a = to, b = type, name = why
  shutdown,          ///< stop everything, reply, exit
  stats,             ///< -> a = live actors, b = dead letters
  restart,           ///< a = id: start the next incarnation on the same mailbox
  take_dead_letters, ///< -> blob = vector<dead_letter> (and forgets them)
  pid_of,            ///< a = id -> a = pid (0: not running)
  await_end,         ///< a = id, b = ms -> a = 1, blob = reason once ended
  set_mailbox_open,  ///< a = id, b = 1 keep open across deaths / 0 close
  forget,            ///< a = id (ended): drop its mailbox and record
  open_endpoint,     ///< name -> a = id; fd: a connection of its own
};

struct rpc_request {
  rpc_op op = rpc_op::hello;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::string name;
  std::vector<std::byte> blob;
  std::uint64_t seq = 0; // echoed by the reply: a late reply is told apart
  MSGPACK_DEFINE(op, a, b, name, blob, seq)
};

struct rpc_reply {
  bool ok = true;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::string error;
  std::vector<std::byte> blob;
  std::uint64_t seq = 0;
  MSGPACK_DEFINE(ok, a, b, error, blob, seq)
};

/// The largest request or reply packet (a SEQPACKET datagram must fit the
/// socket buffer); bigger requests are refused at the sender.
/// rpc_reply::b of a refusal about an actor whose record was reclaimed (or
/// forgotten): it has ended; blob = its exit_reason.
inline constexpr std::uint64_t reply_gone = 2;

inline constexpr std::size_t max_rpc_bytes = std::size_t{160} << 10;
/// Dead letters keep at most this much of a message's payload.
inline constexpr std::size_t max_letter_payload = std::size_t{4} << 10;

/// System message: stop (after the message being handled).
struct sys_shutdown {
  /// The incarnation asked to stop: a later one (the message stayed in a
  /// mailbox kept open across a kill) ignores it.
  std::uint32_t incarnation = 0;
  MSGPACK_DEFINE(incarnation)
};

} // namespace pactor::detail
