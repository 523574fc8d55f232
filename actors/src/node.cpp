// The node process: forks every actor, holds every mailbox's fds, reaps the
// actors, keeps the process table, monitors, links and names, and stops
// everything at shutdown. Single-threaded. See docs/design/actors.md.

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/exit_reason.hpp>

#include "context.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <functional>
#include <malloc.h>
#include <map>
#include <poll.h>
#include <sched.h>
#include <set>
#include <span>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace pactor::detail {

namespace {

constexpr std::uint64_t root_id = 1;
constexpr std::size_t max_letters = 10000;
// Exit reasons kept for actors whose records are gone (reclaimed, forgotten).
constexpr std::size_t max_tombs = 4096;

// Owned copies of a ring's three fds (the node does not map the rings).
struct held_ring {
  std::array<unique_fd, 3> fds;
  static held_ring make(const ring_options& opts) {
    auto r = ring::create(opts);
    held_ring h;
    auto f = r.fds();
    for (std::size_t i = 0; i < 3; ++i) {
      h.fds[i].reset(::fcntl(f[i], F_DUPFD_CLOEXEC, 3));
      if (!h.fds[i])
        throw_errno("dup of a mailbox fd in the node");
    }
    return h;
  }
  [[nodiscard]] ring_fds raw() const noexcept {
    return {fds[0].get(), fds[1].get(), fds[2].get()};
  }
};

struct actor_rec {
  std::uint64_t id = 0;
  std::string name;
  pid_t pid = 0;
  unique_fd pidfd;
  unique_fd ctl; // the node's end of the actor's control socket
  held_ring mailbox;
  held_ring replies;
  bool alive = false;
  std::uint32_t incarnation = 0;
  std::optional<exit_reason> reported; // what the actor said before exiting
  std::optional<exit_reason> imposed;  // killed / linked, set by the node
  exit_reason last;                    // the reason of the last death
  std::set<std::uint64_t> monitors;    // watchers
  std::set<std::uint64_t> links;
  bool traps_exit = false;
  std::optional<steady::time_point> kill_at; // stop(): SIGKILL then
  std::vector<std::byte> target;             // the packed_target, for restarts
  send_policy policy;        // what senders do when the mailbox is full
  std::int64_t spin_ns = -1; // its own spin (-1: the node's default)
  // Warm restart: the state stash (kept like the mailbox, across deaths).
  unique_fd stash;
  std::uint32_t commit_every = 1;
  bad_state on_bad_state = bad_state::cold_start;
  bool keep_open = false; // the mailbox stays open across deaths
  std::vector<resource_limit> limits;
  std::vector<int> cpus;
  std::uint64_t memory_limit = 0;
  std::uint64_t deaths = 0;      // its n-th death is entry (id, n) of `exited`
  std::uint64_t keep_newest = 0; // drop_oldest: waiting messages kept
  std::string cgroup;            // the memory cgroup of the running incarnation
  std::int64_t stop_timeout_ms = -1; // this stop's own timeout (-1: none)
  // An endpoint: a mailbox and a connection of a process that is not an
  // actor (an embedded supervisor), like the root's.
  bool endpoint = false;
};

// What an actor's process needs to start, as data: the child reads nothing
// of the node's table (the zygote that forks it has none). Its fds travel
// beside it: control socket, mailbox (3), replies (3), stash (if any).
struct start_order {
  std::uint64_t id = 0;
  std::uint32_t incarnation = 0;
  std::string name;
  std::int64_t node_pid = 0;
  std::int64_t spin_ns = 0;
  std::uint32_t max_deliveries = 3;
  std::uint64_t keep_newest = 0;
  std::uint32_t commit_every = 1;
  bad_state on_bad_state = bad_state::cold_start;
  bool has_stash = false;
  std::vector<resource_limit> limits;
  std::vector<int> cpus;
  std::uint64_t memory_limit = 0;
  std::string cgroup;
  std::vector<std::byte> target; // a packed_target
  MSGPACK_DEFINE(id, incarnation, name, node_pid, spin_ns, max_deliveries,
                 keep_newest, commit_every, on_bad_state, has_stash, limits,
                 cpus, memory_limit, cgroup, target)
};

// A caller of await_end, answered when the actor ends or at `deadline`.
struct end_waiter {
  std::uint64_t id;
  int sock;
  std::uint64_t seq;
  steady::time_point deadline;
};

struct node_state {
  int root_sock = -1;
  std::chrono::milliseconds shutdown_timeout{5000};
  std::map<std::uint64_t, actor_rec> actors; // by id; ids grow: start order
  std::map<std::string, std::uint64_t> names;
  std::uint64_t next_id = root_id + 1;
  std::uint64_t dead_letters = 0;
  std::deque<dead_letter> letters; // the newest max_letters, inspectable
  // Reclaiming: exited actors that may still be restarted by hand (not
  // supervised), oldest first as (id, death number); past `keep_exited`
  // the oldest is reclaimed. `tombs`: the exit reasons of reclaimed or
  // forgotten actors, the newest max_tombs (by id, in `tomb_order`).
  std::size_t keep_exited = 128;
  std::deque<std::pair<std::uint64_t, std::uint64_t>> exited;
  std::map<std::uint64_t, exit_reason> tombs;
  std::deque<std::uint64_t> tomb_order;
  std::uint32_t reclaimed_since_trim = 0;
  std::uint64_t oom_kills_seen = 0; // /proc/vmstat oom_kill, last read
  // The zygote (see start_zygote): pid 0 and no socket once it is gone.
  pid_t zygote_pid = 0;
  unique_fd zygote_sock;
  std::uint32_t max_deliveries = 3;
  std::int64_t spin_ns = 50000; // how long an actor spins before sleeping
  pid_t node_pid = 0;
  bool stopping = false;
  int sigfd = -1; // SIGINT, SIGTERM (and SIGCHLD) arrive here
  std::function<void(actor_rec&)> on_start; // watch its fds
  int epoll_fd = -1;
  std::vector<end_waiter> waiters;
  bool defer_reply = false; // set by handle(): the reply comes later
  unique_fd endpoint_fd;    // open_endpoint: the end the reply carries
  std::function<void(actor_rec&)> watch_endpoint; // its connection
};

int current_sock = -1; // the connection of the request being handled

void watch_endpoint(node_state& n, actor_rec& rec) {
  if (n.watch_endpoint)
    n.watch_endpoint(rec);
}

// Takes `fd` out of the node's epoll set before it is closed: a closed fd
// stays registered while a copy of it lives (in a child forked meanwhile,
// until it closes its inherited fds), and a dead incarnation's pidfd would
// then report the next incarnation dead.
void unwatch(const node_state& n, const unique_fd& fd) {
  if (fd && n.epoll_fd >= 0)
    ::epoll_ctl(n.epoll_fd, EPOLL_CTL_DEL, fd.get(), nullptr);
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

void send_signal(const actor_rec& a, int sig) {
  if (a.pidfd)
    ::syscall(SYS_pidfd_send_signal, a.pidfd.get(), sig, nullptr, 0);
}

void reply(int sock, const rpc_reply& r, std::span<const int> fds = {}) {
  std::vector<std::byte> out;
  pack_payload(out, r);
  if (send_with_fds(sock, out, fds) != 0)
    std::fprintf(stderr, "pactor: node: a reply could not be sent\n");
}

void keep_letter(node_state& n, dead_letter l, bool print = true) {
  ++n.dead_letters;
  if (l.payload.size() > max_letter_payload)
    l.payload.resize(max_letter_payload);
  if (print)
    std::fprintf(stderr, "pactor: dead letter to %s: %s\n",
                 l.to.to_string().c_str(), l.why.c_str());
  if (n.letters.size() >= max_letters)
    n.letters.pop_front();
  n.letters.push_back(std::move(l));
}

// Puts a system-originated message into `to`'s mailbox without waiting: the
// node never blocks on a full mailbox (it counts a dead letter instead).
template <class T>
void node_deliver(node_state& n, actor_rec& to, const T& msg,
                  std::uint32_t flags = 0) {
  try {
    auto r = ring::attach(to.mailbox.raw());
    auto size = packed_size(msg);
    envelope e{type_tag<T>(), 0, 0, 0, flags};
    auto write = [&](std::byte* dst) { pack_into(msg, {dst, size}); };
    // No wait for room (the node never blocks on one mailbox), but a moment
    // for the ring's lock, which a sender may hold.
    if (put_envelope(r, e, size, write,
                     wait_limit::after(std::chrono::milliseconds(50)))
        != ring_status::ok) {
      dead_letter l{actor_ref(to.id),
                    {},
                    type_tag<T>(),
                    0,
                    "a system message the mailbox could not take (full or "
                    "closed)",
                    {}};
      pack_payload(l.payload, msg);
      keep_letter(n, std::move(l));
    }
  } catch (const std::exception& e) {
    keep_letter(n, {actor_ref(to.id),
                    {},
                    type_tag<T>(),
                    0,
                    std::string("a system message that failed: ") + e.what(),
                    {}});
  }
}

bool write_file(const std::string& path, const std::string& text) {
  unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  return fd
         && ::write(fd.get(), text.data(), text.size())
              == static_cast<ssize_t>(text.size());
}

std::string read_file(const std::string& path) {
  std::string out;
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd)
    return out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0)
    out.append(buf, static_cast<std::size_t>(n));
  return out;
}

// Where this process's memory cgroup is: the v1 memory controller's
// hierarchy, or a v2 one with the memory controller; or why there is none.
struct cgroup_base {
  std::string dir;
  bool v2 = false;
  std::string error;
};
cgroup_base find_memory_cgroup_base() {
  std::string v1_path;
  std::string v2_path;
  bool have_v2 = false;
  auto own = read_file("/proc/self/cgroup");
  for (std::size_t at = 0; at < own.size();) {
    auto end = own.find('\n', at);
    auto line = own.substr(at, end - at);
    at = end == std::string::npos ? own.size() : end + 1;
    auto c1 = line.find(':');
    auto c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos)
      continue;
    auto ctrls = "," + line.substr(c1 + 1, c2 - c1 - 1) + ",";
    if (ctrls.find(",memory,") != std::string::npos)
      v1_path = line.substr(c2 + 1);
    if (line.compare(0, 3, "0::") == 0) {
      v2_path = line.substr(c2 + 1);
      have_v2 = true;
    }
  }
  auto mounts = read_file("/proc/self/mountinfo");
  std::string v1_mount;
  std::string v2_mount;
  for (std::size_t at = 0; at < mounts.size();) {
    auto end = mounts.find('\n', at);
    auto line = mounts.substr(at, end - at);
    at = end == std::string::npos ? mounts.size() : end + 1;
    auto sep = line.find(" - ");
    if (sep == std::string::npos)
      continue;
    // fields: id parent major:minor root mountpoint ...
    std::size_t f = 0;
    std::size_t pos = 0;
    std::string mountpoint;
    while (f < 5 && pos < sep) {
      auto next = line.find(' ', pos);
      if (f == 4)
        mountpoint = line.substr(pos, next - pos);
      pos = next + 1;
      ++f;
    }
    auto tail = line.substr(sep + 3);
    if (tail.compare(0, 7, "cgroup2") == 0)
      v2_mount = mountpoint;
    else if (tail.compare(0, 7, "cgroup ") == 0
             && ("," + tail.substr(tail.rfind(' ') + 1) + ",").find(",memory,")
                  != std::string::npos)
      v1_mount = mountpoint;
  }
  cgroup_base b;
  if (!v1_mount.empty() && !v1_path.empty()) {
    b.dir = v1_mount + (v1_path == "/" ? "" : v1_path);
  } else if (have_v2 && !v2_mount.empty()) {
    b.dir = v2_mount + (v2_path == "/" ? "" : v2_path);
    b.v2 = true;
    if (read_file(b.dir + "/cgroup.subtree_control").find("memory")
        == std::string::npos) {
      b.error = "the cgroup v2 hierarchy does not delegate the memory "
                "controller below "
                + b.dir;
      return b;
    }
  } else {
    b.error = "no memory cgroup is mounted";
    return b;
  }
  if (::access(b.dir.c_str(), W_OK) != 0)
    b.error = "the memory cgroup " + b.dir + " is not writable";
  return b;
}

// Found once per node (the actors it forks inherit the answer): the node's
// cgroup is where each capped incarnation's own goes.
const cgroup_base& memory_cgroup_base() {
  static const cgroup_base base = find_memory_cgroup_base();
  return base;
}

// The kernel's count of OOM kills so far (/proc/vmstat oom_kill; 0 if not
// there).
std::uint64_t oom_kills() {
  auto vm = read_file("/proc/vmstat");
  auto at = vm.find("\noom_kill ");
  return at == std::string::npos
           ? 0
           : std::strtoull(vm.c_str() + at + 10, nullptr, 10);
}

// After an incarnation with a memory cap ended: whether the kernel killed it
// for memory, and its cgroup removed.
bool reap_cgroup(actor_rec& a) {
  if (a.memory_limit == 0 || a.cgroup.empty())
    return false;
  const auto& base = memory_cgroup_base();
  auto dir = base.dir + "/" + a.cgroup;
  bool oom = false;
  auto ctl
    = read_file(dir + (base.v2 ? "/memory.events" : "/memory.oom_control"));
  auto at = ctl.find("oom_kill ");
  if (at != std::string::npos)
    oom = std::strtoull(ctl.c_str() + at + 9, nullptr, 10) > 0;
  ::rmdir(dir.c_str());
  a.cgroup.clear();
  return oom;
}

// Sets the actor's resource limits and CPUs in its own process; a failure
// is its exit reason (exception "pactor::resource_limit").
void apply_limits(const start_order& a) {
  auto fail = [&](const std::string& what) {
    int err = errno;
    exit_reason r;
    r.kind = exit_kind::exception;
    r.type = "pactor::resource_limit";
    r.message = what + ": " + std::system_category().message(err);
    rpc_request q{rpc_op::exiting, a.id, 0, {}, {}};
    pack_payload(q.blob, r);
    try {
      call_node(q);
    } catch (...) {
    }
    std::fprintf(stderr, "pactor: actor %s could not start: %s\n",
                 actor_ref(a.id).to_string().c_str(), r.message.c_str());
    child_exit(125);
  };
  for (const auto& l : a.limits) {
    rlimit rl{static_cast<rlim_t>(l.soft), static_cast<rlim_t>(l.hard)};
    if (::setrlimit(l.resource, &rl) != 0)
      fail("setrlimit of resource " + std::to_string(l.resource));
  }
  if (a.memory_limit != 0) {
    const auto& base = memory_cgroup_base();
    if (!base.error.empty()) {
      errno = ENOTSUP;
      fail("memory cap: " + base.error);
    }
    auto dir = base.dir + "/" + a.cgroup;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
      fail("memory cap: mkdir " + dir);
    auto limit = std::to_string(a.memory_limit);
    if (!write_file(dir + (base.v2 ? "/memory.max" : "/memory.limit_in_bytes"),
                    limit))
      fail("memory cap: writing the limit in " + dir);
    if (!base.v2) // the swap too, where the kernel accounts it
      (void)write_file(dir + "/memory.memsw.limit_in_bytes", limit);
    if (!write_file(dir + "/cgroup.procs", "0"))
      fail("memory cap: joining " + dir);
  }
  if (!a.cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu : a.cpus)
      CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
      fail("sched_setaffinity");
  }
}

// The actor's process, from its order and fds (control socket, mailbox,
// replies, stash): forked by the zygote (or by the node).
[[noreturn]] void run_order(const start_order& o, std::span<const int> fds) {
  ctx().max_deliveries = o.max_deliveries;
  ctx().keep_newest = o.keep_newest;
  const auto node_pid = static_cast<pid_t>(o.node_pid);
  std::vector<int> keep(fds.begin(), fds.end());
  std::sort(keep.begin(), keep.end());
  prepare_child({node_pid, true, keep, keep, false});
  ::signal(SIGINT, SIG_IGN); // Ctrl-C: the node decides the order
  std::string name = o.name.empty() ? "actor-" + std::to_string(o.id) : o.name;
  become_child(name, false, {"pactor-node", node_pid, false}, {});
  auto& c = ctx();
  c.node_sock = fds[0];
  c.self_id = o.id;
  c.incarnation = o.incarnation;
  c.mailboxes.clear();
  c.reply_rings.clear();
  c.request_counter.store(0);
  int code = 1;
  try {
    c.mailbox.emplace(ring::attach({fds[1], fds[2], fds[3]}));
    c.replies.emplace(ring::attach({fds[4], fds[5], fds[6]}));
    auto spin = std::chrono::nanoseconds(o.spin_ns);
    c.mailbox->spin(spin);
    c.replies->spin(spin);
    c.state_stash.reset();
    if (o.has_stash)
      c.state_stash.emplace(stash::attach(fds[7]));
    c.commit_every = o.commit_every;
    c.on_bad_state = o.on_bad_state;
    apply_limits(o);
    auto t = decode_payload<packed_target>(o.target);
    auto tramp
      = reinterpret_cast<trampoline_fn>(resolve_function_ref(t.trampoline));
    auto fn = resolve_function_ref(t.function);
    code = tramp(fn, t.args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pactor: actor %s could not start: %s\n",
                 actor_ref(o.id).to_string().c_str(), e.what());
    code = 125;
  }
  child_exit(code);
}

// The zygote: a process the node forks before it has any actor (so with a
// small heap), which forks every actor. Each order gets a fork A, which
// forks the actor B and exits at once; B is then reparented to the node
// (its subreaper), so the node reaps it as if it had forked it, while B
// carries none of the node's table. (One fork with CLONE_PARENT would do,
// but a raw clone leaves glibc's cached thread id stale in the child, and
// the rings' robust mutexes record owners by that id.) A answers the order
// with B's pid (-errno if the fork failed) and exits; B waits until its
// parent is no longer A before it runs anything, so it is the node's child
// before it can end. The zygote answers only refusals (a bad order, a
// failed fork of A); the kernel reaps A (SIGCHLD ignored).
[[noreturn]] void zygote_main(int sock, pid_t node_pid) {
  const int keep[1] = {sock};
  prepare_child({node_pid, true, keep, {}, false});
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGCHLD, SIG_IGN); // its children (A) are reaped by the kernel
  become_child("pactor-zygote", false, {"pactor-node", node_pid, false}, {});
  for (;;) {
    auto size = next_message_size(sock);
    if (size <= 0)
      child_exit(0); // the node closed it
    std::vector<std::byte> buf(static_cast<std::size_t>(size));
    std::vector<unique_fd> fds;
    if (recv_with_fds(sock, buf, fds) <= 0)
      child_exit(0);
    std::int64_t refusal = -EINVAL;
    try {
      auto o = decode_payload<start_order>(buf);
      if (fds.size() == (o.has_stash ? 8U : 7U)) {
        std::vector<int> raw;
        for (const auto& f : fds)
          raw.push_back(f.get());
        std::fflush(nullptr);
        pid_t a = ::fork();
        if (a == 0) { // A: forks the actor, tells the node its pid, exits
          // Not the zygote's SIG_IGN: B, dying before A exits, must stay a
          // zombie for the node to reap, not vanish.
          ::signal(SIGCHLD, SIG_DFL);
          const pid_t me = ::getpid();
          pid_t b = ::fork();
          if (b == 0) { // B: once A is gone, the node is its parent
            auto until = steady::now() + std::chrono::seconds(30);
            while (::getppid() == me && steady::now() < until)
              ::sched_yield();
            run_order(o, raw); // (its parent checked there)
          }
          std::int64_t got = b > 0 ? b : -errno;
          (void)::send(sock, &got, sizeof got, MSG_NOSIGNAL);
          ::_exit(0);
        }
        if (a > 0)
          continue; // A answers the node
        refusal = -errno;
      }
    } catch (const std::exception&) {
    }
    if (::send(sock, &refusal, sizeof refusal, MSG_NOSIGNAL)
        != static_cast<ssize_t>(sizeof refusal))
      child_exit(0);
  }
}

void start_zygote(node_state& n) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return; // the node forks actors itself
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(sv[0]);
    zygote_main(sv[1], n.node_pid);
  }
  ::close(sv[1]);
  if (pid < 0) {
    ::close(sv[0]);
    return;
  }
  n.zygote_pid = pid;
  n.zygote_sock.reset(sv[0]);
}

void stop_zygote(node_state& n) {
  if (n.zygote_pid == 0)
    return;
  n.zygote_sock.reset();         // it exits on EOF
  ::kill(n.zygote_pid, SIGKILL); // or now, if it is stuck
  while (::waitpid(n.zygote_pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  n.zygote_pid = 0;
}

// Asks the zygote to start `o`: the actor's pid, or 0 if the zygote cannot
// (it is gone or wedged: it is stopped, and the node forks from then on).
pid_t fork_by_zygote(node_state& n, const start_order& o,
                     std::span<const int> fds) {
  if (n.zygote_pid == 0)
    return 0;
  std::vector<std::byte> out;
  pack_payload(out, o);
  std::int64_t answer = 0;
  bool ok = send_with_fds(n.zygote_sock.get(), out, fds) == 0
            && poll_in(n.zygote_sock.get(), 10000);
  if (ok) {
    ssize_t got;
    do {
      got = ::recv(n.zygote_sock.get(), &answer, sizeof answer, 0);
    } while (got < 0 && errno == EINTR);
    ok = got == static_cast<ssize_t>(sizeof answer);
  }
  if (!ok) {
    std::fprintf(stderr, "pactor: node: the zygote does not answer; the node "
                         "forks actors itself from now on\n");
    stop_zygote(n);
    return 0;
  }
  if (answer <= 0)
    throw std::system_error(static_cast<int>(-answer), std::system_category(),
                            "the zygote could not fork an actor");
  return static_cast<pid_t>(answer);
}

// Forks the next incarnation of `rec` from its stored target.
rpc_reply start_incarnation(node_state& n, actor_rec& rec) {
  (void)decode_payload<packed_target>(rec.target); // a bad one fails here
  if (rec.memory_limit != 0) {
    (void)memory_cgroup_base(); // a child forked here inherits the answer
    rec.cgroup = "pactor-" + std::to_string(n.node_pid) + "-"
                 + std::to_string(rec.id) + "-"
                 + std::to_string(rec.incarnation);
  }
  start_order o;
  o.id = rec.id;
  o.incarnation = rec.incarnation;
  o.name = rec.name;
  o.node_pid = n.node_pid;
  o.spin_ns = rec.spin_ns >= 0 ? rec.spin_ns : n.spin_ns;
  o.max_deliveries = n.max_deliveries;
  o.keep_newest = rec.keep_newest;
  o.commit_every = rec.commit_every;
  o.on_bad_state = rec.on_bad_state;
  o.has_stash = static_cast<bool>(rec.stash);
  o.limits = rec.limits;
  o.cpus = rec.cpus;
  o.memory_limit = rec.memory_limit;
  o.cgroup = rec.cgroup;
  o.target = rec.target;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return {false, 0, 0, "socketpair failed", {}};
  std::vector<int> fds{sv[1]};
  for (const auto& f : rec.mailbox.fds)
    fds.push_back(f.get());
  for (const auto& f : rec.replies.fds)
    fds.push_back(f.get());
  if (rec.stash)
    fds.push_back(rec.stash.get());
  pid_t pid = 0;
  try {
    pid = fork_by_zygote(n, o, fds);
  } catch (const std::exception& e) {
    ::close(sv[0]);
    ::close(sv[1]);
    return {false, 0, 0, e.what(), {}};
  }
  if (pid == 0) { // no zygote: fork here
    std::fflush(nullptr);
    pid = ::fork();
    if (pid == 0) {
      ::close(sv[0]);
      run_order(o, fds);
    }
  }
  if (pid < 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return {false, 0, 0, "fork failed", {}};
  }
  ::close(sv[1]);
  unique_fd pidfd(pidfd_open(pid));
  if (!pidfd) { // cannot watch it: do not let it run unwatched
    ::kill(pid, SIGKILL);
    // (ECHILD: forked by the zygote, not yet reparented: look again.)
    const auto until = steady::now() + std::chrono::seconds(2);
    while (::waitpid(pid, nullptr, 0) < 0
           && (errno == EINTR || (errno == ECHILD && steady::now() < until)))
      ::sched_yield();
    ::close(sv[0]);
    return {false, 0, 0, "pidfd_open failed (out of fds?)", {}};
  }
  rec.ctl.reset(sv[0]);
  rec.pid = pid;
  rec.pidfd = std::move(pidfd);
  rec.alive = true;
  rec.reported.reset();
  rec.imposed.reset();
  rec.kill_at.reset();
  if (n.on_start)
    n.on_start(rec);
  rpc_reply r{true, rec.id, static_cast<std::uint64_t>(pid), {}, {}};
  pack_payload(r.blob, rec.incarnation);
  return r;
}

rpc_reply spawn_actor(node_state& n, const rpc_request& req) {
  auto [target, opts]
    = decode_payload<std::tuple<packed_target, spawn_wire>>(req.blob);
  if (opts.mailbox_bytes < 4096
      || opts.mailbox_bytes > (std::uint64_t{1} << 30))
    return {false,
            0,
            0,
            "spawn_options::mailbox_bytes must be between 4 KiB and 1 GiB",
            {}};
  actor_rec fresh;
  fresh.name = opts.name;
  fresh.incarnation = 1;
  // drop_oldest: the ring is bounded by bytes; the actor keeps the count.
  const bool drop_oldest = opts.on_full == overflow::drop_oldest;
  fresh.mailbox = held_ring::make(
    {opts.mailbox_bytes, drop_oldest ? 0 : opts.mailbox_messages, false});
  fresh.keep_newest = drop_oldest ? opts.mailbox_messages : 0;
  fresh.replies = held_ring::make({std::size_t{1} << 18, 0, false});
  fresh.policy = {opts.on_full, opts.send_timeout_ms};
  fresh.spin_ns = opts.spin_ns;
  if (opts.restart == restart_mode::warm) {
    if (opts.commit_every == 0 || opts.state_bytes < 64
        || opts.state_bytes > (std::uint64_t{1} << 30))
      return {false, 0, 0, "invalid warm restart options", {}};
    fresh.stash = stash::create(opts.state_bytes);
    fresh.commit_every = opts.commit_every;
    fresh.on_bad_state = opts.on_bad_state;
  }
  fresh.keep_open = opts.keep_mailbox_open;
  fresh.limits = opts.limits;
  fresh.cpus = opts.cpus;
  fresh.memory_limit = opts.memory_limit;
  pack_payload(fresh.target, target);
  // Into the table only once its rings exist (a throw above leaves nothing).
  auto id = n.next_id++;
  fresh.id = id;
  auto& rec = n.actors[id];
  rec = std::move(fresh);
  auto r = start_incarnation(n, rec);
  if (!r.ok)
    n.actors.erase(id);
  return r;
}

rpc_reply restart_actor(node_state& n, actor_rec& rec) {
  if (rec.id == root_id || rec.target.empty())
    return {false, 0, 0, "not an actor", {}};
  if (rec.alive)
    return {false, 0, 0, "it is running", {}};
  if (n.stopping)
    return {false, 0, 0, "the actor system is shutting down", {}};
  try {
    ring::attach(rec.mailbox.raw()).reopen();
  } catch (const std::exception& e) {
    return {false, 0, 0, e.what(), {}};
  }
  ++rec.incarnation;
  return start_incarnation(n, rec);
}

// Answers the await_end callers of `id` (all if id is 0) whose actor has
// ended, or whose deadline has passed (then "still running").
void answer_waiters(node_state& n, std::uint64_t id, bool ended,
                    const exit_reason* why) {
  auto now = steady::now();
  for (auto it = n.waiters.begin(); it != n.waiters.end();) {
    bool mine = it->id == id && ended;
    bool late = it->deadline <= now;
    if (!mine && !late) {
      ++it;
      continue;
    }
    rpc_reply r{mine, mine ? 1U : 0U, 0, mine ? "" : "still running", {}};
    if (mine && why != nullptr)
      pack_payload(r.blob, *why);
    r.seq = it->seq;
    reply(it->sock, r);
    it = n.waiters.erase(it);
  }
}

void close_mailbox(actor_rec& a) {
  try {
    ring::attach(a.mailbox.raw()).close();
  } catch (...) {
  }
}

void deliver_down(node_state& n, std::uint64_t watcher, const actor_rec& dead) {
  auto it = n.actors.find(watcher);
  if (it == n.actors.end())
    return;
  if (!it->second.alive && watcher != root_id && !it->second.endpoint)
    return;
  node_deliver(n, it->second, down{actor_ref(dead.id), dead.last});
}

void on_death(node_state& n, actor_rec& a, int status) {
  exit_reason r;
  if (a.imposed) {
    r = *a.imposed;
  } else if (a.reported) {
    r = *a.reported;
  } else if (WIFEXITED(status)) {
    r.kind
      = WEXITSTATUS(status) == 0 ? exit_kind::normal : exit_kind::exit_code;
    r.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.kind = exit_kind::signal;
    r.code = WTERMSIG(status);
    r.core_dumped = WCOREDUMP(status);
  }
  r.incarnation = a.incarnation;
  const bool capped_oom = reap_cgroup(a);
  // The kernel's OOM kill count, read at every death (and at start): a rise
  // since the last death, at an unexplained SIGKILL, is taken for this
  // actor's (another process's OOM kill in that window would be too: best
  // effort).
  auto kills = oom_kills();
  const bool system_oom = kills > n.oom_kills_seen;
  n.oom_kills_seen = kills;
  if (r.kind == exit_kind::signal && r.code == SIGKILL) {
    if (capped_oom) {
      r.kind = exit_kind::out_of_memory;
      r.message
        = "its memory cap of " + std::to_string(a.memory_limit) + " bytes";
    } else if (system_oom) {
      r.kind = exit_kind::out_of_memory;
      r.message = "the system's OOM killer (/proc/vmstat oom_kill rose)";
    }
  }
  a.last = r;
  a.alive = false;
  a.kill_at.reset();
  unwatch(n, a.pidfd);
  unwatch(n, a.ctl);
  std::erase_if(n.waiters, [&](const end_waiter& w) {
    return a.ctl && w.sock == a.ctl.get(); // its own waits end with it
  });
  a.pidfd.reset();
  a.ctl.reset();
  a.stop_timeout_ms = -1;
  if (!a.keep_open) {
    close_mailbox(a);
    n.exited.emplace_back(a.id, ++a.deaths); // restartable by hand, for now
  }
  answer_waiters(n, a.id, true, &a.last);
  for (auto it = n.names.begin(); it != n.names.end();)
    it = it->second == a.id ? n.names.erase(it) : std::next(it);
  // Its own monitors of others end with it (a restart starts afresh).
  for (auto& [oid, other] : n.actors)
    other.monitors.erase(a.id);
  a.traps_exit = false;
  auto watchers = std::move(a.monitors);
  a.monitors.clear();
  for (auto w : watchers)
    deliver_down(n, w, a);
  auto linked = std::move(a.links);
  a.links.clear();
  for (auto other : linked) {
    auto it = n.actors.find(other);
    if (it == n.actors.end() || !it->second.alive)
      continue;
    auto& b = it->second;
    b.links.erase(a.id);
    if (r.is_normal())
      continue;
    if (b.traps_exit) {
      node_deliver(n, b, exit_msg{actor_ref(a.id), r});
    } else if (!b.imposed) {
      exit_reason lr;
      lr.kind = exit_kind::linked;
      lr.other = a.id;
      lr.message = r.to_string();
      b.imposed = lr;
      send_signal(b, SIGKILL);
    }
  }
}

// Reaps `a` if its process has ended (its pidfd said so; a stale report
// about an earlier incarnation finds the running one alive: ignored), or
// waits for it to end (`block`: it was sent SIGKILL).
void reap(node_state& n, actor_rec& a, bool block = false) {
  int status = 0;
  pid_t got = 0;
  // ECHILD: forked by the zygote and not yet reparented to the node (its
  // parent A is exiting, microseconds). Not blocking: its pidfd stays
  // readable and the next turn reaps it; blocking: look again shortly.
  const auto until = steady::now() + std::chrono::seconds(2);
  for (;;) {
    got = ::waitpid(a.pid, &status, block ? 0 : WNOHANG);
    if (got >= 0)
      break;
    if (errno == EINTR)
      continue;
    if (block && errno == ECHILD && steady::now() < until) {
      ::sched_yield();
      continue;
    }
    break;
  }
  if (got < 0 && errno == ECHILD && ::kill(a.pid, 0) != 0 && errno == ESRCH) {
    // Gone without a status for us (reaped elsewhere: must not happen);
    // better a death by an unknown SIGKILL than a record that never ends.
    std::fprintf(stderr, "pactor: node: %s ended without a status\n",
                 actor_ref(a.id).to_string().c_str());
    status = SIGKILL; // WIFSIGNALED, WTERMSIG 9
    got = a.pid;
  }
  if (got <= 0)
    return;
  on_death(n, a, status);
}

// Whether `id` named an actor (or endpoint) whose record is gone: ids are
// never reused, so one below next_id that is not in the table has ended.
bool is_gone(const node_state& n, std::uint64_t id) {
  return id > root_id && id < n.next_id && !n.actors.contains(id);
}

exit_reason tomb_reason(const node_state& n, std::uint64_t id) {
  if (auto it = n.tombs.find(id); it != n.tombs.end())
    return it->second;
  exit_reason r;
  r.kind = exit_kind::unknown;
  r.message = "it ended long ago; its exit reason is no longer kept";
  return r;
}

// The error reply about a gone actor: b = reply_gone, blob = its reason.
rpc_reply gone_reply(const node_state& n, std::uint64_t id) {
  auto why = tomb_reason(n, id);
  rpc_reply r{false,
              0,
              reply_gone,
              why.to_string() + " (its record and mailbox were reclaimed)",
              {}};
  pack_payload(r.blob, why);
  return r;
}

void bury(node_state& n, std::uint64_t id, const exit_reason& why) {
  n.tombs.insert_or_assign(id, why);
  n.tomb_order.push_back(id);
  while (n.tomb_order.size() > max_tombs) {
    n.tombs.erase(n.tomb_order.front());
    n.tomb_order.pop_front();
  }
}

// What is left in the mailbox of an actor that ended and is reclaimed
// becomes dead letters (the node's own control messages are dropped).
void drain_to_letters(node_state& n, actor_rec& a) {
  std::uint64_t count = 0;  // never handed to the actor
  std::uint64_t handed = 0; // handed to it, not acknowledged (its death cut
                            // the handler, or came between reply and ack)
  auto why = "its actor ended (" + a.last.to_string()
             + ") and its mailbox was reclaimed";
  try {
    auto box = ring::attach(a.mailbox.raw());
    auto read = [&](std::span<const std::byte> bytes, std::uint32_t delivery) {
      dead_letter l;
      l.to = actor_ref(a.id);
      l.delivery = delivery - 1; // this peek counted: times its actor got it
      l.why = why;
      std::span<const std::byte> payload = bytes;
      try {
        auto mv = read_envelope(bytes);
        if ((mv.header.flags & flag_system) != 0)
          return;
        l.from = actor_ref(mv.header.sender);
        l.type = mv.header.type;
        payload = mv.payload;
      } catch (const std::exception&) { // kept whole, undecoded
      }
      payload = payload.first(std::min(payload.size(), max_letter_payload));
      l.payload.assign(payload.begin(), payload.end());
      keep_letter(n, std::move(l), false);
      ++(delivery > 1 ? handed : count);
    };
    while (box.peek(read, wait_limit::none()) == ring_status::ok)
      box.ack();
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "pactor: node: the mailbox of %s could not be read "
                 "when it was reclaimed: %s\n",
                 actor_ref(a.id).to_string().c_str(), e.what());
  }
  if (count + handed != 0)
    std::fprintf(stderr,
                 "pactor: dead letters: %llu message(s) never delivered and "
                 "%llu delivered but not acknowledged (perhaps handled) left "
                 "in the mailbox of %s when it was reclaimed (it ended: %s)\n",
                 static_cast<unsigned long long>(count),
                 static_cast<unsigned long long>(handed),
                 actor_ref(a.id).to_string().c_str(),
                 a.last.to_string().c_str());
}

// Drops the record of an ended actor (or an endpoint): closes its mailbox,
// ends its monitors, links and names, keeps its exit reason as a tomb.
void drop_record(node_state& n, actor_rec& a) {
  bury(n, a.id, a.last);
  close_mailbox(a);
  unwatch(n, a.ctl);
  std::erase_if(n.waiters, [&](const end_waiter& w) {
    return w.id == a.id || (a.ctl && w.sock == a.ctl.get());
  });
  for (auto& [oid, other] : n.actors) {
    other.monitors.erase(a.id);
    other.links.erase(a.id);
  }
  std::erase_if(n.names, [&](const auto& kv) { return kv.second == a.id; });
  n.actors.erase(a.id);
}

// Reclaims the oldest exited actors past keep_exited: their mailboxes (6
// fds and up to the mailbox's size of memory each), their records; then
// gives the freed heap back (actors forked later share less of it).
void reclaim_exited(node_state& n) {
  if (n.exited.size() > n.keep_exited) // drop entries that no longer apply
    std::erase_if(n.exited, [&](const auto& e) {
      auto it = n.actors.find(e.first);
      return it == n.actors.end() || it->second.alive || it->second.keep_open
             || it->second.endpoint || it->second.deaths != e.second;
    });
  while (n.exited.size() > n.keep_exited) {
    auto [id, death] = n.exited.front();
    n.exited.pop_front();
    auto it = n.actors.find(id);
    if (it == n.actors.end())
      continue;
    auto& a = it->second;
    if (a.alive || a.keep_open || a.endpoint || a.deaths != death)
      continue; // restarted, or supervised, since
    drain_to_letters(n, a);
    drop_record(n, a);
    ++n.reclaimed_since_trim;
  }
  if (n.reclaimed_since_trim >= 32) {
    ::malloc_trim(0);
    n.reclaimed_since_trim = 0;
  }
}

rpc_reply handle(node_state& n, std::uint64_t from, const rpc_request& q,
                 std::vector<int>& fds_out) {
  auto find = [&](std::uint64_t id) -> actor_rec* {
    auto it = n.actors.find(id);
    return it == n.actors.end() ? nullptr : &it->second;
  };
  switch (q.op) {
  case rpc_op::hello:
    return {true, from, 0, {}, {}};
  case rpc_op::spawn:
    if (n.stopping)
      return {false, 0, 0, "the actor system is shutting down", {}};
    return spawn_actor(n, q);
  case rpc_op::resolve: {
    auto* a = find(q.a);
    if (a == nullptr)
      return is_gone(n, q.a) ? gone_reply(n, q.a)
                             : rpc_reply{false, 0, 0, "no such actor", {}};
    for (const auto& f : a->mailbox.fds)
      fds_out.push_back(f.get());
    for (const auto& f : a->replies.fds)
      fds_out.push_back(f.get());
    bool alive = a->alive || a->id == root_id || a->endpoint;
    rpc_reply r{true,
                a->id,
                alive ? 1U : 0U,
                alive ? std::string() : a->last.to_string(),
                {}};
    pack_payload(r.blob, a->policy);
    return r;
  }
  case rpc_op::monitor: {
    auto* t = find(q.b);
    if (t == nullptr && is_gone(n, q.b)) { // down at once, as for the dead
      if (auto* w = find(q.a);
          w != nullptr && (w->alive || w->id == root_id || w->endpoint))
        node_deliver(n, *w, down{actor_ref(q.b), tomb_reason(n, q.b)});
      return {};
    }
    if (t == nullptr)
      return {false, 0, 0, "no such actor", {}};
    if (t->alive)
      t->monitors.insert(q.a);
    else
      deliver_down(n, q.a, *t);
    return {};
  }
  case rpc_op::demonitor:
    if (auto* t = find(q.b))
      t->monitors.erase(q.a);
    return {};
  case rpc_op::link: {
    auto* a = find(q.a);
    auto* b = find(q.b);
    bool b_gone = b == nullptr && is_gone(n, q.b);
    if (a == nullptr || (b == nullptr && !b_gone))
      return {false, 0, 0, "no such actor", {}};
    if (b_gone || !b->alive) { // linking to the dead: its death reaches us now
      auto last = b_gone ? tomb_reason(n, q.b) : b->last;
      if (!last.is_normal() && a->alive) {
        if (a->traps_exit) {
          node_deliver(n, *a, exit_msg{actor_ref(q.b), last});
        } else {
          exit_reason lr;
          lr.kind = exit_kind::linked;
          lr.other = q.b;
          lr.message = last.to_string();
          a->imposed = lr;
          send_signal(*a, SIGKILL);
        }
      }
      return {};
    }
    a->links.insert(b->id);
    b->links.insert(a->id);
    return {};
  }
  case rpc_op::unlink:
    if (auto* a = find(q.a))
      a->links.erase(q.b);
    if (auto* b = find(q.b))
      b->links.erase(q.a);
    return {};
  case rpc_op::trap_exit:
    if (auto* a = find(q.a))
      a->traps_exit = q.b != 0;
    return {};
  case rpc_op::reg: {
    auto* a = find(q.a);
    if (a == nullptr || (!a->alive && a->id != root_id))
      return {false, 0, 0, "no such live actor", {}};
    if (q.name.empty())
      return {false, 0, 0, "an empty name", {}};
    auto [it, fresh] = n.names.emplace(q.name, q.a);
    if (!fresh && it->second != q.a)
      return {false,
              0,
              0,
              "the name \"" + q.name + "\" is taken by "
                + actor_ref(it->second).to_string(),
              {}};
    return {};
  }
  case rpc_op::unreg:
    n.names.erase(q.name);
    return {};
  case rpc_op::whereis: {
    auto it = n.names.find(q.name);
    return {true, it == n.names.end() ? 0 : it->second, 0, {}, {}};
  }
  case rpc_op::exiting:
    if (auto* a = find(from))
      a->reported = decode_payload<exit_reason>(q.blob);
    return {};
  case rpc_op::stop: {
    // b: 0 the system's shutdown timeout, else 1 + ms, or ~0: no kill.
    auto* a = find(q.a);
    if (a != nullptr && a->alive) {
      node_deliver(n, *a, sys_shutdown{a->incarnation}, flag_system);
      if (q.b == ~std::uint64_t{0})
        a->kill_at.reset();
      else
        a->kill_at
          = steady::now()
            + (q.b == 0 ? n.shutdown_timeout
                        : std::chrono::milliseconds(std::min<std::uint64_t>(
                          q.b - 1, std::uint64_t{1} << 40)));
    }
    return {};
  }
  case rpc_op::await_end: {
    // a: id, b: ms to wait. Answered when it has ended (a = 1, blob = its
    // reason) or after b ms (ok = false).
    auto* a = find(q.a);
    if (a == nullptr && is_gone(n, q.a)) {
      rpc_reply r{true, 1, 0, {}, {}};
      pack_payload(r.blob, tomb_reason(n, q.a));
      return r;
    }
    if (a == nullptr)
      return {false, 0, 0, "no such actor", {}};
    if (!a->alive || a->endpoint || a->id == root_id) {
      rpc_reply r{true, 1, 0, {}, {}};
      pack_payload(r.blob, a->last);
      return r;
    }
    n.waiters.push_back(
      {q.a, current_sock, q.seq,
       steady::now()
         + std::chrono::milliseconds(std::min<std::uint64_t>(q.b, 30000))});
    n.defer_reply = true;
    return {};
  }
  case rpc_op::set_mailbox_open: {
    // a: id, b: 1 keep the mailbox open across deaths (and open it), 0 close
    // it now if the actor is not running.
    auto* a = find(q.a);
    if (a == nullptr || a->id == root_id || a->endpoint)
      return {false, 0, 0, "no such actor", {}};
    a->keep_open = q.b != 0;
    try {
      if (q.b != 0)
        ring::attach(a->mailbox.raw()).reopen();
      else if (!a->alive)
        ring::attach(a->mailbox.raw()).close();
    } catch (const std::exception& e) {
      return {false, 0, 0, e.what(), {}};
    }
    if (!a->keep_open && !a->alive) // no supervisor keeps it any more
      n.exited.emplace_back(a->id, ++a->deaths);
    return {};
  }
  case rpc_op::forget: {
    // a: id of an actor that has ended (or an endpoint): closes its mailbox
    // and drops it (its fds, its record). Its ref is gone from then on.
    auto* a = find(q.a);
    if (a == nullptr || a->id == root_id)
      return {false, 0, 0, "no such actor", {}};
    if (a->alive && !a->endpoint)
      return {false, 0, 0, "it is running", {}};
    drop_record(n, *a);
    return {};
  }
  case rpc_op::open_endpoint: {
    // A mailbox and a connection of their own for a non-actor (an embedded
    // supervisor): a = its id; the reply carries the connection's other
    // end.
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      return {false, 0, 0, "socketpair failed", {}};
    unique_fd ours(sv[0]);
    unique_fd theirs(sv[1]);
    actor_rec fresh;
    fresh.name = q.name.empty() ? "endpoint" : q.name;
    fresh.endpoint = true;
    fresh.mailbox = held_ring::make({});
    fresh.replies = held_ring::make({std::size_t{1} << 18, 0, false});
    fresh.ctl = std::move(ours);
    auto id = n.next_id++;
    fresh.id = id;
    auto& rec = n.actors[id];
    rec = std::move(fresh);
    watch_endpoint(n, rec);
    fds_out.push_back(theirs.get());
    n.endpoint_fd = std::move(theirs); // closed once the reply carried it
    return {true, id, 0, {}, {}};
  }
  case rpc_op::kill: {
    auto* a = find(q.a);
    if (a != nullptr && a->alive) {
      if (!a->imposed) {
        exit_reason k;
        k.kind = exit_kind::killed;
        a->imposed = k;
      }
      send_signal(*a, SIGKILL);
    }
    return {};
  }
  case rpc_op::dead_letter:
    keep_letter(n, decode_payload<dead_letter>(q.blob));
    return {};
  case rpc_op::take_dead_letters: {
    // As many as fit in one reply (the oldest first); the rest stay for
    // the next call.
    rpc_reply r;
    std::vector<dead_letter> some;
    std::size_t bytes = 0;
    while (!n.letters.empty()
           && bytes + n.letters.front().payload.size() + 512
                < max_rpc_bytes / 2) {
      bytes += n.letters.front().payload.size() + 512;
      some.push_back(std::move(n.letters.front()));
      n.letters.pop_front();
    }
    pack_payload(r.blob, some);
    r.b = n.letters.size(); // still kept
    return r;
  }
  case rpc_op::pid_of: {
    auto* a = find(q.a);
    return {true,
            a != nullptr && a->alive ? static_cast<std::uint64_t>(a->pid) : 0U,
            0,
            {},
            {}};
  }
  case rpc_op::restart: {
    auto* a = find(q.a);
    if (a == nullptr && is_gone(n, q.a))
      return {false,
              0,
              reply_gone,
              "it was reclaimed after it ended (the node keeps the "
              "mailboxes of the newest actor_system_options::keep_exited "
              "ended actors, "
                + std::to_string(n.keep_exited)
                + "; a supervised child is kept while its supervisor runs)",
              {}};
    if (a == nullptr)
      return {false, 0, 0, "no such actor", {}};
    return restart_actor(n, *a);
  }
  case rpc_op::stats: {
    std::uint64_t live = 0;
    for (auto& [id, a] : n.actors)
      live += a.alive ? 1 : 0;
    return {true, live, n.dead_letters, {}, {}};
  }
  case rpc_op::shutdown:
    break; // handled by the loop
  }
  return {false, 0, 0, "unknown request", {}};
}

enum class served : std::uint8_t { ok, gone, shutdown };

// Reads one request from `sock` (client `from`), handles it and answers it.
// A packet that is too large or does not decode gets an error reply; the
// connection stays. gone: the peer closed it. shutdown: the root asked for
// it (not answered here).
served serve(node_state& n, int sock, std::uint64_t from,
             rpc_request* shutdown_request = nullptr) {
  // Never blocks: a readiness event can be stale (reported for a socket
  // since closed, whose number a new connection now has). The buffer is
  // sized to the packet (peeked), not to the limit.
  auto size = next_message_size(sock, MSG_DONTWAIT);
  if (size == -EAGAIN)
    return served::ok;
  std::vector<std::byte> buf(std::clamp<std::size_t>(
    static_cast<std::size_t>(std::max<ssize_t>(size, 0)), 1, max_rpc_bytes));
  std::vector<unique_fd> ignored;
  auto len = recv_with_fds(sock, buf, ignored, MSG_DONTWAIT);
  if (len == 0 || (len < 0 && len != -EMSGSIZE && len != -EAGAIN))
    return served::gone;
  if (len == -EAGAIN)
    return served::ok;
  rpc_reply r;
  std::vector<int> out;
  if (len < 0) {
    r = {false, 0, 0, "a request over the size limit", {}};
  } else {
    buf.resize(static_cast<std::size_t>(len));
    try {
      auto q = decode_payload<rpc_request>(buf);
      if (q.op == rpc_op::shutdown && shutdown_request != nullptr) {
        *shutdown_request = q;
        return served::shutdown;
      }
      current_sock = sock;
      n.defer_reply = false;
      r = handle(n, from, q, out);
      r.seq = q.seq;
      if (n.defer_reply) // answered later (await_end)
        return served::ok;
    } catch (const std::exception& ex) {
      r = {false, 0, 0, ex.what(), {}};
    }
  }
  reply(sock, r, out);
  n.endpoint_fd.reset();
  return served::ok;
}

// Stops every live actor in reverse start order: the shutdown message, then
// SIGKILL after the timeout. Returns whether all stopped in time.
bool stop_all(node_state& n) {
  n.stopping = true;
  bool clean = true;
  bool hurry = false; // a second SIGINT/SIGTERM: kill the rest at once
  // Over a snapshot of the ids: serving the one being stopped may drop
  // others from the table (a supervisor forgets a temporary child).
  std::vector<std::uint64_t> ids;
  for (const auto& [id, rec] : n.actors)
    ids.push_back(id);
  for (auto id_it = ids.rbegin(); id_it != ids.rend(); ++id_it) {
    auto found = n.actors.find(*id_it);
    if (found == n.actors.end())
      continue;
    auto& a = found->second;
    if (!a.alive || a.id == root_id)
      continue;
    node_deliver(n, a, sys_shutdown{a.incarnation}, flag_system);
    pollfd p{a.pidfd.get(), POLLIN, 0};
    auto deadline = steady::now() + n.shutdown_timeout;
    for (;;) {
      if (hurry)
        break;
      // Keep answering the actor's own requests (its exit report) meanwhile,
      // and listen for a second Ctrl-C.
      pollfd two[3] = {p, {a.ctl.get(), POLLIN, 0}, {n.sigfd, POLLIN, 0}};
      if (!a.ctl)
        two[1].fd = -1;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - steady::now())
                    .count();
      if (left <= 0)
        break;
      if (::poll(two, 3, static_cast<int>(left)) < 0 && errno != EINTR)
        break;
      if ((two[0].revents & POLLIN) != 0)
        break;
      if ((two[2].revents & POLLIN) != 0) {
        signalfd_siginfo si{};
        while (::read(n.sigfd, &si, sizeof si) == sizeof si)
          if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM)
            hurry = true;
        continue;
      }
      if (a.ctl && (two[1].revents & (POLLIN | POLLHUP)) != 0
          && serve(n, a.ctl.get(), a.id) == served::gone) {
        unwatch(n, a.ctl);
        std::erase_if(n.waiters, [&](const end_waiter& w) {
          return w.sock == a.ctl.get();
        });
        a.ctl.reset();
      }
    }
    if (!poll_in(a.pidfd.get(), 0)) {
      clean = false;
      exit_reason k;
      k.kind = exit_kind::killed;
      k.message = hurry ? "a second interrupt during shutdown"
                        : "did not stop within the shutdown timeout";
      a.imposed = k;
      send_signal(a, SIGKILL);
    }
    reap(n, a, true);
  }
  return clean;
}

} // namespace

int node_main(int root_sock, std::int64_t shutdown_timeout_ms,
              std::uint32_t max_deliveries, std::int64_t spin_ns,
              std::uint64_t keep_exited) {
  ::prctl(PR_SET_NAME, "pactor-node");
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // The root's death (Ctrl-C at a terminal kills it) is an orderly stop:
  // SIGTERM, caught below, instead of the SIGKILL every pactor child gets.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  // A node with 1,000 actors holds about 8,000 fds: soft limit = hard limit.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  node_state n;
  n.root_sock = root_sock;
  n.shutdown_timeout = std::chrono::milliseconds(shutdown_timeout_ms);
  n.max_deliveries = max_deliveries;
  n.spin_ns = spin_ns;
  n.keep_exited = keep_exited;
  n.node_pid = ::getpid();
  // Before anything else is in the node's memory (fds, rings, tables).
  start_zygote(n);
  n.oom_kills_seen = oom_kills();
  sigset_t sigs;
  ::sigemptyset(&sigs);
  ::sigaddset(&sigs, SIGINT);
  ::sigaddset(&sigs, SIGTERM);
  ::sigaddset(&sigs, SIGCHLD);
  // The node is single-threaded: the process mask is its thread's.
  ::sigprocmask(SIG_BLOCK, &sigs, nullptr); // NOLINT(concurrency-mt-unsafe)
  unique_fd sigfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  n.sigfd = sigfd.get();
  // The root's endpoint: a mailbox and a replies ring like an actor's.
  auto& root = n.actors[root_id];
  root.id = root_id;
  root.name = "root";
  root.mailbox = held_ring::make({});
  root.replies = held_ring::make({std::size_t{1} << 18, 0, false});
  // epoll: a node with 1,000 actors watches 2,000 fds; poll() over all of
  // them per request made spawning quadratic. Keys: 0 signals, 1 root,
  // id * 2 + 0 an actor's control socket, id * 2 + 1 its pidfd.
  unique_fd ep(::epoll_create1(EPOLL_CLOEXEC));
  n.epoll_fd = ep.get();
  auto watch = [&](int fd, std::uint64_t key) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
  };
  watch(sigfd.get(), 0);
  watch(n.root_sock, 1);
  n.on_start = [&](actor_rec& a) {
    watch(a.ctl.get(), a.id * 2);
    watch(a.pidfd.get(), a.id * 2 + 1);
  };
  n.watch_endpoint = [&](actor_rec& a) { watch(a.ctl.get(), a.id * 2); };
  bool clean = true;
  std::vector<epoll_event> events(64);
  for (;;) {
    int timeout = -1;
    auto now = steady::now();
    auto until = [&](steady::time_point at) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(at - now).count();
      ms = std::clamp<std::int64_t>(ms, 0, 1 << 30);
      timeout = timeout < 0 ? static_cast<int>(ms)
                            : std::min(timeout, static_cast<int>(ms));
    };
    for (auto& [id, a] : n.actors)
      if (a.kill_at)
        until(*a.kill_at);
    for (const auto& w : n.waiters)
      until(w.deadline);
    int got = ::epoll_wait(ep.get(), events.data(),
                           static_cast<int>(events.size()), timeout);
    if (got < 0 && errno != EINTR)
      break;
    now = steady::now();
    if (!n.waiters.empty())
      answer_waiters(n, 0, false, nullptr);
    for (auto& [id, a] : n.actors)
      if (a.alive && a.kill_at && *a.kill_at <= now) {
        a.kill_at.reset();
        exit_reason k;
        k.kind = exit_kind::killed;
        k.message = "did not stop within the shutdown timeout";
        a.imposed = k;
        send_signal(a, SIGKILL);
      }
    bool leave = false;
    for (int e = 0; e < got && !leave; ++e) {
      auto key = events[static_cast<std::size_t>(e)].data.u64;
      if (key == 0) {
        signalfd_siginfo si{};
        bool stop = false;
        while (::read(sigfd.get(), &si, sizeof si) == sizeof si)
          if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM)
            stop = true;
        if (stop) {
          clean = stop_all(n);
          leave = true;
        }
        continue;
      }
      if (key == 1) {
        rpc_request q;
        auto how = serve(n, n.root_sock, root_id, &q);
        if (how == served::ok)
          continue;
        clean = stop_all(n); // the root asked, or it is gone
        if (how == served::shutdown)
          reply(n.root_sock, {clean, 0, 0, {}, {}, q.seq});
        leave = true;
        continue;
      }
      auto id = key / 2;
      auto it = n.actors.find(id);
      if (it == n.actors.end())
        continue;
      auto& a = it->second;
      if (key % 2 == 0) {
        // A closed socket also leaves the epoll set.
        if (a.ctl && serve(n, a.ctl.get(), id) == served::gone) {
          unwatch(n, a.ctl);
          std::erase_if(n.waiters, [&](const end_waiter& w) {
            return w.sock == a.ctl.get();
          });
          a.ctl.reset();
          if (a.endpoint) { // its owner is gone: so is the endpoint
            close_mailbox(a);
            n.actors.erase(it);
          }
        }
      } else if (a.alive && a.pidfd) {
        reap(n, a);
      }
    }
    if (leave)
      break;
    reclaim_exited(n);
  }
  stop_zygote(n);
  return clean ? 0 : 3;
}

} // namespace pactor::detail
