// pactor::process: the handle, the children table, joining and signalling.

#include <pactor/runtime/detail/sync.hpp>
#include <pactor/runtime/init.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace pactor {

namespace detail {

namespace {

struct children_table {
  std::mutex mu;
  std::vector<std::shared_ptr<process_state>> live;
  bool atexit_registered = false;
};

children_table& children() {
  static auto* t = new children_table; // never destroyed (used at exit)
  return *t;
}

// Tries to collect the exit status; `block` waits up to `timeout_ms`.
// Returns whether the child has exited (exitcode set). Caller holds s.mu.
bool reap_locked(process_state& s, std::int64_t timeout_ms) {
  if (s.exitcode)
    return true;
  if (!s.started)
    return false;
  if (s.method == start_method::forkserver) {
    if (!poll_in(s.status.get(), timeout_ms))
      return false;
    int status = 0;
    std::vector<unique_fd> fds;
    auto n = recv_with_fds(
      s.status.get(), {reinterpret_cast<std::byte*>(&status), sizeof status},
      fds);
    if (n != static_cast<ssize_t>(sizeof status)) {
      // The forkserver died; its children died with it (parent-death signal).
      s.exitcode = -SIGKILL;
      s.core_dumped = false;
    } else {
      decode_wait_status(status, s.exitcode, s.core_dumped);
    }
    return true;
  }
  if (timeout_ms != 0 && !poll_in(s.pidfd.get(), timeout_ms))
    return false;
  siginfo_t info{};
  for (;;) {
    int rc
      = ::waitid(static_cast<idtype_t>(P_PIDFD),
                 static_cast<id_t>(s.pidfd.get()), &info, WEXITED | WNOHANG);
    if (rc == 0)
      break;
    if (errno == EINTR)
      continue;
    throw_errno("waitid (is SIGCHLD set to SIG_IGN?)");
  }
  if (info.si_pid == 0)
    return false;
  switch (info.si_code) {
  case CLD_EXITED:
    s.exitcode = info.si_status;
    break;
  case CLD_DUMPED:
    s.core_dumped = true;
    s.exitcode = -info.si_status;
    break;
  default: // CLD_KILLED
    s.exitcode = -info.si_status;
    break;
  }
  return true;
}

void send_signal(process_state& s, int sig) {
  std::lock_guard lk(s.mu);
  if (!s.started)
    throw std::logic_error("pactor::process: cannot signal a process that "
                           "was not started");
  if (reap_locked(s, 0))
    return;
  if (::syscall(SYS_pidfd_send_signal, s.pidfd.get(), sig, nullptr, 0) != 0
      && errno != ESRCH)
    throw_errno("pidfd_send_signal");
}

// Drops finished children from the table.
void reap_finished() {
  auto& t = children();
  std::lock_guard lk(t.mu);
  std::erase_if(t.live, [](const std::shared_ptr<process_state>& s) {
    std::lock_guard slk(s->mu);
    try {
      return reap_locked(*s, 0);
    } catch (const std::system_error&) {
      return true; // reaped by someone else (ECHILD): not ours to track
    }
  });
}

} // namespace

void cleanup_children() noexcept {
  auto& t = children();
  std::vector<std::shared_ptr<process_state>> all;
  {
    std::lock_guard lk(t.mu);
    all.swap(t.live);
  }
  try {
    for (auto& s : all) {
      std::lock_guard lk(s->mu);
      if (s->daemon && !reap_locked(*s, 0))
        ::syscall(SYS_pidfd_send_signal, s->pidfd.get(), SIGTERM, nullptr, 0);
    }
    for (auto& s : all) {
      std::lock_guard lk(s->mu);
      reap_locked(*s, -1);
    }
  } catch (...) {
  }
  forkserver_shutdown();
}

namespace {

void at_exit() noexcept {
  cleanup_children();
}

std::string default_name(const std::vector<std::uint32_t>& identity) {
  std::string name = "Process-";
  for (std::size_t i = 0; i < identity.size(); ++i) {
    if (i > 0)
      name += ':';
    name += std::to_string(identity[i]);
  }
  return name;
}

} // namespace

void children_forget_after_fork() noexcept {
  auto& t = children();
  new (&t.mu) std::mutex;
  // The parent's children are not ours: drop the handles without waiting.
  // Their fds were closed by prepare_child; release them unclosed.
  for (auto& s : t.live) {
    s->pidfd.release();
    s->status.release();
  }
  t.live.clear();
  t.atexit_registered = false;
}

} // namespace detail

using detail::process_state;

std::string_view to_string(start_method m) noexcept {
  switch (m) {
  case start_method::fork:
    return "fork";
  case start_method::spawn:
    return "spawn";
  case start_method::forkserver:
    return "forkserver";
  }
  return "unknown";
}

void set_start_method(start_method m) noexcept {
  detail::globals().default_method = m;
}

start_method get_start_method() noexcept {
  return detail::globals().default_method;
}

process::process() noexcept = default;

process::process(std::shared_ptr<process_state> s) noexcept
    : state_(std::move(s)) {
}

process::process(start_method m) : state_(std::make_shared<process_state>()) {
  state_->method = m;
  auto& g = detail::globals();
  std::lock_guard lk(g.mu);
  state_->identity = g.identity;
  state_->identity.push_back(++g.child_counter);
  state_->name = detail::default_name(state_->identity);
}

void process::set_fork_function(std::function<int()> fn) {
  state_->fork_fn = std::move(fn);
}

void process::set_packed_target(std::function<detail::packed_target()> fn) {
  state_->packed_fn = std::move(fn);
}

namespace {

process_state& checked(const std::shared_ptr<process_state>& s,
                       const char* what) {
  if (!s)
    throw std::logic_error(std::string("pactor::process::") + what
                           + ": empty process handle");
  return *s;
}

void require_not_started(process_state& s, const char* what) {
  if (s.started)
    throw std::logic_error(std::string("pactor::process::") + what
                           + ": the process was already started");
}

} // namespace

process& process::name(std::string value) {
  auto& s = checked(state_, "name");
  std::lock_guard lk(s.mu);
  require_not_started(s, "name");
  s.name = std::move(value);
  return *this;
}

const std::string& process::name() const {
  return checked(state_, "name").name;
}

process& process::daemon(bool value) {
  auto& s = checked(state_, "daemon");
  std::lock_guard lk(s.mu);
  require_not_started(s, "daemon");
  s.daemon = value;
  return *this;
}

bool process::daemon() const {
  return checked(state_, "daemon").daemon;
}

process& process::pass_fds(std::vector<int> fds) {
  auto& s = checked(state_, "pass_fds");
  std::lock_guard lk(s.mu);
  require_not_started(s, "pass_fds");
  if (s.method == start_method::forkserver && fds.size() > 250)
    throw std::invalid_argument(
      "pactor::process::pass_fds: forkserver passes at most 250 fds");
  s.pass_fds = std::move(fds);
  return *this;
}

process& process::allow_fork_with_threads(bool value) {
  auto& s = checked(state_, "allow_fork_with_threads");
  std::lock_guard lk(s.mu);
  require_not_started(s, "allow_fork_with_threads");
  s.allow_fork_with_threads = value;
  return *this;
}

start_method process::method() const {
  return checked(state_, "method").method;
}

void process::start() {
  auto& s = checked(state_, "start");
  auto& g = detail::globals();
  {
    std::lock_guard lk(g.mu);
    if (g.current.daemon)
      throw std::logic_error(
        "pactor::process::start: a daemonic process may not start children");
  }
  detail::reap_finished();
  std::unique_lock lk(s.mu);
  if (s.started)
    throw std::logic_error(
      "pactor::process::start: cannot start a process twice");
  detail::launched child;
  if (s.method == start_method::fork) {
    if (!s.fork_fn)
      throw std::logic_error("pactor::process::start: no target");
    if (!s.allow_fork_with_threads) {
      int threads = detail::thread_count();
      if (threads > 1)
        throw std::logic_error(
          "pactor::process::start: refusing to fork a process that has "
          + std::to_string(threads)
          + " threads (a lock held by another thread would stay locked in "
            "the child); use the spawn or forkserver start method, or "
            "allow_fork_with_threads(true) if the child only makes "
            "async-signal-safe calls");
    }
    child = detail::launch_fork(s);
  } else {
    if (!s.packed_fn)
      throw std::logic_error(
        std::string("pactor::process::start: the target is a capturing "
                    "callable, which only the fork start method can run, but "
                    "the start method is ")
        + std::string(to_string(s.method))
        + "; pass a captureless function and msgpack-packable arguments");
    if (!initialized())
      throw std::logic_error(
        "pactor::process::start: the spawn and forkserver start methods need "
        "pactor::init(argc, argv) as the first line of main");
    detail::bootstrap boot;
    {
      std::lock_guard glk(g.mu);
      boot.parent_pid = ::getpid();
      boot.parent_name = g.current.name;
    }
    boot.name = s.name;
    boot.daemon = s.daemon;
    boot.identity = s.identity;
    detail::packed_target target;
    {
      detail::fd_collector fds; // fds of pactor objects among the arguments
      target = s.packed_fn();
      for (int fd : fds.fds())
        if (std::find(s.pass_fds.begin(), s.pass_fds.end(), fd)
            == s.pass_fds.end())
          s.pass_fds.push_back(fd);
    }
    boot.trampoline = std::move(target.trampoline);
    boot.function = std::move(target.function);
    boot.args = std::move(target.args);
    std::vector<std::byte> bytes;
    pack_payload(bytes, boot);
    child = s.method == start_method::spawn
              ? detail::launch_spawn(s, bytes)
              : detail::launch_forkserver(s, bytes);
  }
  s.pid = child.pid;
  s.pidfd = std::move(child.pidfd);
  s.status = std::move(child.status);
  s.started = true;
  // The table is locked without the state's lock held: reap_finished takes
  // the table's lock first, then each state's.
  lk.unlock();
  auto& t = detail::children();
  std::lock_guard tlk(t.mu);
  t.live.push_back(state_);
  if (!t.atexit_registered) {
    t.atexit_registered = true;
    std::atexit(detail::at_exit);
  }
}

void process::join() {
  join_for(-1);
}

bool process::join_for(std::int64_t timeout_ms) {
  auto& s = checked(state_, "join");
  {
    std::lock_guard lk(s.mu);
    if (!s.started)
      throw std::logic_error(
        "pactor::process::join: can only join a started process");
    if (s.exitcode)
      return true;
  }
  // Wait without the lock, so other threads can poll or signal meanwhile.
  int fd
    = s.method == start_method::forkserver ? s.status.get() : s.pidfd.get();
  if (!detail::poll_in(fd, timeout_ms))
    return false;
  std::lock_guard lk(s.mu);
  return detail::reap_locked(s, -1);
}

bool process::is_alive() {
  auto& s = checked(state_, "is_alive");
  std::lock_guard lk(s.mu);
  return s.started && !detail::reap_locked(s, 0);
}

std::optional<int> process::exitcode() {
  auto& s = checked(state_, "exitcode");
  std::lock_guard lk(s.mu);
  detail::reap_locked(s, 0);
  return s.exitcode;
}

bool process::dumped_core() {
  auto& s = checked(state_, "dumped_core");
  std::lock_guard lk(s.mu);
  detail::reap_locked(s, 0);
  return s.core_dumped;
}

pid_t process::pid() const {
  return state_ ? state_->pid : 0;
}

int process::sentinel() const {
  if (!state_ || !state_->started)
    return -1;
  return state_->method == start_method::forkserver ? state_->status.get()
                                                    : state_->pidfd.get();
}

void process::terminate() {
  detail::send_signal(checked(state_, "terminate"), SIGTERM);
}

void process::kill() {
  detail::send_signal(checked(state_, "kill"), SIGKILL);
}

std::vector<process> active_children() {
  detail::reap_finished();
  auto& t = detail::children();
  std::lock_guard lk(t.mu);
  std::vector<process> out;
  for (auto& s : t.live)
    out.push_back(process(s));
  return out;
}

} // namespace pactor
