// An outside project using the installed pactor package.

#include <pactor/pactor.hpp>

#include <cstdio>

static int work(int x) {
  return x - 42;
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::process p(pactor::with_spawn, work, 42);
  p.start();
  p.join();
  std::printf("consumer: hello from %s, exit %d\n", p.name().c_str(),
              p.exitcode().value_or(-1000));
  return p.exitcode() == 0 ? 0 : 1;
}
