// The state stash of a warm-restart actor: two state slots and one commit
// word in a memfd that the node holds like the mailbox. Design:
// docs/design/warm_restart.md.

#pragma once

#include <pactor/serialization/type_tag.hpp>

#include "internal.hpp" // unique_fd

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace pactor::detail {

/// Crash points of a commit (test builds): the mailbox's own are 121 (the
/// message handed out, not acknowledged) and 122 (acknowledged).
enum stash_crash_point : int {
  crash_stash_written = 141,   // the new state in the spare slot, unpublished
  crash_stash_published = 142, // published, the mailbox not yet acknowledged
};

struct stash_header;

class stash {
public:
  /// A new stash whose slots hold `slot_bytes` each (a memfd: pages are
  /// only allocated as a state fills them).
  static unique_fd create(std::size_t slot_bytes);
  /// Maps the stash behind `fd`. std::invalid_argument if it is not one.
  static stash attach(int fd);

  stash(stash&& o) noexcept;
  stash& operator=(stash&& o) noexcept;
  stash(const stash&) = delete;
  stash& operator=(const stash&) = delete;
  ~stash();

  /// The state last published: its bytes, its type, and the mailbox head
  /// word it goes with (every message before it is reflected in it).
  struct committed {
    std::span<const std::byte> bytes;
    type_tag_t type = 0;
    std::uint64_t ack_word = 0;
    std::uint64_t generation = 0;
  };
  [[nodiscard]] std::optional<committed> last() const noexcept;

  /// Where the next state is written (the slot not published).
  [[nodiscard]] std::span<std::byte> spare() noexcept;
  /// Publishes the `size` bytes written into spare() as the state that goes
  /// with mailbox head word `ack_word`: one atomic store, after which the
  /// caller acknowledges the mailbox up to `ack_word` (a restart that finds
  /// the mailbox behind the stash finishes that acknowledgement).
  void publish(std::size_t size, type_tag_t type, std::uint64_t ack_word);

  [[nodiscard]] std::size_t slot_bytes() const noexcept;

private:
  stash() = default;
  stash_header* h_ = nullptr;
  std::size_t mapped_ = 0;
};

} // namespace pactor::detail
