// A pool survives tasks that crash: the task that segfaulted fails alone
// (naming its index, the worker's pid and the signal), a new worker takes
// the dead one's place, and every other task's result arrives. Python's
// Pool.map hangs forever here (CPython issue 96062).

#include <pactor/pactor.hpp>

#include <csignal>
#include <cstdio>
#include <ranges>

namespace {

// A "decoder" that crashes on some inputs.
int decode(int x) {
  if (x % 25 == 13)
    std::raise(SIGSEGV); // as a null pointer dereference would
  return 2 * x;
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::pool p(2);
  int ok = 0;
  int failed = 0;
  auto results = p.imap(decode, std::views::iota(0, 100), 4);
  for (int i = 0; i < 100; ++i) {
    try {
      (void)results.next(std::chrono::seconds(30)).value();
      ++ok;
    } catch (const pactor::worker_died& e) {
      ++failed;
      std::printf("task %zu failed: signal %d\n", e.index(), e.signal());
    }
  }
  std::printf("%d results, %d tasks failed, %zu workers started for 2 "
              "places\n",
              ok, failed, p.workers_started());

  // With retries, a task whose worker dies is run again before it fails.
  pactor::pool patient(2, {.retries = 2});
  try {
    patient.apply(decode, 13);
  } catch (const pactor::worker_died& e) {
    std::printf("%s\n", e.what());
  }
}
