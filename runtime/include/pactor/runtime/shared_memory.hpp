// Named shared memory (Python's multiprocessing.shared_memory.SharedMemory):
// a segment in /dev/shm that unrelated processes attach to by name, removed
// when its creator's process tree has ended, even after a crash.

#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace pactor {

/// Options for shared_memory::create.
struct shared_memory_options {
  /// Registers the segment with this process tree's resource tracker, which
  /// removes it once every process that holds the tracker has exited (also
  /// when they crash). false: the segment lives until someone unlinks it.
  bool track = true;
};

/// A named shared memory segment, mapped read-write. The mapping stays valid
/// after unlink() (as with any file), until close() or destruction.
///
/// Example:
///
///     auto shm = pactor::shared_memory::create(1024);  // name made up
///     std::memcpy(shm.buf().data(), "hi", 2);
///     // another process: auto same = pactor::shared_memory::attach(name);
///     shm.unlink();                                    // when done
class shared_memory {
public:
  /// Creates a new segment of `size` bytes (> 0), mode 0600. An empty `name`
  /// makes up a fresh one ("pactor_" + 16 hex digits). Throws
  /// std::invalid_argument for a bad name or size, std::system_error (EEXIST)
  /// if the name is taken.
  static shared_memory create(std::size_t size, std::string name = {},
                              shared_memory_options opts = {});
  /// Maps the existing segment `name`. Throws std::system_error (ENOENT) if
  /// there is none.
  static shared_memory attach(std::string name);

  shared_memory() = default;

  /// The name, without a leading slash (as Python's SharedMemory.name).
  [[nodiscard]] const std::string& name() const noexcept;
  /// Size in bytes.
  [[nodiscard]] std::size_t size() const noexcept;
  /// The mapped bytes (empty after close()).
  [[nodiscard]] std::span<std::byte> buf() const noexcept;

  /// Unmaps this handle's view (other handles and processes keep theirs).
  void close() noexcept;
  /// Removes the name (the memory goes once nobody maps it) and stops
  /// tracking it. Throws std::system_error (ENOENT) if it is already gone.
  void unlink();

private:
  struct state;
  std::shared_ptr<state> s_;
};

namespace detail {
/// Closes this process's connection to the shared memory tracker (tests:
/// lets the tracker finish once no process holds it).
void shared_memory_tracker_detach() noexcept;
} // namespace detail

} // namespace pactor
