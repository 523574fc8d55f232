// The pool under a chaos monkey: a process SIGKILLs a random worker every
// few milliseconds (at any instruction: inside a task, inside the rings'
// put and get, while flushing results) during a long map and a long
// imap_unordered. With retries, every result must still be right, and no
// call may hang.

#include <pactor/runtime/pool.hpp>
#include <pactor/runtime/semaphore.hpp>
#include <pactor/runtime/value.hpp>

#include "hygiene.hpp"
#include "inputs.hpp"
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;

namespace {

volatile long sink = 0;

// About 3 us of work, so that a map of 200,000 lasts a few hundred ms.
long work(int x) {
  unsigned long acc = static_cast<unsigned long>(x);
  for (int i = 0; i < 600; ++i)
    acc = (acc * 6364136223846793005UL + 1442695040888963407UL) ^ (acc >> 13);
  sink = static_cast<long>(acc); // keeps the loop
  return static_cast<long>(x) * 2;
}

/// The pids of `parent`'s children whose name starts with "pool".
std::vector<pid_t> pool_workers_of(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr)
    return out;
  while (auto* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0)
      continue;
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(f, stat);
    auto open = stat.find('(');
    auto close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    auto comm = stat.substr(open + 1, close - open - 1);
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2)
      continue;
    if (ppid == parent && state != 'Z' && comm.rfind("pool", 0) == 0)
      out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

/// Kills a random worker of this process every `every` until `stop` is
/// set; counts the kills in `kills`.
pactor::process start_monkey(pactor::event stop, pactor::value<int> kills,
                             std::chrono::milliseconds every) {
  pactor::process p(pactor::with_fork, [stop, kills, every]() mutable {
    std::mt19937 rng(12345);
    const pid_t parent = ::getppid();
    while (!stop.wait(every)) {
      auto pids = pool_workers_of(parent);
      if (pids.empty())
        continue;
      ::kill(pids[rng() % pids.size()], SIGKILL);
      kills.update([](int& n) { ++n; });
    }
    return 0;
  });
  p.start();
  return p;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(pool_chaos, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(map_and_imap_unordered_lose_nothing_under_random_kills) {
  pactor::pool p(2, {.retries = 100000});
  pactor::event stop;
  pactor::value<int> kills(0);
  auto monkey = start_monkey(stop, kills, 2ms);
  struct stop_monkey { // also when a check throws
    pactor::event& stop;
    pactor::process& monkey;
    ~stop_monkey() {
      stop.set();
      if (!monkey.join(std::chrono::seconds(10)))
        monkey.kill();
      (void)monkey.join(std::chrono::seconds(10));
    }
  } guard{stop, monkey};

  const int n = 400000;
  auto got = p.map(work, pool_test::upto(n), 64);
  BOOST_REQUIRE_EQUAL(got.size(), static_cast<std::size_t>(n));
  int wrong = 0;
  for (int i = 0; i < n; ++i)
    wrong += got[static_cast<std::size_t>(i)] != 2L * i ? 1 : 0;
  BOOST_TEST(wrong == 0);

  long sum = 0;
  std::size_t count = 0;
  auto it = p.imap_unordered(work, pool_test::upto(n), 16);
  while (auto v = it.next(60s)) {
    sum += *v;
    ++count;
  }
  BOOST_TEST(count == static_cast<std::size_t>(n));
  BOOST_TEST(sum == static_cast<long>(n) * (n - 1));

  stop.set();
  BOOST_REQUIRE(monkey.join(10s));
  BOOST_TEST(monkey.exitcode().value_or(-1) == 0);
  BOOST_TEST_MESSAGE(
    "workers killed: " << kills.load() << ", started: " << p.workers_started());
  BOOST_TEST(kills.load() >= 10); // the monkey really was at work
  // (A dying worker can be hit twice before it is gone: kills >= deaths.)
  BOOST_TEST(p.workers_started() >= 12U); // at least 10 were replaced
}

BOOST_AUTO_TEST_SUITE_END()
