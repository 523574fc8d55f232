// A program that ends with pools still alive: one leaked on the heap, one
// static, one with work in flight. It prints the workers' pids and returns
// 0; check_left_alive.py checks the exit code and that no worker is left.

#include <pactor/pactor.hpp>

#include <cstdio>
#include <ranges>
#ifdef __SANITIZE_ADDRESS__
#  include <sanitizer/lsan_interface.h>
#endif

namespace {
int square(int x) {
  return x * x;
}
int slow(int ms) {
  pactor::event never;
  never.wait(std::chrono::milliseconds(ms));
  return ms;
}
} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  static pactor::pool kept(2);
  auto* leaked = new pactor::pool(2); // NOLINT: never deleted, on purpose
#ifdef __SANITIZE_ADDRESS__
  __lsan_ignore_object(leaked); // the leak is the point of the test
#endif
  auto squares = leaked->map(square, std::views::iota(0, 100));
  (void)kept.map(square, std::views::iota(0, 100));
  (void)leaked->apply_async(slow, 60000); // still running at exit
  std::printf("sum %d\n", squares[99]);
  for (auto* p : {&kept, leaked})
    for (pid_t pid : p->pids())
      std::printf("worker %d\n", static_cast<int>(pid));
  std::fflush(stdout);
  return 0;
}
