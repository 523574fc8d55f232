// Every start method, for data-driven tests, and a helper that builds a
// process with a method chosen at run time.

#pragma once

#include <pactor/runtime/process.hpp>

namespace pactor_test {

inline const pactor::start_method all_methods[]
  = {pactor::start_method::fork, pactor::start_method::spawn,
     pactor::start_method::forkserver};

/// Returns a process running f(args...) with start method `m`.
template <class F, class... A>
pactor::process make(pactor::start_method m, F f, A... args) {
  switch (m) {
  case pactor::start_method::fork:
    return pactor::process(pactor::with_fork, f, args...);
  case pactor::start_method::spawn:
    return pactor::process(pactor::with_spawn, f, args...);
  case pactor::start_method::forkserver:
    break;
  }
  return pactor::process(pactor::with_forkserver, f, args...);
}

} // namespace pactor_test
