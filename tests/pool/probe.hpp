// Shared memory the pool tests' tasks report through (fork pools: the
// workers inherit it), and a killer process that SIGKILLs the worker
// running a given task from outside.

#pragma once

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/semaphore.hpp>
#include <pactor/runtime/value.hpp>

#include <chrono>
#include <csignal>
#include <memory>
#include <sys/types.h>
#include <unistd.h>

namespace pool_test {

/// Created before the pool (fork workers inherit the mappings).
struct probe {
  pactor::value<int> pid{0};  // the worker running the watched task
  pactor::value<int> runs{0}; // how many times the watched task started
  pactor::event started;      // the watched task is running
  pactor::event never;        // never set: a task waits on it to hang
};

inline std::unique_ptr<probe>& the_probe() {
  static std::unique_ptr<probe> p;
  return p;
}

/// Fixture: a fresh probe per test.
struct with_probe {
  with_probe() {
    the_probe() = std::make_unique<probe>();
  }
  ~with_probe() {
    the_probe().reset();
  }
};

/// Called by the watched task: records the worker and how often it ran;
/// returns the number of earlier runs.
inline int announce() {
  auto& p = *the_probe();
  int before = p.runs.update([](int& n) { return n++; });
  p.pid.store(static_cast<int>(::getpid()));
  p.started.set();
  return before;
}

/// A process that waits for the watched task to start, then SIGKILLs the
/// worker running it. Its exit code is 0 when it killed, 1 on timeout.
inline pactor::process start_killer() {
  pactor::process k(pactor::with_fork, [] {
    auto& p = *the_probe();
    if (!p.started.wait(std::chrono::seconds(20)))
      return 1;
    ::kill(p.pid.load(), SIGKILL);
    return 0;
  });
  k.start();
  return k;
}

} // namespace pool_test
