// Creating children: the fork and spawn start methods and child hygiene.

#include <pactor/runtime/detail/sync.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ; // NOLINT(readability-redundant-declaration)

namespace pactor::detail {

namespace {

int pidfd_open(pid_t pid) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

void close_fds_except(std::span<const int> keep) noexcept {
  unsigned lo = 3;
  for (int fd : keep) {
    if (fd < 3)
      continue;
    auto u = static_cast<unsigned>(fd);
    if (u > lo)
      ::syscall(SYS_close_range, lo, u - 1, 0);
    lo = std::max(lo, u + 1);
  }
  ::syscall(SYS_close_range, lo, ~0U, 0);
}

// Keeps `fds` sorted and unique.
std::vector<int> sorted_unique(std::vector<int> fds) {
  std::sort(fds.begin(), fds.end());
  fds.erase(std::unique(fds.begin(), fds.end()), fds.end());
  return fds;
}

void validate_pass_fds(const std::vector<int>& fds) {
  for (int fd : fds) {
    if (fd < 0)
      throw std::invalid_argument("pactor: pass_fds holds a negative fd");
    if (::fcntl(fd, F_GETFD) < 0)
      throw std::invalid_argument("pactor: pass_fds holds fd "
                                  + std::to_string(fd) + ", which is not open");
  }
}

// Reaps a child that failed before running anything.
void reap_quietly(pid_t pid) noexcept {
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

} // namespace

void prepare_child(const child_setup& s) noexcept {
  // 1. Default signal dispositions and an empty mask.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  // 2. Die with the parent; it may already be gone.
  if (s.parent_death_signal) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != s.expected_parent)
      ::_exit(1);
  }
  // 3. Only the fds we were asked to keep.
  close_fds_except(s.keep);
  for (int fd : s.inheritable)
    ::fcntl(fd, F_SETFD, 0);
  if (!s.keep_stdin) {
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0 && null != 0) {
      ::dup2(null, 0);
      ::close(null);
    }
  }
}

void decode_wait_status(int status, std::optional<int>& exitcode,
                        bool& core_dumped) noexcept {
  if (WIFEXITED(status)) {
    exitcode = WEXITSTATUS(status);
    core_dumped = false;
  } else if (WIFSIGNALED(status)) {
    exitcode = -WTERMSIG(status);
    core_dumped = WCOREDUMP(status);
  }
}

launched launch_fork(process_state& s) {
  validate_pass_fds(s.pass_fds);
  auto keep = s.pass_fds;
  auto registered = inheritable_fds(); // pactor objects' segments
  keep.insert(keep.end(), registered.begin(), registered.end());
  keep = sorted_unique(std::move(keep));
  bool keep_stdin = std::binary_search(keep.begin(), keep.end(), 0);
  auto& g = globals();
  process_info me;
  {
    std::lock_guard lk(g.mu);
    me = g.current;
  }
  std::fflush(nullptr);
  pid_t parent = ::getpid();
  me.pid = parent;
  pid_t pid = ::fork();
  if (pid < 0)
    throw_errno("fork");
  if (pid == 0) {
    prepare_child({parent, true, keep, keep, keep_stdin});
    become_child(s.name, s.daemon, me, s.identity);
    child_exit(run_target(s.fork_fn));
  }
  launched out;
  out.pid = pid;
  out.pidfd = unique_fd(pidfd_open(pid));
  if (!out.pidfd) {
    int err = errno;
    ::kill(pid, SIGKILL);
    reap_quietly(pid);
    throw_errno(err, "pidfd_open");
  }
  return out;
}

launched spawn_self(const char* env_name, int fd, std::span<const int> pass_fds,
                    bool parent_death_signal, const std::string& name) {
  auto& g = globals();
  std::string argv0;
  {
    std::lock_guard lk(g.mu);
    argv0 = g.argv0.empty() ? name : g.argv0;
  }
  // The environment: ours without pactor's own variables, plus env_name=fd.
  std::vector<std::string> env_store;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (std::strncmp(*e, "PACTOR_SPAWN_FD=", 16) != 0
        && std::strncmp(*e, "PACTOR_FORKSERVER_FD=", 21) != 0)
      env_store.emplace_back(*e);
  env_store.push_back(std::string(env_name) + "=" + std::to_string(fd));
  std::vector<char*> envp;
  envp.reserve(env_store.size() + 1);
  for (auto& e : env_store)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> argv{argv0.data(), nullptr};

  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0)
    throw_errno("pipe2");
  unique_fd err_read(err_pipe[0]);
  unique_fd err_write(err_pipe[1]);

  std::vector<int> inheritable(pass_fds.begin(), pass_fds.end());
  inheritable.push_back(fd);
  inheritable = sorted_unique(std::move(inheritable));
  auto keep = inheritable;
  keep.push_back(err_write.get());
  keep = sorted_unique(std::move(keep));
  bool keep_stdin = std::binary_search(keep.begin(), keep.end(), 0);

  std::fflush(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0)
    throw_errno("fork");
  if (pid == 0) {
    prepare_child({parent, parent_death_signal, keep, inheritable, keep_stdin});
    ::execve("/proc/self/exe", argv.data(), envp.data());
    int e = errno;
    [[maybe_unused]] auto n = ::write(err_write.get(), &e, sizeof e);
    ::_exit(127);
  }
  err_write.reset();
  launched out;
  out.pid = pid;
  out.pidfd = unique_fd(pidfd_open(pid));
  int pidfd_err = out.pidfd ? 0 : errno;
  int exec_err = 0;
  ssize_t n;
  do {
    n = ::read(err_read.get(), &exec_err, sizeof exec_err);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    reap_quietly(pid);
    throw_errno(exec_err, "exec of /proc/self/exe");
  }
  if (pidfd_err != 0) {
    ::kill(pid, SIGKILL);
    reap_quietly(pid);
    throw_errno(pidfd_err, "pidfd_open");
  }
  return out;
}

launched launch_spawn(process_state& s, std::span<const std::byte> boot) {
  validate_pass_fds(s.pass_fds);
  auto memfd = make_memfd("pactor-bootstrap", boot);
  return spawn_self("PACTOR_SPAWN_FD", memfd.get(), s.pass_fds, true, s.name);
}

} // namespace pactor::detail
