// actor_system: the root's side. Starts the node (fork while the program has
// one thread, else spawn), talks to it, and stops it.

#include <pactor/actors/system.hpp>
#include <pactor/runtime/process.hpp>

#include "context.hpp"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pactor {

namespace detail {

struct system_state {
  std::optional<process> node;
  bool down = false;
  // Messages received by the root while it looked for another type.
  std::vector<std::pair<type_tag_t, std::vector<std::byte>>> stash;
  std::mutex receive_mu;
};

namespace {

std::atomic<bool> system_exists{false};

// peek, but a message that cannot be read (it does not decode) is
// consumed before the error goes on: it must not block the mailbox.
template <class F>
ring_status peek_or_drop(ring& box, F& read, wait_limit limit) {
  try {
    return box.peek(read, limit);
  } catch (...) {
    try {
      box.ack();
    } catch (...) {
    }
    throw;
  }
}

int node_entry(int sock, std::int64_t shutdown_ms, std::uint32_t max_deliveries,
               std::int64_t spin_ns, std::uint64_t keep_exited) {
  return node_main(sock, shutdown_ms, max_deliveries, spin_ns, keep_exited);
}

} // namespace

} // namespace detail

actor_system::actor_system(actor_system_options opts)
    : s_(std::make_unique<detail::system_state>()) {
  if (detail::system_exists.exchange(true))
    throw std::logic_error("pactor::actor_system: one per program (another "
                           "one exists)");
  try {
    // Each actor this program talks to costs it 6 fds (its mailbox and
    // replies rings): the usual soft limit of 1,024 would end a program
    // that talks to 170 actors. Soft = hard, as the node and Go do.
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0
        && nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      detail::throw_errno("socketpair for the actor system");
    detail::unique_fd mine(sv[0]);
    detail::unique_fd theirs(sv[1]);
    auto ms = static_cast<std::int64_t>(opts.shutdown_timeout.count());
    auto md = opts.max_deliveries;
    auto spin = static_cast<std::int64_t>(opts.spin.count());
    auto keep = static_cast<std::uint64_t>(opts.keep_exited);
    if (detail::thread_count() == 1 && !opts.spawn_node)
      s_->node.emplace(with_fork, &detail::node_entry, sv[1], ms, md, spin,
                       keep);
    else
      s_->node.emplace(with_spawn, &detail::node_entry, sv[1], ms, md, spin,
                       keep);
    s_->node->name("pactor-node").daemon(true).pass_fds({sv[1]});
    s_->node->start();
    theirs.reset();
    auto& c = detail::ctx();
    c.node_sock = mine.release();
    auto hello = detail::call_node({detail::rpc_op::hello, 0, 0, {}, {}});
    c.self_id = hello.a;
    c.incarnation = 1;
    std::vector<detail::unique_fd> fds;
    auto r = detail::call_node({detail::rpc_op::resolve, c.self_id, 0, {}, {}},
                               &fds);
    detail::check_reply(r, "actor_system start");
    c.mailbox.emplace(
      detail::ring::attach({fds[0].get(), fds[1].get(), fds[2].get()}));
    c.replies.emplace(
      detail::ring::attach({fds[3].get(), fds[4].get(), fds[5].get()}));
    c.mailbox->spin(opts.spin);
    c.replies->spin(opts.spin);
  } catch (...) {
    if (s_->node && s_->node->is_alive()) {
      s_->node->kill();
      s_->node->join();
    }
    detail::system_exists.store(false);
    throw;
  }
}

actor_system::~actor_system() {
  try {
    shutdown();
  } catch (...) {
  }
  detail::system_exists.store(false);
}

bool actor_system::shutdown() {
  if (s_->down)
    return true;
  s_->down = true;
  auto& c = detail::ctx();
  bool clean = false;
  try {
    clean = detail::call_node({detail::rpc_op::shutdown, 0, 0, {}, {}}).ok;
  } catch (...) {
  }
  ::close(c.node_sock);
  c.node_sock = -1;
  c.self_id = 0;
  c.mailbox.reset();
  c.replies.reset();
  c.mailboxes.clear();
  c.reply_rings.clear();
  if (s_->node && !s_->node->join(std::chrono::seconds(10))) {
    s_->node->kill();
    s_->node->join();
  }
  return clean;
}

actor_ref actor_system::self() const {
  return detail::self_ref();
}

void actor_system::stop(actor_ref who) {
  detail::call_node({detail::rpc_op::stop, who.id(), 0, {}, {}});
}

void actor_system::restart(actor_ref who) {
  auto r = detail::call_node({detail::rpc_op::restart, who.id(), 0, {}, {}});
  detail::check_reply(r, ("restart of " + who.to_string()).c_str());
}

std::vector<dead_letter> actor_system::take_dead_letters() {
  std::vector<dead_letter> all;
  for (;;) { // one reply holds what fits; r.b says how many are left
    auto r
      = detail::call_node({detail::rpc_op::take_dead_letters, 0, 0, {}, {}});
    auto some = decode_payload<std::vector<dead_letter>>(r.blob);
    all.insert(all.end(), std::make_move_iterator(some.begin()),
               std::make_move_iterator(some.end()));
    if (r.b == 0 || some.empty())
      return all;
  }
}

void actor_system::spin(std::chrono::nanoseconds limit) {
  auto& c = detail::ctx();
  if (c.mailbox)
    c.mailbox->spin(limit);
  if (c.replies)
    c.replies->spin(limit);
}

pid_t actor_system::pid(actor_ref who) {
  return static_cast<pid_t>(
    detail::call_node({detail::rpc_op::pid_of, who.id(), 0, {}, {}}).a);
}

void actor_system::kill(actor_ref who) {
  detail::call_node({detail::rpc_op::kill, who.id(), 0, {}, {}});
}

void actor_system::monitor(actor_ref who) {
  auto r = detail::call_node(
    {detail::rpc_op::monitor, self().id(), who.id(), {}, {}});
  detail::check_reply(r, "monitor");
}

void actor_system::demonitor(actor_ref who) {
  detail::call_node({detail::rpc_op::demonitor, self().id(), who.id(), {}, {}});
}

void actor_system::register_name(const std::string& name, actor_ref who) {
  auto r = detail::call_node({detail::rpc_op::reg, who.id(), 0, name, {}});
  detail::check_reply(r, "register_name");
}

std::optional<actor_ref> actor_system::whereis(const std::string& name) {
  auto r = detail::call_node({detail::rpc_op::whereis, 0, 0, name, {}});
  if (r.a == 0)
    return std::nullopt;
  return actor_ref(r.a);
}

void actor_system::unregister(const std::string& name) {
  detail::call_node({detail::rpc_op::unreg, 0, 0, name, {}});
}

std::uint64_t actor_system::dead_letters() {
  return detail::call_node({detail::rpc_op::stats, 0, 0, {}, {}}).b;
}

std::uint64_t actor_system::live_actors() {
  return detail::call_node({detail::rpc_op::stats, 0, 0, {}, {}}).a;
}

void actor_system::receive_until(
  type_tag_t type, const std::function<void(std::span<const std::byte>)>& f,
  detail::wait_limit limit) {
  (void)limit.deadline(); // fixed now: other messages do not extend it
  std::lock_guard lock(s_->receive_mu);
  for (auto it = s_->stash.begin(); it != s_->stash.end(); ++it)
    if (it->first == type) {
      auto bytes = std::move(it->second);
      s_->stash.erase(it);
      f(bytes);
      return;
    }
  auto& box = *detail::ctx().mailbox;
  for (;;) {
    bool done = false;
    auto read = [&](std::span<const std::byte> b, std::uint32_t) {
      auto mv = read_envelope(b);
      if (mv.header.type == type) {
        f(mv.payload);
        done = true;
      } else {
        s_->stash.emplace_back(
          mv.header.type,
          std::vector<std::byte>(mv.payload.begin(), mv.payload.end()));
      }
    };
    auto st = detail::peek_or_drop(box, read, limit);
    if (st != detail::ring_status::ok)
      return;
    box.ack();
    if (done)
      return;
  }
}

std::optional<exit_reason> actor_system::join_until(actor_ref who,
                                                    detail::wait_limit limit) {
  (void)limit.deadline(); // fixed now: other messages do not extend it
  monitor(who);
  // Downs of other actors are kept for later joins.
  std::lock_guard lock(s_->receive_mu);
  auto match = [&](std::span<const std::byte> b) -> std::optional<exit_reason> {
    auto d = decode_payload<down>(b);
    if (d.who == who)
      return d.reason;
    return std::nullopt;
  };
  for (auto it = s_->stash.begin(); it != s_->stash.end(); ++it)
    if (it->first == type_tag<down>())
      if (auto r = match(it->second)) {
        s_->stash.erase(it);
        return r;
      }
  auto& box = *detail::ctx().mailbox;
  for (;;) {
    std::optional<exit_reason> found;
    auto read = [&](std::span<const std::byte> b, std::uint32_t) {
      auto mv = read_envelope(b);
      if (mv.header.type == type_tag<down>())
        found = match(mv.payload);
      if (!found)
        s_->stash.emplace_back(
          mv.header.type,
          std::vector<std::byte>(mv.payload.begin(), mv.payload.end()));
    };
    auto st = detail::peek_or_drop(box, read, limit);
    if (st != detail::ring_status::ok)
      return std::nullopt;
    box.ack();
    if (found)
      return found;
  }
}

std::string exit_reason::to_string() const {
  switch (kind) {
  case exit_kind::normal:
    return "normal";
  case exit_kind::shutdown:
    return "shutdown";
  case exit_kind::exception:
    return "exception " + type + ": " + message;
  case exit_kind::exit_code:
    return "exit code " + std::to_string(code);
  case exit_kind::signal:
    return "signal " + std::to_string(code)
           + (core_dumped ? " (core dumped)" : "");
  case exit_kind::killed:
    return message.empty() ? "killed" : "killed: " + message;
  case exit_kind::linked:
    return "linked " + actor_ref(other).to_string() + " ended: " + message;
  case exit_kind::unknown:
    return "ended (" + message + ")";
  case exit_kind::out_of_memory:
    return "out of memory" + (message.empty() ? "" : ": " + message);
  }
  return "unknown";
}

} // namespace pactor
