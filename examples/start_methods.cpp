// The same child under each start method, with its pid and the time to
// start and join it.
//
// Python:
//     for method in ('fork', 'spawn', 'forkserver'):
//         ctx = multiprocessing.get_context(method)
//         p = ctx.Process(target=f, args=(method,))
//         p.start(); p.join()

#include <pactor/pactor.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <unistd.h>

void report(const std::string& method) {
  auto me = pactor::current_process();
  std::printf("%-10s child %s (pid %d, parent %d) says hello\n", method.c_str(),
              me.name.c_str(), static_cast<int>(::getpid()),
              static_cast<int>(::getppid()));
}

template <class Tag>
void run(Tag tag) {
  std::string name(pactor::to_string(Tag::value));
  auto t0 = std::chrono::steady_clock::now();
  pactor::process p(tag, report, name);
  p.start();
  p.join();
  auto ms = std::chrono::duration<double, std::milli>(
              std::chrono::steady_clock::now() - t0)
              .count();
  std::printf("%-10s exit code %d, start + join took %.2f ms\n", name.c_str(),
              p.exitcode().value_or(-1000), ms);
  std::fflush(stdout); // keep our lines in order with the children's
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  std::printf("parent pid %d\n", static_cast<int>(::getpid()));
  std::fflush(stdout);
  run(pactor::with_fork);
  run(pactor::with_spawn);
  run(pactor::with_forkserver);
}
