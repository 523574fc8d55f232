// Per-process state of the actor layer: the connection to the node, this
// process's own rings, and the rings of other actors resolved so far.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/actors/behavior.hpp>
#include <pactor/actors/spawn_options.hpp>
#include <pactor/runtime/detail/ring.hpp>

#include "internal.hpp" // runtime internals (unique_fd, ...)
#include "protocol.hpp"
#include "stash.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace pactor::detail {

struct process_context {
  std::mutex mu; // the node socket and the caches
  int node_sock = -1;
  std::uint64_t self_id = 0;
  std::uint32_t incarnation = 0;
  std::optional<ring> mailbox; // this process's own
  std::optional<ring> replies;
  std::unordered_map<std::uint64_t, ring> mailboxes; // of others
  std::unordered_map<std::uint64_t, ring> reply_rings;
  std::unordered_map<std::uint64_t, send_policy> policies;
  // Asynchronous requests of the actor in this process: ids being awaited,
  // and their replies that a blocking request read first.
  struct stashed_reply {
    std::uint64_t id;
    bool error;
    type_tag_t type;
    std::vector<std::byte> bytes;
  };
  std::unordered_map<std::uint64_t, bool> async_ids;
  std::vector<stashed_reply> async_stash;
  std::atomic<std::uint64_t> request_counter{0};
  std::uint32_t max_deliveries = 3; // a message delivered more often is poison
  // overflow::drop_oldest: how many waiting messages the actor keeps (0:
  // the policy is another).
  std::uint64_t keep_newest = 0;
  // The message the actor is handling: 1 + its number in the mailbox (0:
  // none), and how many messages it has sent while handling it.
  std::uint64_t origin = 0;
  std::uint32_t origin_sends = 0;
  // Warm restart (the actor in this process): its state stash, how many
  // messages a commit covers, and what a state that does not decode does.
  std::optional<stash> state_stash;
  std::uint32_t commit_every = 1;
  bad_state on_bad_state = bad_state::cold_start;
};

process_context& ctx();
/// Whether this process is an actor handling a message now (not the
/// program).
bool inside_actor() noexcept;

/// One request to the node and its reply (fds attached to the reply land in
/// `fds`). Throws actor_system_down when the node is gone or silent.
rpc_reply call_node(const rpc_request& req,
                    std::vector<unique_fd>* fds = nullptr);

/// A connection to the node: this process's own (call_node), or one of an
/// endpoint (an embedded supervisor), so that its waits (await_end) do not
/// hold up the program's requests.
struct node_connection {
  std::mutex mu;
  std::uint64_t next_seq = 0;
};
rpc_reply call_node_on(node_connection& conn, int sock, const rpc_request& req,
                       std::vector<unique_fd>* fds = nullptr);

/// Throws std::runtime_error with the node's error text if !r.ok.
void check_reply(const rpc_reply& r, const char* what);

/// The mailbox / replies ring of actor `id`, resolved through the node
/// once and cached. Holds ctx().mu while resolving.
ring& mailbox_of(std::uint64_t id);
ring& replies_of(std::uint64_t id);

/// Puts an envelope and payload into `r`.
ring_status put_envelope(ring& r, const envelope& e, std::size_t size,
                         fn_ref<void(std::byte*)> write, wait_limit limit);

/// The node's main loop (in the node process).
int node_main(int root_sock, std::int64_t shutdown_timeout_ms,
              std::uint32_t max_deliveries, std::int64_t spin_ns,
              std::uint64_t keep_exited);

/// Ends the running actor after the message being handled, with `why`.
void exit_actor(const exit_reason& why);

/// Demangled name of the exception being handled.
std::string current_exception_type();

} // namespace pactor::detail
