// Robust process-shared mutexes in their own segments.

#include <pactor/runtime/lock.hpp>

#include "internal.hpp"

#include <cerrno>
#include <stdexcept>
#include <unistd.h>

namespace pactor::detail {

namespace {

constexpr std::uint64_t mutex_magic = 0x78657475726f7470ULL; // "ptorutex"

// Segment layout: [magic u64][owner_died flag u32] ... mutex at 64, extra at
// 128 (the extra area holds a value's T or an array's length + elements).
struct mutex_segment {
  std::uint64_t magic;
  std::uint32_t owner_died; // set by the holder that took over a dead owner
  std::uint32_t reserved;
  alignas(64) pthread_mutex_t mutex;
};
constexpr std::size_t extra_offset = 128;
static_assert(sizeof(mutex_segment) <= extra_offset);

mutex_segment* layout(const std::shared_ptr<segment>& seg) {
  return static_cast<mutex_segment*>(seg->data());
}

} // namespace

shared_mutex_handle::shared_mutex_handle(bool recursive,
                                         std::size_t extra_bytes) {
  auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto size = (extra_offset + extra_bytes + page - 1) / page * page;
  seg_ = std::make_shared<segment>(segment::create(size, "pactor-mutex"));
  auto* l = new (seg_->data()) mutex_segment{};
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (recursive)
    ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  int rc = ::pthread_mutex_init(&l->mutex, &attr);
  ::pthread_mutexattr_destroy(&attr);
  if (rc != 0)
    throw_errno(rc, "pthread_mutex_init");
  l->magic = mutex_magic;
  m_ = &l->mutex;
}

shared_mutex_handle::shared_mutex_handle(std::shared_ptr<segment> seg,
                                         pthread_mutex_t* m)
    : seg_(std::move(seg)), m_(m) {
}

shared_mutex_handle shared_mutex_handle::attach(int fd) {
  auto seg = std::make_shared<segment>(segment::attach(fd));
  if (seg->size() < extra_offset || layout(seg)->magic != mutex_magic)
    throw std::invalid_argument("pactor: fd " + std::to_string(fd)
                                + " is not a pactor mutex, value or array");
  auto* m = &layout(seg)->mutex;
  return {std::move(seg), m};
}

lock_status shared_mutex_handle::acquire(wait_limit limit) {
  bool died = false;
  if (!robust_mutex_lock(m_, limit, 100, &died))
    return lock_status::timeout;
  layout(seg_)->owner_died = died ? 1 : 0;
  return died ? lock_status::acquired_owner_died : lock_status::acquired;
}

void shared_mutex_handle::release() {
  // Only the holder may release. glibc keeps the holder's thread id in the
  // mutex's public __data.__owner; checking it here, rather than relying on
  // unlock's EPERM, keeps a wrong release from touching the mutex at all.
  if (!held_by_caller())
    throw std::logic_error(
      "pactor::mutex::release: the caller does not hold the mutex");
  int rc = ::pthread_mutex_unlock(m_);
  if (rc == EPERM)
    throw std::logic_error(
      "pactor::mutex::release: the caller does not hold the mutex");
  if (rc != 0)
    throw_errno(rc, "pthread_mutex_unlock");
}

bool shared_mutex_handle::held_by_caller() const noexcept {
  return __atomic_load_n(&m_->__data.__owner, __ATOMIC_RELAXED) == cached_tid();
}

bool shared_mutex_handle::previous_owner_died() const noexcept {
  return layout(seg_)->owner_died != 0;
}

std::byte* shared_mutex_handle::extra() const noexcept {
  return static_cast<std::byte*>(seg_->data()) + extra_offset;
}

} // namespace pactor::detail
