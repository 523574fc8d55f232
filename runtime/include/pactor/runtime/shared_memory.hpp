// Named shared memory (Python's multiprocessing.shared_memory.SharedMemory):
// a segment in /dev/shm that unrelated processes attach to by name, removed
// when the process that created it exits without unlinking it, even after a
// crash. See docs/design/shared_memory.md.

#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace pactor {

/// Options for shared_memory::create.
struct shared_memory_options {
  /// Registers the segment with the resource tracker, which removes it when
  /// the creating process exits without unlink() (also when it crashes).
  /// false: the segment lives until someone unlinks it.
  bool track = true;
};

/// A named shared memory segment, mapped read-write. The mapping stays valid
/// after unlink() (as with any file), until close() or destruction. Copies
/// of a shared_memory share one mapping.
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

  /// Unmaps the mapping (shared by the copies of this handle; other handles
  /// from attach() and other processes keep theirs).
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
