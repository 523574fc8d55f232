// Tests for pactor::process under every start method.

#include <pactor/runtime/init.hpp>
#include <pactor/runtime/process.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <msgpack.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <mutex>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace bdata = boost::unit_test::data;
namespace utf = boost::unit_test;
using namespace std::chrono_literals;
using pactor::start_method;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

// A pipe whose fds are closed with the object; both ends CLOEXEC (pass_fds
// makes the child's copy inheritable).
struct test_pipe {
  int r = -1;
  int w = -1;
  test_pipe() {
    int fds[2];
    BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~test_pipe() {
    close_write();
    if (r >= 0)
      ::close(r);
  }
  void close_write() {
    if (w >= 0)
      ::close(w);
    w = -1;
  }
  // Reads until EOF or `timeout`; fails the test on timeout.
  std::string read_all(std::chrono::milliseconds timeout = 10s) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      pollfd p{r, POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count())));
      if (n == 0) {
        BOOST_ERROR("timed out reading from a child");
        return out;
      }
      char buf[256];
      auto got = ::read(r, buf, sizeof buf);
      if (got <= 0)
        return out;
      out.append(buf, static_cast<std::size_t>(got));
    }
  }
  // Reads exactly `n` bytes, or fails the test on timeout/EOF.
  std::string read_n(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      pollfd p{r, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count())))
          <= 0) {
        BOOST_ERROR("timed out reading from a child");
        return out;
      }
      char buf[256];
      auto got = ::read(r, buf, std::min(sizeof buf, n - out.size()));
      if (got <= 0) {
        BOOST_ERROR("EOF reading from a child");
        return out;
      }
      out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  }
};

void write_str(int fd, const std::string& s) {
  [[maybe_unused]] auto n = ::write(fd, s.data(), s.size());
}

// --- targets (free functions, so that every start method can run them) ---

void do_nothing() {
}

int return_code(int code) {
  return code;
}

[[noreturn]] void block_forever() {
  for (;;)
    ::pause();
}

void announce_then_block(int fd) {
  write_str(fd, "r");
  block_forever();
}

int call_pactor_exit(int code) {
  pactor::exit(code);
}

void throw_from_target(int err_fd) {
  ::dup2(err_fd, 2);
  throw std::runtime_error("boom");
}

void crash_with_segv() {
  std::raise(SIGSEGV);
}

struct point {
  int x = 0;
  std::string label;
  MSGPACK_DEFINE(x, label)
};

int check_arguments(const std::string& s, const std::vector<int>& v,
                    const point& p, std::optional<int> o) {
  bool ok = s == "bob" && v == std::vector<int>{1, 2, 3} && p.x == 4
            && p.label == "four" && o == 5;
  return ok ? 0 : 1;
}

int fd_state(int fd) {
  return ::fcntl(fd, F_GETFD) >= 0 ? 10 : 20;
}

int stdin_is_dev_null() {
  struct stat in {};
  struct stat null {};
  if (::fstat(0, &in) != 0 || ::stat("/dev/null", &null) != 0)
    return 2;
  return in.st_rdev == null.st_rdev ? 0 : 1;
}

int signal_state_is_default() {
  for (int sig : {SIGTERM, SIGINT, SIGSEGV, SIGUSR1, SIGPIPE}) {
    struct sigaction sa {};
    ::sigaction(sig, nullptr, &sa);
    if (sa.sa_handler != SIG_DFL)
      return sig;
  }
  sigset_t mask;
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  return ::sigismember(&mask, SIGUSR2) ? 100 : 0;
}

void report_identity(int fd) {
  auto me = pactor::current_process();
  auto parent = pactor::parent_process();
  std::string s = me.name + "|" + std::to_string(me.pid == ::getpid()) + "|"
                  + (parent ? parent->name + "|" + std::to_string(parent->pid)
                            : std::string("none"));
  pactor::process gc(pactor::with_fork, do_nothing);
  s += "|" + gc.name();
  write_str(fd, s);
}

void start_grandchild_then_block(int fd) {
  pactor::process gc(pactor::with_fork, block_forever);
  gc.start();
  write_str(fd, std::to_string(gc.pid()) + "\n");
  block_forever();
}

void start_daemon_grandchild_and_return(int fd) {
  pactor::process gc(pactor::with_fork, block_forever);
  gc.daemon(true);
  gc.start();
  write_str(fd, std::to_string(gc.pid()) + "\n");
}

int daemon_tries_to_start_a_child() {
  try {
    pactor::process(pactor::with_fork, do_nothing).start();
    return 1;
  } catch (const std::logic_error&) {
    return 7;
  }
}

bool pid_exits_within(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0)
    return errno == ESRCH; // already gone
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return n == 1;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(process, pactor_test::no_leftovers)

BOOST_DATA_TEST_CASE(exitcode_reports_the_target_return_value,
                     bdata::make(all_methods), m) {
  auto p = make(m, return_code, 3);
  BOOST_CHECK(p.method() == m);
  BOOST_CHECK(!p.exitcode());
  p.start();
  BOOST_CHECK(p.pid() > 0);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 3);
  BOOST_CHECK(!p.is_alive());
}

BOOST_DATA_TEST_CASE(a_void_target_exits_with_zero, bdata::make(all_methods),
                     m) {
  auto p = make(m, do_nothing);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(pactor_exit_sets_the_exit_code, bdata::make(all_methods),
                     m) {
  auto p = make(m, call_pactor_exit, 42);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 42);
}

BOOST_DATA_TEST_CASE(exitcode_reports_the_killing_signal,
                     bdata::make(all_methods), m) {
  test_pipe ready;
  auto p = make(m, announce_then_block, ready.w);
  p.pass_fds({ready.w});
  p.start();
  BOOST_REQUIRE_EQUAL(ready.read_n(1), "r");
  BOOST_CHECK(p.is_alive());
  BOOST_CHECK(!p.exitcode());
  BOOST_CHECK(!p.join(20ms)); // still running
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), -SIGKILL);
  BOOST_CHECK(!p.is_alive());
  p.kill(); // a no-op once it has exited
}

BOOST_DATA_TEST_CASE(terminate_sends_sigterm, bdata::make(all_methods), m) {
  test_pipe ready;
  auto p = make(m, announce_then_block, ready.w);
  p.pass_fds({ready.w});
  p.start();
  BOOST_REQUIRE_EQUAL(ready.read_n(1), "r");
  p.terminate();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), -SIGTERM);
}

BOOST_DATA_TEST_CASE(a_crash_is_reported_not_swallowed_by_the_test_framework,
                     bdata::make(all_methods), m) {
  // Boost.Test installs a SIGSEGV handler in this process; the child must
  // start with the default one and die of the signal.
  auto p = make(m, crash_with_segv);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), -SIGSEGV);
}

BOOST_DATA_TEST_CASE(an_uncaught_exception_exits_1_with_a_message,
                     bdata::make(all_methods), m) {
  test_pipe err;
  auto p = make(m, throw_from_target, err.w);
  p.pass_fds({err.w});
  p.name("thrower");
  p.start();
  err.close_write();
  auto text = err.read_all();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 1);
  BOOST_CHECK_MESSAGE(text.find("Process thrower (pid ") != std::string::npos
                        && text.find("uncaught std::runtime_error: boom")
                             != std::string::npos,
                      "stderr was: " << text);
}

BOOST_DATA_TEST_CASE(arguments_reach_the_child, bdata::make(all_methods), m) {
  auto p
    = make(m, check_arguments, std::string("bob"), std::vector<int>{1, 2, 3},
           point{4, "four"}, std::optional<int>(5));
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(fds_are_not_inherited_unless_passed,
                     bdata::make(all_methods), m) {
  test_pipe not_passed;
  // Make it inheritable, as a careless parent would.
  ::fcntl(not_passed.w, F_SETFD, 0);
  auto closed = make(m, fd_state, not_passed.w);
  closed.start();
  test_pipe passed;
  auto open = make(m, fd_state, passed.w);
  open.pass_fds({passed.w});
  open.start();
  BOOST_REQUIRE(closed.join(10s));
  BOOST_REQUIRE(open.join(10s));
  BOOST_CHECK_EQUAL(closed.exitcode().value(), 20);
  BOOST_CHECK_EQUAL(open.exitcode().value(), 10);
}

BOOST_DATA_TEST_CASE(passing_a_closed_fd_is_an_error, bdata::make(all_methods),
                     m) {
  auto p = make(m, do_nothing);
  p.pass_fds({987});
  BOOST_CHECK_THROW(p.start(), std::invalid_argument);
}

BOOST_DATA_TEST_CASE(stdin_is_dev_null_in_the_child, bdata::make(all_methods),
                     m) {
  auto p = make(m, stdin_is_dev_null);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(signal_handlers_and_mask_are_reset,
                     bdata::make(all_methods), m) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction old_term {};
  struct sigaction old_usr1 {};
  ::sigaction(SIGTERM, &ignore, &old_term);
  ::sigaction(SIGUSR1, &ignore, &old_usr1);
  sigset_t block;
  sigset_t old_mask;
  ::sigemptyset(&block);
  ::sigaddset(&block, SIGUSR2);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  auto p = make(m, signal_state_is_default);
  p.start();
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(the_name_is_visible_in_ps, bdata::make(all_methods), m) {
  test_pipe ready;
  auto p = make(m, announce_then_block, ready.w);
  p.pass_fds({ready.w});
  p.name("worker-7");
  p.start();
  BOOST_REQUIRE_EQUAL(ready.read_n(1), "r");
  std::ifstream comm("/proc/" + std::to_string(p.pid()) + "/comm");
  std::string name;
  std::getline(comm, name);
  BOOST_CHECK_EQUAL(name, "worker-7");
  p.kill();
  BOOST_REQUIRE(p.join(10s));
}

BOOST_DATA_TEST_CASE(current_and_parent_process_describe_the_child,
                     bdata::make(all_methods), m) {
  test_pipe out;
  auto p = make(m, report_identity, out.w);
  p.pass_fds({out.w});
  p.start();
  out.close_write();
  auto text = out.read_all();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  auto expected = p.name() + "|1|MainProcess|" + std::to_string(::getpid())
                  + "|" + p.name() + ":1";
  BOOST_CHECK_EQUAL(text, expected);
  BOOST_CHECK_EQUAL(pactor::current_process().name, "MainProcess");
  BOOST_CHECK(!pactor::parent_process());
}

BOOST_DATA_TEST_CASE(a_child_dies_with_its_parent, bdata::make(all_methods),
                     m) {
  test_pipe out;
  auto p = make(m, start_grandchild_then_block, out.w);
  p.pass_fds({out.w});
  p.start();
  std::string line;
  while (line.find('\n') == std::string::npos) {
    auto part = out.read_n(1);
    if (part.empty())
      break;
    line += part;
  }
  pid_t grandchild = std::atoi(line.c_str());
  BOOST_REQUIRE(grandchild > 0);
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK(pid_exits_within(grandchild, 10s));
  // We are the subreaper: the grandchild was reparented to us. Reap it.
  int st;
  ::waitpid(grandchild, &st, 0);
}

BOOST_DATA_TEST_CASE(daemonic_children_are_terminated_when_their_parent_exits,
                     bdata::make(all_methods), m) {
  test_pipe out;
  auto p = make(m, start_daemon_grandchild_and_return, out.w);
  p.pass_fds({out.w});
  p.start();
  auto line = out.read_n(1);
  while (!line.empty() && line.back() != '\n') {
    auto part = out.read_n(1);
    if (part.empty())
      break;
    line += part;
  }
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  pid_t grandchild = std::atoi(line.c_str());
  BOOST_REQUIRE(grandchild > 0);
  BOOST_CHECK(pid_exits_within(grandchild, 1s));
}

BOOST_DATA_TEST_CASE(a_daemonic_process_may_not_start_children,
                     bdata::make(all_methods), m) {
  auto p = make(m, daemon_tries_to_start_a_child);
  p.daemon(true);
  BOOST_CHECK(p.daemon());
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 7);
}

BOOST_DATA_TEST_CASE(buffered_output_is_not_printed_twice,
                     bdata::make(all_methods), m) {
  std::fflush(stdout);
  int saved = ::dup(1);
  int capture = ::memfd_create("stdout-capture", MFD_CLOEXEC);
  ::dup2(capture, 1);
  std::printf("written-before-start\n"); // stays in the stdio buffer
  auto p = make(m, do_nothing);
  p.start();
  bool joined = p.join(10s);
  std::fflush(stdout);
  ::dup2(saved, 1);
  ::close(saved);
  std::string text(4096, '\0');
  auto n = ::pread(capture, text.data(), text.size(), 0);
  ::close(capture);
  text.resize(static_cast<std::size_t>(std::max<ssize_t>(n, 0)));
  BOOST_REQUIRE(joined);
  BOOST_CHECK_EQUAL(text, "written-before-start\n");
}

BOOST_DATA_TEST_CASE(active_children_lists_running_children_only,
                     bdata::make(all_methods), m) {
  test_pipe ready;
  auto running = make(m, announce_then_block, ready.w);
  running.pass_fds({ready.w});
  running.start();
  BOOST_REQUIRE_EQUAL(ready.read_n(1), "r");
  auto done = make(m, do_nothing);
  done.start();
  BOOST_REQUIRE(done.join(10s));
  auto kids = pactor::active_children();
  BOOST_CHECK_EQUAL(kids.size(), 1U);
  BOOST_CHECK(!kids.empty() && kids.front() == running);
  running.kill();
  BOOST_REQUIRE(running.join(10s));
  BOOST_CHECK(pactor::active_children().empty());
}

BOOST_DATA_TEST_CASE(a_dropped_handle_is_reaped_by_active_children,
                     bdata::make(all_methods), m) {
  pid_t pid;
  {
    auto p = make(m, do_nothing);
    p.start();
    pid = p.pid();
  } // the handle is gone; the child is still in the table
  // A process that is reaped no longer exists: poll until active_children
  // has reaped it (bounded).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pactor::active_children().empty()
         && std::chrono::steady_clock::now() < deadline)
    pid_exits_within(pid, 100ms);
  BOOST_CHECK(pactor::active_children().empty());
}

BOOST_DATA_TEST_CASE(misuse_is_a_clear_error, bdata::make(all_methods), m) {
  auto p = make(m, do_nothing);
  BOOST_CHECK_THROW(p.join(), std::logic_error);
  BOOST_CHECK_THROW(p.terminate(), std::logic_error);
  p.start();
  BOOST_CHECK_THROW(p.start(), std::logic_error);
  BOOST_CHECK_THROW(p.name("late"), std::logic_error);
  BOOST_REQUIRE(p.join(10s));
  pactor::process empty;
  BOOST_CHECK_THROW(empty.start(), std::logic_error);
  BOOST_CHECK_EQUAL(empty.pid(), 0);
  BOOST_CHECK_EQUAL(empty.sentinel(), -1);
}

BOOST_DATA_TEST_CASE(the_sentinel_becomes_readable_when_the_child_exits,
                     bdata::make(all_methods), m) {
  auto p = make(m, return_code, 0);
  p.start();
  pollfd pfd{p.sentinel(), POLLIN, 0};
  BOOST_REQUIRE_EQUAL(::poll(&pfd, 1, 10000), 1);
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_AUTO_TEST_CASE(default_names_count_up) {
  pactor::process a(pactor::with_fork, do_nothing);
  pactor::process b(pactor::with_fork, do_nothing);
  BOOST_CHECK(a.name().starts_with("Process-"));
  auto na = std::atoi(a.name().c_str() + 8);
  auto nb = std::atoi(b.name().c_str() + 8);
  BOOST_CHECK_EQUAL(nb, na + 1);
}

BOOST_AUTO_TEST_CASE(fork_runs_a_capturing_lambda) {
  int secret = 17;
  std::string word = "seventeen";
  pactor::process p([secret, word] { return word.size() == 9 ? secret : 0; });
  BOOST_CHECK(p.method() == start_method::fork);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 17);
}

BOOST_AUTO_TEST_CASE(the_default_start_method_is_used_and_can_be_changed) {
  BOOST_CHECK(pactor::get_start_method() == start_method::fork);
  pactor::set_start_method(start_method::spawn);
  pactor::process p(return_code, 5);
  int secret = 1;
  pactor::process capturing([secret] { return secret; });
  pactor::set_start_method(start_method::fork);
  BOOST_CHECK(p.method() == start_method::spawn);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 5);
  // A capturing callable cannot travel to a spawned child.
  BOOST_CHECK_THROW(capturing.start(), std::logic_error);
}

BOOST_AUTO_TEST_CASE(fork_is_refused_while_other_threads_run) {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread t([&] {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return stop; });
  });
  pactor::process refused(pactor::with_fork, do_nothing);
  BOOST_CHECK_EXCEPTION(
    refused.start(), std::logic_error, [](const std::logic_error& e) {
      std::string what = e.what();
      return what.find("spawn") != std::string::npos
             && what.find("forkserver") != std::string::npos;
    });
  pactor::process allowed(pactor::with_fork, return_code, 4);
  allowed.allow_fork_with_threads(true);
  allowed.start();
  pactor::process spawned(pactor::with_spawn, return_code, 6);
  spawned.start();
  {
    std::lock_guard lk(mu);
    stop = true;
  }
  cv.notify_all();
  t.join();
  BOOST_REQUIRE(allowed.join(10s));
  BOOST_REQUIRE(spawned.join(10s));
  BOOST_CHECK_EQUAL(allowed.exitcode().value(), 4);
  BOOST_CHECK_EQUAL(spawned.exitcode().value(), 6);
}

BOOST_AUTO_TEST_CASE(a_killed_forkserver_takes_its_children_and_is_replaced) {
  test_pipe ready;
  pactor::process p(pactor::with_forkserver, announce_then_block, ready.w);
  p.pass_fds({ready.w});
  p.start();
  BOOST_REQUIRE_EQUAL(ready.read_n(1), "r");
  // The server is the child's OS parent (field 4 of its stat).
  std::ifstream stat("/proc/" + std::to_string(p.pid()) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  BOOST_REQUIRE(close != std::string::npos);
  pid_t server = std::atoi(line.c_str() + close + 4);
  BOOST_REQUIRE(server > 0);
  std::ifstream comm("/proc/" + std::to_string(server) + "/comm");
  std::string server_name;
  std::getline(comm, server_name);
  BOOST_CHECK_EQUAL(server_name, "pactor-forksrv");
  ::kill(server, SIGKILL);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), -SIGKILL);
  BOOST_REQUIRE(pid_exits_within(server, 10s));
  // The orphaned child died by its parent-death signal and was reparented to
  // us, the subreaper: reap it.
  BOOST_CHECK(pid_exits_within(p.pid(), 10s));
  int st = 0;
  BOOST_CHECK_EQUAL(::waitpid(p.pid(), &st, 0), p.pid());
  BOOST_CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  // The next forkserver process gets a new server.
  pactor::process q(pactor::with_forkserver, return_code, 9);
  q.start();
  BOOST_REQUIRE(q.join(10s));
  BOOST_CHECK_EQUAL(q.exitcode().value(), 9);
}

BOOST_AUTO_TEST_SUITE_END()
