// A program that forgot pactor::init: spawn must refuse with a clear error
// instead of re-running main in the child.

#include <pactor/runtime/process.hpp>

#include <cstdio>
#include <stdexcept>

static void noop() {
}

int main() {
  try {
    pactor::process p(pactor::with_spawn, noop);
    p.start();
    p.join();
    std::puts("spawn started without pactor::init");
    return 1;
  } catch (const std::logic_error& e) {
    std::puts(e.what());
    return 0;
  } catch (const std::exception& e) {
    std::printf("unexpected error: %s\n", e.what());
    return 2;
  }
}
