// The state stash: see stash.hpp and docs/design/warm_restart.md.

#include "stash.hpp"

#include <pactor/runtime/detail/sync.hpp> // PACTOR_CRASH_POINT

#include <atomic>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pactor::detail {

namespace {
constexpr std::uint64_t stash_magic = 0x6873617473726f74ULL; // "torstash"
constexpr std::uint32_t stash_version = 1;
constexpr std::size_t stash_header_bytes = 4096;
} // namespace

// Written once by create(), then: a commit writes the spare slot's bytes and
// meta, then `commit` (release); a reader loads `commit` (acquire), then the
// live slot's meta and bytes. Nobody writes the live slot.
struct stash_header {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t reserved;
  std::uint64_t slot_bytes;
  struct slot_meta {
    std::uint64_t ack_word;
    std::uint64_t size;
    std::uint64_t type;
    std::uint64_t generation;
  };
  slot_meta slots[2];
  // (generation << 1) | live slot; 0: nothing committed yet.
  alignas(64) std::atomic<std::uint64_t> commit;
};
static_assert(sizeof(stash_header) <= stash_header_bytes);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

unique_fd stash::create(std::size_t slot_bytes) {
  unique_fd fd(::memfd_create("pactor-stash", MFD_CLOEXEC));
  if (!fd)
    throw_errno("memfd_create for an actor's state stash");
  const auto total = stash_header_bytes + 2 * slot_bytes;
  if (::ftruncate(fd.get(), static_cast<off_t>(total)) != 0)
    throw_errno("ftruncate of an actor's state stash");
  void* p = ::mmap(nullptr, stash_header_bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED)
    throw_errno("mmap of an actor's state stash");
  auto* h = new (p) stash_header{};
  h->magic = stash_magic;
  h->version = stash_version;
  h->slot_bytes = slot_bytes;
  h->commit.store(0, std::memory_order_release);
  ::munmap(p, stash_header_bytes);
  return fd;
}

stash stash::attach(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw_errno("fstat of an actor's state stash");
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < stash_header_bytes)
    throw std::invalid_argument("pactor: not a state stash (too small)");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    throw_errno("mmap of an actor's state stash");
  auto* h = static_cast<stash_header*>(p);
  if (h->magic != stash_magic || h->version != stash_version
      || stash_header_bytes + 2 * h->slot_bytes != size) {
    ::munmap(p, size);
    throw std::invalid_argument("pactor: not a state stash of this version");
  }
  stash s;
  s.h_ = h;
  s.mapped_ = size;
  return s;
}

stash::stash(stash&& o) noexcept : h_(o.h_), mapped_(o.mapped_) {
  o.h_ = nullptr;
  o.mapped_ = 0;
}

stash& stash::operator=(stash&& o) noexcept {
  if (this != &o) {
    if (h_ != nullptr)
      ::munmap(h_, mapped_);
    h_ = o.h_;
    mapped_ = o.mapped_;
    o.h_ = nullptr;
    o.mapped_ = 0;
  }
  return *this;
}

stash::~stash() {
  if (h_ != nullptr)
    ::munmap(h_, mapped_);
}

std::size_t stash::slot_bytes() const noexcept {
  return h_->slot_bytes;
}

namespace {
std::byte* slot_data(stash_header* h, std::uint64_t slot) noexcept {
  return reinterpret_cast<std::byte*>(h) + stash_header_bytes
         + slot * h->slot_bytes;
}
} // namespace

std::optional<stash::committed> stash::last() const noexcept {
  auto c = h_->commit.load(std::memory_order_acquire);
  if (c == 0)
    return std::nullopt;
  auto slot = c & 1;
  const auto& m = h_->slots[slot];
  auto size = std::min<std::uint64_t>(m.size, h_->slot_bytes);
  return committed{{slot_data(h_, slot), static_cast<std::size_t>(size)},
                   m.type,
                   m.ack_word,
                   c >> 1};
}

std::span<std::byte> stash::spare() noexcept {
  auto c = h_->commit.load(std::memory_order_relaxed);
  auto slot = c == 0 ? 0 : (c & 1) ^ 1;
  return {slot_data(h_, slot), static_cast<std::size_t>(h_->slot_bytes)};
}

void stash::publish(std::size_t size, type_tag_t type, std::uint64_t ack_word) {
  auto c = h_->commit.load(std::memory_order_relaxed);
  auto slot = c == 0 ? 0 : (c & 1) ^ 1;
  auto generation = (c >> 1) + 1;
  h_->slots[slot] = {ack_word, size, type, generation};
  PACTOR_CRASH_POINT(crash_stash_written);
  h_->commit.store((generation << 1) | slot, std::memory_order_release);
  PACTOR_CRASH_POINT(crash_stash_published);
}

} // namespace pactor::detail
