// Test hygiene: every test binary is a child subreaper, and checks that a
// test leaves no process, zombie or /dev/shm entry behind.

#pragma once

#include <pactor/runtime/process.hpp>

#include <ostream>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pactor_test {

/// A direct child of this process (after reparenting to us, the subreaper).
struct child_info {
  pid_t pid;
  char state; // 'Z' for a zombie
  std::string comm;
};

/// Lists this process's children, without the forkserver.
std::vector<child_info> leftover_children();

/// Kills and reaps every child (the forkserver too with `all`); returns what
/// was found.
std::vector<child_info> kill_leftovers(bool all);

/// Describes children for an error message.
std::string describe(const std::vector<child_info>& kids);

/// Per-test fixture: fails the test if it leaves a child or zombie behind
/// (and cleans up, so the next test starts clean).
struct no_leftovers {
  no_leftovers() = default;
  ~no_leftovers() noexcept(false);
};

/// Called from main: become a subreaper, remember /dev/shm.
void install_hygiene();

} // namespace pactor_test

namespace pactor {
// Lets Boost.Test print start methods in data-driven test names.
inline std::ostream& operator<<(std::ostream& os, start_method m) {
  return os << to_string(m);
}
} // namespace pactor
