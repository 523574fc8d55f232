// The client side of the actor layer, in every process (root and actors):
// requests to the node, resolving refs, delivering messages, awaiting
// replies. See docs/design/actors.md.

#include "context.hpp"

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/errors.hpp>
#include <pactor/actors/exit_reason.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cxxabi.h>
#include <memory>
#include <poll.h>
#include <random>
#include <sched.h>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/socket.h>
#include <system_error>
#include <typeinfo>
#include <unistd.h>

namespace pactor::detail {

process_context& ctx() {
  static process_context c;
  return c;
}

std::string current_exception_type() {
  auto* t = abi::__cxa_current_exception_type();
  if (t == nullptr)
    return "unknown";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
    abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(t->name());
}

rpc_reply call_node(const rpc_request& req, std::vector<unique_fd>* fds) {
  static node_connection shared; // one request at a time on the socket
  auto& c = ctx();
  if (c.node_sock < 0)
    throw std::logic_error("pactor: no actor system in this process");
  return call_node_on(shared, c.node_sock, req, fds);
}

rpc_reply call_node_on(node_connection& conn, int sock, const rpc_request& req,
                       std::vector<unique_fd>* fds) {
  std::lock_guard lock(conn.mu);
  auto tagged = req;
  tagged.seq = ++conn.next_seq;
  std::vector<std::byte> out;
  pack_payload(out, tagged);
  if (out.size() > max_rpc_bytes)
    throw std::length_error("pactor: a request to the node of "
                            + std::to_string(out.size())
                            + " bytes (spawn arguments too large?); the "
                              "limit is "
                            + std::to_string(max_rpc_bytes));
  int err = send_with_fds(sock, out, {});
  if (err != 0)
    throw actor_system_down("the node process is gone (send: "
                            + std::system_category().message(err) + ")");
  // The node answers at once (await_end within 30 s); a minute of silence
  // means it is wedged. Replies to earlier requests that timed out are
  // skipped by seq.
  auto deadline = steady::now() + std::chrono::seconds(60);
  std::vector<std::byte> buf;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - steady::now())
                  .count();
    if (left <= 0 || !poll_in(sock, left))
      throw actor_system_down("the node process does not answer");
    std::vector<unique_fd> got;
    // Sized to the packet (peeked): a fixed 160 KiB buffer would make
    // every actor touch, and keep, 160 KiB of heap for its first call.
    auto size = next_message_size(sock);
    if (size < 0 && size != -EAGAIN)
      throw actor_system_down("the node process is gone");
    buf.resize(std::clamp<std::size_t>(
      static_cast<std::size_t>(std::max<ssize_t>(size, 0)), 1, max_rpc_bytes));
    auto n = recv_with_fds(sock, buf, got);
    if (n == 0 || (n < 0 && n != -EMSGSIZE && n != -EAGAIN))
      throw actor_system_down("the node process is gone");
    if (n < 0)
      continue;
    buf.resize(static_cast<std::size_t>(n));
    auto r = decode_payload<rpc_reply>(buf);
    if (r.seq != tagged.seq)
      continue;
    if (fds != nullptr)
      *fds = std::move(got);
    return r;
  }
}

void check_reply(const rpc_reply& r, const char* what) {
  if (!r.ok)
    throw std::invalid_argument(std::string("pactor: ") + what + ": "
                                + r.error);
}

namespace {

// Resolves `id` (holding ctx().mu) and caches both rings.
void resolve_locked(std::uint64_t id) {
  auto& c = ctx();
  std::vector<unique_fd> fds;
  auto r = call_node({rpc_op::resolve, id, 0, {}, {}}, &fds);
  if (!r.ok && r.b == reply_gone) // ended, and its mailbox reclaimed
    throw actor_exited(actor_ref(id), r.error);
  if (!r.ok)
    throw std::invalid_argument("pactor: " + actor_ref(id).to_string() + ": "
                                + r.error);
  if (fds.size() != 6)
    throw actor_system_down("the node sent a malformed resolve reply");
  ring_fds m{fds[0].get(), fds[1].get(), fds[2].get()};
  ring_fds q{fds[3].get(), fds[4].get(), fds[5].get()};
  c.mailboxes.insert_or_assign(id, ring::attach(m));
  c.reply_rings.insert_or_assign(id, ring::attach(q));
  c.policies.insert_or_assign(
    id, r.blob.empty() ? send_policy{} : decode_payload<send_policy>(r.blob));
}

} // namespace

ring& mailbox_of(std::uint64_t id) {
  auto& c = ctx();
  std::lock_guard lock(c.mu);
  auto it = c.mailboxes.find(id);
  if (it == c.mailboxes.end()) {
    resolve_locked(id);
    it = c.mailboxes.find(id);
  }
  return it->second;
}

ring& replies_of(std::uint64_t id) {
  auto& c = ctx();
  std::lock_guard lock(c.mu);
  auto it = c.reply_rings.find(id);
  if (it == c.reply_rings.end()) {
    resolve_locked(id);
    it = c.reply_rings.find(id);
  }
  return it->second;
}

ring_status put_envelope(ring& r, const envelope& e, std::size_t size,
                         fn_ref<void(std::byte*)> write, wait_limit limit) {
  const auto header = envelope_header_size_for(e);
  auto total = header + size;
  auto w = [&](std::byte* dst) {
    write_envelope_header(dst, e, static_cast<std::uint32_t>(size));
    write(dst + header);
  };
  return r.put(total, w, limit);
}

actor_ref self_ref() {
  auto id = ctx().self_id;
  if (id == 0)
    throw std::logic_error("pactor: no actor system in this process");
  return actor_ref(id);
}

void deliver(actor_ref to, const envelope& sent, std::size_t size,
             fn_ref<void(std::byte*)> write) {
  if (!to)
    throw std::invalid_argument("pactor::send: to nobody (an empty actor_ref)");
  const bool is_reply = (sent.flags & flag_reply) != 0;
  envelope e = sent;
  if (auto& c = ctx(); c.origin != 0 && !is_reply) {
    // Sent while handling a message: tagged with it, so that the copies a
    // redelivery of that message sends again can be told apart.
    e.origin = c.origin;
    e.origin_index = ++c.origin_sends;
  }
  auto& r = is_reply ? replies_of(to.id()) : mailbox_of(to.id());
  send_policy policy;
  if (!is_reply) {
    std::lock_guard lock(ctx().mu);
    policy = ctx().policies[to.id()];
  }
  // fail / drop_newest: no wait for room, but a moment for the ring's
  // lock, which another sender may hold. A reply never blocks the replier
  // long: a requester whose replies ring stays full has timed out or died.
  auto limit
    = is_reply ? wait_limit::after(std::chrono::milliseconds(100))
      : policy.on_full == overflow::block
        ? wait_limit::after(std::chrono::milliseconds(policy.send_timeout_ms))
        : wait_limit::after(std::chrono::milliseconds(1));
  switch (put_envelope(r, e, size, write, limit)) {
  case ring_status::ok:
    return;
  case ring_status::timeout:
    if ((policy.on_full == overflow::drop_newest
         || policy.on_full == overflow::drop_oldest)
        && !is_reply) {
      // Dropped, not lost without a trace: the node keeps a dead letter.
      pactor::dead_letter l{
        to,
        actor_ref(e.sender),
        e.type,
        0,
        policy.on_full == overflow::drop_newest
          ? "dropped: the mailbox was full (drop_newest)"
          : "dropped: the mailbox's bytes were full (drop_oldest drops "
            "older messages as the actor takes them)",
        {}};
      std::vector<std::byte> whole(size);
      write(whole.data());
      l.payload.assign(whole.begin(), whole.begin()
                                        + static_cast<std::ptrdiff_t>(
                                          std::min(size, max_letter_payload)));
      rpc_request q{rpc_op::dead_letter, 0, 0, {}, {}};
      pack_payload(q.blob, l);
      call_node(q);
      return;
    }
    throw queue_full();
  case ring_status::closed: {
    auto st = call_node({rpc_op::resolve, to.id(), 0, {}, {}});
    if (st.ok && st.b == 1 // restarted meanwhile: its mailbox is open again
        && put_envelope(r, e, size, write, limit) == ring_status::ok)
      return;
    throw actor_exited(to, st.error);
  }
  }
}

fair_mutex& request_mutex() {
  static fair_mutex m;
  return m;
}

std::uint64_t next_request_id() {
  auto& c = ctx();
  auto n = c.request_counter.fetch_add(1) + 1;
  if (n == 1) { // first use in this process: a random start, so that ids of
                // an earlier incarnation are never reused
    std::random_device rd;
    auto start = (static_cast<std::uint64_t>(rd()) << 32 | rd()) | 1;
    c.request_counter.store(start + 1);
    return start;
  }
  return n;
}

bool target_ended(actor_ref target, bool raise) {
  if (!target || !mailbox_of(target.id()).closed())
    return false;
  auto st = call_node({rpc_op::resolve, target.id(), 0, {}, {}});
  if (st.ok && st.b == 1)
    return false; // restarted meanwhile
  if (raise)
    throw actor_exited(target, st.error);
  return true;
}

reply_in await_reply(std::uint64_t request_id, wait_limit limit,
                     actor_ref target) {
  const auto deadline = limit.deadline(); // other replies do not extend it
  auto& c = ctx();
  if (!c.replies)
    throw std::logic_error("pactor: no actor system in this process");
  // Waits in slices: between them, whether the target has ended (its
  // mailbox is closed) is a local look; then one last look for a reply it
  // sent before it ended. The slices grow from 1 ms to 50 ms: a target that
  // dies at once is seen at once, a long wait costs few wake-ups.
  auto slice = std::chrono::milliseconds(1);
  constexpr auto max_slice = std::chrono::milliseconds(50);
  bool last_look = false;
  for (;;) {
    std::optional<reply_in> match;
    bool error = false;
    auto read = [&](std::span<const std::byte> bytes) {
      auto mv = read_envelope(bytes);
      if (mv.header.request_id != request_id) {
        // Another request's: kept if asynchronous and awaited, else a late
        // or duplicate reply (dropped).
        if (c.async_ids.count(mv.header.request_id) != 0)
          c.async_stash.push_back({mv.header.request_id,
                                   (mv.header.flags & flag_error) != 0,
                                   mv.header.type,
                                   {mv.payload.begin(), mv.payload.end()}});
        return;
      }
      error = (mv.header.flags & flag_error) != 0;
      match.emplace(
        reply_in{mv.header.type, {mv.payload.begin(), mv.payload.end()}});
    };
    auto until = steady::now() + slice;
    slice = std::min(slice * 2, max_slice);
    if (deadline)
      until = std::min(until, *deadline);
    auto step = last_look ? wait_limit::none()
                          : wait_limit::after(until - steady::now());
    switch (c.replies->get(read, step)) {
    case ring_status::ok:
      break;
    case ring_status::timeout:
      if (last_look)
        target_ended(target, true);
      if (deadline && steady::now() >= *deadline)
        throw timeout_error();
      last_look = target_ended(target, false);
      continue;
    case ring_status::closed:
      throw actor_system_down("this process's reply ring was closed");
    }
    if (!match)
      continue;
    if (error) {
      auto [type, message]
        = decode_payload<std::pair<std::string, std::string>>(match->bytes);
      throw remote_error(type, message);
    }
    return std::move(*match);
  }
}

spawn_wire to_wire(const spawn_options& opts) {
  auto bad = [](const std::string& field, const std::string& why) {
    return std::invalid_argument("pactor::spawn: spawn_options::" + field + " "
                                 + why);
  };
  if (opts.mailbox_bytes < 4096 || opts.mailbox_bytes > (std::size_t{1} << 30))
    throw bad("mailbox_bytes", "must be between 4 KiB and 1 GiB");
  if (opts.on_full == overflow::drop_oldest && opts.mailbox_messages == 0)
    throw bad("mailbox_messages",
              "must be set with overflow::drop_oldest (how many waiting "
              "messages to keep)");
  if (static_cast<std::uint8_t>(opts.on_full)
      > static_cast<std::uint8_t>(overflow::drop_oldest))
    throw bad("on_full", "is not an overflow policy");
  if (opts.restart == restart_mode::warm) {
    if (opts.commit_every == 0)
      throw bad("commit_every", "must be at least 1");
    if (opts.state_bytes < 64 || opts.state_bytes > (std::size_t{1} << 30))
      throw bad("state_bytes", "must be between 64 bytes and 1 GiB");
  }
  for (const auto& l : opts.limits) {
    if (l.resource < 0 || l.resource >= RLIMIT_NLIMITS)
      throw bad("limits", "names resource " + std::to_string(l.resource)
                            + ", which is not an RLIMIT_* resource");
    if (l.soft > l.hard)
      throw bad("limits", "has a soft limit above its hard limit (resource "
                            + std::to_string(l.resource) + ")");
  }
  const auto cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_CONF));
  for (int cpu : opts.cpus)
    if (cpu < 0 || cpu >= std::min(cpus, CPU_SETSIZE))
      throw bad("cpus", "names CPU " + std::to_string(cpu)
                          + "; this machine has " + std::to_string(cpus));
  return {opts.name,
          opts.mailbox_bytes,
          opts.mailbox_messages,
          opts.on_full,
          static_cast<std::int64_t>(opts.send_timeout.count()),
          static_cast<std::int64_t>(opts.spin.count()),
          opts.restart,
          opts.state_bytes,
          opts.commit_every,
          opts.on_bad_state,
          opts.keep_mailbox_open,
          opts.limits,
          opts.cpus,
          opts.memory_limit};
}

actor_ref spawn_packed(const packed_target& t, const spawn_options& opts) {
  auto w = to_wire(opts);
  rpc_request req{rpc_op::spawn, 0, 0, opts.name, {}};
  pack_payload(req.blob, std::make_tuple(t, w));
  auto r = call_node(req);
  if (!r.ok)
    throw std::runtime_error("pactor::spawn: " + r.error);
  return actor_ref(r.a);
}

} // namespace pactor::detail
