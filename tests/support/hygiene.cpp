#include "hygiene.hpp"

#include <pactor/runtime/shared_memory.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <dirent.h>
#include <fstream>
#include <iterator>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pactor_test {

namespace {

std::set<std::string> shm_snapshot;

std::set<std::string> list_dev_shm() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): one thread per DIR stream
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..")
        out.insert(n);
    }
    ::closedir(d);
  }
  return out;
}

std::vector<child_info> children(bool with_forkserver) {
  std::vector<child_info> out;
  pid_t self = ::getpid();
  DIR* d = ::opendir("/proc");
  if (d == nullptr)
    return out;
  // Each DIR stream is used by one thread only, which readdir allows.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  while (auto* e = ::readdir(d)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0)
      continue;
    std::ifstream in("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(in, line))
      continue;
    auto open = line.find('(');
    auto close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    std::istringstream rest(line.substr(close + 2));
    char state = '?';
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != self)
      continue;
    auto comm = line.substr(open + 1, close - open - 1);
    // The forkserver and the shared_memory tracker outlive single tests.
    if (!with_forkserver
        && (comm == "pactor-forksrv" || comm == "pactor-shmtrk"))
      continue;
    out.push_back({pid, state, comm});
  }
  ::closedir(d);
  return out;
}

// Waits (bounded) for child `pid` to exit and reaps it.
void wait_for_exit(pid_t pid, std::chrono::seconds limit) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0)
    return;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count() * 1000)) == 1) {
    int st;
    ::waitpid(pid, &st, 0);
  }
  ::close(fd);
}

} // namespace

std::vector<child_info> leftover_children() {
  return children(false);
}

std::vector<child_info> kill_leftovers(bool all) {
  auto found = children(all);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // Children die; their children are reparented to us: repeat until none.
  for (auto kids = found; !kids.empty(); kids = children(all)) {
    for (auto& k : kids)
      ::kill(k.pid, SIGKILL);
    for (auto& k : kids) {
      int st;
      while (::waitpid(k.pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
    if (std::chrono::steady_clock::now() > deadline)
      break;
  }
  return found;
}

std::string describe(const std::vector<child_info>& kids) {
  std::string s;
  for (auto& k : kids)
    s += " " + std::to_string(k.pid) + "(" + k.comm + "," + k.state + ")";
  return s;
}

no_leftovers::~no_leftovers() noexcept(false) {
  auto left = kill_leftovers(false);
  if (!left.empty())
    BOOST_ERROR("the test left processes behind:" << describe(left));
}

namespace {

struct module_hygiene {
  module_hygiene() = default;
  ~module_hygiene() {
    pactor::stop_forkserver();
    // The tracker removes what it holds once nobody holds it: let it finish.
    pactor::detail::shared_memory_tracker_detach();
    for (auto& k : children(true))
      if (k.comm == "pactor-shmtrk")
        wait_for_exit(k.pid, std::chrono::seconds(10));
    auto left = kill_leftovers(true);
    if (!left.empty())
      BOOST_ERROR("the suite left processes behind:" << describe(left));
    auto now = list_dev_shm();
    std::vector<std::string> added;
    std::set_difference(now.begin(), now.end(), shm_snapshot.begin(),
                        shm_snapshot.end(), std::back_inserter(added));
    for (auto& n : added)
      BOOST_ERROR("the suite left /dev/shm/" << n << " behind");
  }
};

} // namespace

BOOST_TEST_GLOBAL_FIXTURE(module_hygiene);

void install_hygiene() {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  shm_snapshot = list_dev_shm();
}

} // namespace pactor_test
