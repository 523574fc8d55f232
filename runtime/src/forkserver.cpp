// The forkserver: a single-threaded server process that forks children on
// request. Protocol: docs/design/processes.md.

#include <pactor/runtime/init.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <unordered_map>

namespace pactor::detail {

namespace {

constexpr std::uint32_t request_magic = 0x70667372; // "rsfp"
constexpr std::size_t max_pass_fds = 250;

struct request_header {
  std::uint32_t magic;
  std::uint32_t nfds; // pass_fds count; fds[0] = status, fds[1] = memfd
  std::int32_t targets[max_pass_fds];
};

struct spawn_reply {
  std::int32_t pid;
};

// --- server -----------------------------------------------------------

// In the forked child: put the passed fds at their numbers, close the rest,
// run the bootstrap.
[[noreturn]] void serve_child(pid_t server, std::vector<unique_fd>& fds,
                              const request_header& req) {
  std::size_t n = req.nfds;
  int high = 2;
  for (std::size_t i = 0; i < n; ++i)
    high = std::max(high, static_cast<int>(req.targets[i]));
  // Move every received fd above all targets, then into place.
  int memfd = ::fcntl(fds[1].get(), F_DUPFD_CLOEXEC, high + 1);
  std::vector<int> moved(n);
  for (std::size_t i = 0; i < n; ++i)
    moved[i] = ::fcntl(fds[2 + i].get(), F_DUPFD_CLOEXEC, high + 1);
  for (std::size_t i = 0; i < n; ++i)
    ::dup2(moved[i], req.targets[i]);
  std::vector<int> keep(req.targets, req.targets + n);
  std::sort(keep.begin(), keep.end());
  std::vector<int> inheritable = keep;
  keep.push_back(memfd);
  std::sort(keep.begin(), keep.end());
  bool keep_stdin = std::binary_search(keep.begin(), keep.end(), 0);
  for (auto& f : fds) // their numbers are closed by prepare_child
    f.release();
  prepare_child({server, true, keep, inheritable, keep_stdin});
  run_bootstrap(memfd);
}

[[noreturn]] void server_exit(std::unordered_map<pid_t, unique_fd>& kids) {
  for (auto& [pid, status] : kids)
    ::kill(pid, SIGKILL);
  for (auto& [pid, status] : kids) {
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
  ::_exit(0);
}

} // namespace

void forkserver_main(int control) {
  ::prctl(PR_SET_NAME, "pactor-forksrv");
  // Ctrl-C reaches the whole foreground group: the client decides, not us.
  ::signal(SIGINT, SIG_IGN);
  sigset_t chld;
  ::sigemptyset(&chld);
  ::sigaddset(&chld, SIGCHLD);
  ::pthread_sigmask(SIG_BLOCK, &chld, nullptr);
  unique_fd sfd(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
  ::fcntl(control, F_SETFD, FD_CLOEXEC);
  pid_t self = ::getpid();
  std::unordered_map<pid_t, unique_fd> kids;
  for (;;) {
    pollfd pfd[2] = {{control, POLLIN, 0}, {sfd.get(), POLLIN, 0}};
    if (::poll(pfd, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      server_exit(kids);
    }
    if ((pfd[1].revents & POLLIN) != 0) {
      signalfd_siginfo si;
      while (::read(sfd.get(), &si, sizeof si) > 0) {
      }
      int st;
      pid_t pid;
      while ((pid = ::waitpid(-1, &st, WNOHANG)) > 0) {
        auto it = kids.find(pid);
        if (it == kids.end())
          continue;
        send_with_fds(it->second.get(),
                      {reinterpret_cast<const std::byte*>(&st), sizeof st}, {});
        kids.erase(it);
      }
    }
    if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
      continue;
    request_header req{};
    std::vector<unique_fd> fds;
    auto n = recv_with_fds(
      control, {reinterpret_cast<std::byte*>(&req), sizeof req}, fds);
    if (n <= 0)
      server_exit(kids); // the client is gone (EOF) or the socket broke
    auto header_size = offsetof(request_header, targets);
    if (static_cast<std::size_t>(n) < header_size || req.magic != request_magic
        || req.nfds > max_pass_fds
        || static_cast<std::size_t>(n)
             != header_size + std::size_t{req.nfds} * 4
        || fds.size() != 2 + req.nfds)
      continue; // malformed: drop it; the client sees EOF on its status fd
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(control);
      serve_child(self, fds, req);
    }
    if (pid < 0)
      continue; // status socket closes: the client reports the failure
    spawn_reply reply{pid};
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    int reply_fds[1] = {pidfd};
    send_with_fds(fds[0].get(),
                  {reinterpret_cast<const std::byte*>(&reply), sizeof reply},
                  {reply_fds, pidfd >= 0 ? 1U : 0U});
    if (pidfd >= 0)
      ::close(pidfd);
    kids.emplace(pid, std::move(fds[0]));
  }
}

// --- client -----------------------------------------------------------

namespace {

struct client_t {
  std::mutex mu;
  unique_fd control;
  pid_t server = 0;
  unique_fd server_pidfd;
};

client_t& client() {
  static auto* c = new client_t; // never destroyed (used at exit)
  return *c;
}

void stop_server_locked(client_t& c) noexcept {
  if (c.server == 0)
    return;
  c.control.reset(); // EOF: the server kills its children and exits
  if (c.server_pidfd) {
    bool gone = false;
    try {
      gone = poll_in(c.server_pidfd.get(), 2000);
    } catch (...) {
    }
    if (!gone)
      ::kill(c.server, SIGKILL);
  }
  int st;
  while (::waitpid(c.server, &st, 0) < 0 && errno == EINTR) {
  }
  c.server = 0;
  c.server_pidfd.reset();
}

void ensure_server_locked(client_t& c) {
  if (c.server != 0) {
    int st;
    if (::waitpid(c.server, &st, WNOHANG) == 0)
      return;
    c.server = 0; // it died: start a new one
    c.server_pidfd.reset();
    c.control.reset();
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw_errno("socketpair");
  unique_fd ours(sv[0]);
  unique_fd theirs(sv[1]);
  auto l = spawn_self("PACTOR_FORKSERVER_FD", theirs.get(), {}, false,
                      "pactor-forksrv");
  c.control = std::move(ours);
  c.server = l.pid;
  c.server_pidfd = std::move(l.pidfd);
}

} // namespace

void forkserver_shutdown() noexcept {
  auto& c = client();
  std::lock_guard lk(c.mu);
  stop_server_locked(c);
}

void forkserver_forget_after_fork() noexcept {
  auto& c = client();
  new (&c.mu) std::mutex;
  c.control.release(); // already closed in the child
  c.server_pidfd.release();
  c.server = 0;
}

launched launch_forkserver(process_state& s, std::span<const std::byte> boot) {
  for (int fd : s.pass_fds)
    if (fd < 0 || ::fcntl(fd, F_GETFD) < 0)
      throw std::invalid_argument("pactor: pass_fds holds fd "
                                  + std::to_string(fd) + ", which is not open");
  auto memfd = make_memfd("pactor-bootstrap", boot);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw_errno("socketpair");
  unique_fd status(sv[0]);
  unique_fd status_theirs(sv[1]);

  request_header req{};
  req.magic = request_magic;
  req.nfds = static_cast<std::uint32_t>(s.pass_fds.size());
  std::vector<int> fds{status_theirs.get(), memfd.get()};
  for (std::size_t i = 0; i < s.pass_fds.size(); ++i) {
    req.targets[i] = s.pass_fds[i];
    fds.push_back(s.pass_fds[i]);
  }
  auto size = offsetof(request_header, targets) + std::size_t{req.nfds} * 4;
  auto& c = client();
  {
    std::lock_guard lk(c.mu);
    for (int attempt = 0;; ++attempt) {
      ensure_server_locked(c);
      int err = send_with_fds(
        c.control.get(), {reinterpret_cast<const std::byte*>(&req), size}, fds);
      if (err == 0)
        break;
      if ((err != EPIPE && err != ECONNRESET) || attempt > 0)
        throw_errno(err, "send to the forkserver");
      stop_server_locked(c); // it died: restart it once
    }
  }
  status_theirs.reset();
  memfd.reset();
  // The reply: the pid, with a pidfd attached. A healthy server answers in
  // well under a millisecond; a dead one closes the socket.
  if (!poll_in(status.get(), 30000))
    throw std::runtime_error("pactor: the forkserver did not answer in 30 s");
  spawn_reply reply{};
  std::vector<unique_fd> got;
  auto n = recv_with_fds(
    status.get(), {reinterpret_cast<std::byte*>(&reply), sizeof reply}, got);
  if (n != static_cast<ssize_t>(sizeof reply))
    throw std::runtime_error(
      "pactor: the forkserver could not start the process (it died, or "
      "fork failed there)");
  launched out;
  out.pid = reply.pid;
  if (!got.empty())
    out.pidfd = std::move(got.front());
  out.status = std::move(status);
  return out;
}

void start_forkserver_now() {
  auto& c = client();
  std::lock_guard lk(c.mu);
  ensure_server_locked(c);
}

} // namespace pactor::detail

namespace pactor {

void start_forkserver() {
  if (!initialized())
    throw std::logic_error("pactor::start_forkserver: call "
                           "pactor::init(argc, argv) first in main");
  detail::start_forkserver_now();
}

} // namespace pactor

namespace pactor {

void stop_forkserver() noexcept {
  detail::forkserver_shutdown();
}

} // namespace pactor
