// init(), the child side of every start method, and who-am-I queries.

#include "internal.hpp"

#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <iostream>
#include <sys/prctl.h>
#include <typeinfo>
#include <unistd.h>

namespace pactor {

namespace detail {

globals_t& globals() {
  // Never destroyed: children and atexit handlers may use it at any point.
  static auto* g = [] {
    auto* p = new globals_t;
    p->current.pid = ::getpid();
    return p;
  }();
  return *g;
}

std::string demangle(const char* name) {
  int status = 0;
  char* s = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && s != nullptr) ? s : name;
  std::free(s);
  return out;
}

namespace {

void flush_all() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

void set_os_name(const std::string& name) noexcept {
  char comm[16] = {};
  name.copy(comm, sizeof comm - 1);
  ::prctl(PR_SET_NAME, comm);
}

} // namespace

void become_child(const std::string& name, bool daemon,
                  const process_info& parent,
                  std::vector<std::uint32_t> identity) {
  auto& g = globals();
  // The parent's lock may have been held by another of its threads at fork
  // time (only with allow_fork_with_threads): start from a fresh mutex.
  new (&g.mu) std::mutex;
  g.current = process_info{name, ::getpid(), daemon};
  g.parent = parent;
  g.identity = std::move(identity);
  g.child_counter = 0;
  g.in_child = true;
  children_forget_after_fork();
  forkserver_forget_after_fork();
  set_os_name(name);
}

int run_target(const std::function<int()>& fn) noexcept {
  int code = 0;
  try {
    code = fn();
  } catch (const exit_request& e) {
    code = e.code;
  } catch (const std::exception& e) {
    auto& me = globals().current;
    std::fprintf(stderr, "Process %s (pid %d): uncaught %s: %s\n",
                 me.name.c_str(), static_cast<int>(me.pid),
                 demangle(typeid(e).name()).c_str(), e.what());
    code = 1;
  } catch (...) {
    auto& me = globals().current;
    std::fprintf(stderr,
                 "Process %s (pid %d): uncaught exception of unknown type\n",
                 me.name.c_str(), static_cast<int>(me.pid));
    code = 1;
  }
  flush_all();
  return code;
}

void child_exit(int code) noexcept {
  cleanup_children();
  flush_all();
  ::_exit(code);
}

void run_bootstrap(int memfd) {
  bootstrap boot;
  trampoline_fn trampoline = nullptr;
  erased_fn function = nullptr;
  try {
    auto bytes = read_whole_fd(memfd);
    ::close(memfd);
    boot = decode_payload<bootstrap>(bytes);
    trampoline
      = reinterpret_cast<trampoline_fn>(resolve_function_ref(boot.trampoline));
    function = resolve_function_ref(boot.function);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pactor: child %d cannot start its target: %s\n",
                 static_cast<int>(::getpid()), e.what());
    flush_all();
    ::_exit(exit_code_bootstrap_failed);
  }
  become_child(boot.name, boot.daemon,
               process_info{boot.parent_name, boot.parent_pid, false},
               boot.identity);
  child_exit(run_target([&] { return trampoline(function, boot.args); }));
}

} // namespace detail

void init(int argc, char** argv) {
  auto& g = detail::globals();
  {
    std::lock_guard lk(g.mu);
    g.initialized = true;
    if (argc > 0 && argv != nullptr && argv[0] != nullptr)
      g.argv0 = argv[0];
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): runs first in main, single-threaded
  if (const char* fs = std::getenv("PACTOR_FORKSERVER_FD")) {
    int fd = std::atoi(fs);
    ::unsetenv("PACTOR_FORKSERVER_FD"); // NOLINT(concurrency-mt-unsafe)
    detail::forkserver_main(fd);
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): runs first in main, single-threaded
  if (const char* sp = std::getenv("PACTOR_SPAWN_FD")) {
    int fd = std::atoi(sp);
    ::unsetenv("PACTOR_SPAWN_FD"); // NOLINT(concurrency-mt-unsafe)
    detail::run_bootstrap(fd);
  }
}

bool initialized() noexcept {
  auto& g = detail::globals();
  std::lock_guard lk(g.mu);
  return g.initialized;
}

void exit(int code) {
  if (detail::globals().in_child)
    throw detail::exit_request{code};
  std::exit(code); // NOLINT(concurrency-mt-unsafe): the caller asked to exit
}

process_info current_process() {
  auto& g = detail::globals();
  std::lock_guard lk(g.mu);
  return g.current;
}

std::optional<process_info> parent_process() {
  auto& g = detail::globals();
  std::lock_guard lk(g.mu);
  return g.parent;
}

} // namespace pactor
