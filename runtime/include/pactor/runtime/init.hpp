// pactor::init: the first line of main in programs that use pactor.

#pragma once

namespace pactor {

/// Must be the first statement of main in a program that uses the spawn or
/// forkserver start methods. In a process started by spawn (or in the
/// forkserver), it runs the child's target, or the server, and exits: such a
/// process never runs the rest of main. In the program itself it records argv
/// and returns.
///
/// Example:
///
///     int main(int argc, char** argv) {
///       pactor::init(argc, argv);
///       ...
///     }
void init(int argc, char** argv);

/// Returns whether init() has run in this process.
[[nodiscard]] bool initialized() noexcept;

} // namespace pactor
