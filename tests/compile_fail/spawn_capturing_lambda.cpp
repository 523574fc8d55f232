// Built by CTest: must fail to compile, naming the rule (a capturing lambda
// cannot be started with spawn). With PACTOR_CONTROL_CASE it must compile.

#include <pactor/runtime/process.hpp>

int main() {
  int captured = 42;
#ifdef PACTOR_CONTROL_CASE
  pactor::process p(
    pactor::with_spawn, [](int x) { return x; }, captured);
#else
  pactor::process p(pactor::with_spawn, [captured] { return captured; });
#endif
  p.start();
  p.join();
}
