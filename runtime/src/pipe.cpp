// Pipes: one ring per direction for the data, a socketpair for wake-ups and
// for noticing that the peer is gone. See docs/design/pipe.md.

#include <pactor/runtime/pipe.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace pactor::detail {

namespace {
constexpr std::uint64_t flags_magic = 0x6570697072747070ULL; // "pptrpipe"
} // namespace

struct pipe_flags {
  std::uint64_t magic;
  // waiting[dir][role]: dir = the end that writes that direction's ring;
  // role 0 = its reader waits for data, 1 = its writer waits for space.
  alignas(64) std::atomic<std::uint32_t> waiting[2][2];
};

namespace {

std::shared_ptr<int> own_fd(int fd) {
  return std::shared_ptr<int>(new int(fd), [](int* p) {
    if (*p >= 0) {
      unregister_inheritable_fd(*p);
      ::close(*p);
    }
    delete p;
  });
}

} // namespace

std::pair<pipe_end, pipe_end> pipe_end::create(bool duplex,
                                               const pipe_options& opts) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    throw_errno("socketpair");
  auto seg = std::make_shared<segment>(segment::create(4096, "pactor-pipe"));
  auto* flags = new (seg->data()) pipe_flags{};
  flags->magic = flags_magic;
  ring_options ro{opts.capacity_bytes, 0};
  pipe_end a;
  pipe_end b;
  a.index_ = 0;
  b.index_ = 1;
  a.flags_seg_ = b.flags_seg_ = seg;
  a.flags_ = b.flags_ = flags;
  // Direction 1 (b writes, a reads) always exists; direction 0 with duplex.
  auto r1 = ring::create(ro);
  r1.spin(opts.spin);
  a.in_ = r1;
  b.out_ = r1;
  if (duplex) {
    auto r0 = ring::create(ro);
    r0.spin(opts.spin);
    a.out_ = r0;
    b.in_ = r0;
  }
  register_inheritable_fd(sv[0]);
  register_inheritable_fd(sv[1]);
  a.sock_ = own_fd(sv[0]);
  b.sock_ = own_fd(sv[1]);
  return {std::move(a), std::move(b)};
}

pipe_end pipe_end::attach(std::span<const int, packed_ints> f) {
  const int index = f[0];
  const int sock = f[1];
  const int flags = f[2];
  pipe_end e;
  e.index_ = index;
  e.flags_seg_ = std::make_shared<segment>(segment::attach(flags));
  e.flags_ = static_cast<pipe_flags*>(e.flags_seg_->data());
  if (e.flags_->magic != flags_magic)
    throw std::invalid_argument("pactor: not a pactor pipe");
  if (f[3] >= 0)
    e.in_ = ring::attach({f[3], f[4], f[5]});
  if (f[6] >= 0)
    e.out_ = ring::attach({f[6], f[7], f[8]});
  // Adopt the passed fd itself (not a copy): a close() in this process must
  // really close it, or the peer would never see end of file.
  if (::fcntl(sock, F_SETFD, FD_CLOEXEC) != 0)
    throw_errno("fcntl on a pipe socket");
  register_inheritable_fd(sock);
  e.sock_ = own_fd(sock);
  return e;
}

void pipe_end::collect_fds(std::span<int, packed_ints> out) const noexcept {
  out[0] = index_;
  out[1] = sock_ ? *sock_ : -1;
  out[2] = flags_seg_ ? flags_seg_->fd() : -1;
  ring_fds none{-1, -1, -1};
  auto in = in_ ? in_->fds() : none;
  auto o = out_ ? out_->fds() : none;
  std::copy(in.begin(), in.end(), out.begin() + 3);
  std::copy(o.begin(), o.end(), out.begin() + 6);
}

void pipe_end::arm_reader() const noexcept {
  flags_->waiting[1 - index_][0].store(1, std::memory_order_seq_cst);
}

bool pipe_end::drain_wakes() const noexcept {
  char buf[64];
  for (;;) {
    auto got = ::recv(*sock_, buf, sizeof buf, MSG_DONTWAIT);
    if (got == 0)
      return false;
    if (got < 0)
      return true;
  }
}

void pipe_end::check_open() const {
  if (!sock_ || *sock_ < 0)
    throw std::logic_error("pactor::connection: this end is closed");
}

void pipe_end::close() noexcept {
  if (sock_ && *sock_ >= 0) {
    unregister_inheritable_fd(*sock_);
    ::close(*sock_);
    *sock_ = -1;
  }
}

bool pipe_end::closed() const noexcept {
  return !sock_ || *sock_ < 0;
}

void pipe_end::notify(int dir, int role) noexcept {
  auto& flag = flags_->waiting[dir][role];
  if (flag.load(std::memory_order_relaxed) != 0
      && flag.exchange(0, std::memory_order_acq_rel) != 0) {
    char c = 'w';
    [[maybe_unused]] auto n
      = ::send(*sock_, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

bool pipe_end::wait(bool for_write, std::size_t size, wait_limit& limit) {
  auto& r = for_write ? *out_ : *in_;
  auto ready = [&] { return for_write ? r.writable(size) : r.readable(); };
  if (ready())
    return true;
  if (limit.none_allowed())
    return false;
  if (r.spin_until_ready(for_write, size))
    return true;
  int dir = for_write ? index_ : 1 - index_;
  auto& flag = flags_->waiting[dir][for_write ? 1 : 0];
  const auto& deadline = limit.deadline();
  for (;;) {
    flag.store(1, std::memory_order_seq_cst);
    if (ready())
      return true;
    int wait_ms = -1;
    if (deadline) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline
                                                               - steady::now());
      if (left.count() <= 0)
        return ready();
      wait_ms = static_cast<int>(std::min<std::int64_t>(left.count(), 1000000));
    }
    pollfd p{*sock_, POLLIN | POLLRDHUP, 0};
    int n = ::poll(&p, 1, wait_ms);
    if (n < 0 && errno != EINTR)
      throw_errno("poll on a pipe");
    bool gone = false;
    if (n > 0) {
      if ((p.revents & POLLIN) != 0) {
        char buf[64];
        for (;;) {
          auto got = ::recv(*sock_, buf, sizeof buf, MSG_DONTWAIT);
          if (got == 0)
            gone = true;
          if (got <= 0)
            break;
        }
      }
      if ((p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0)
        gone = true;
    }
    if (ready())
      return true;
    if (gone) {
      flag.store(0, std::memory_order_relaxed);
      if (for_write)
        throw broken_pipe();
      throw eof_error();
    }
  }
}

void pipe_end::send(std::size_t size, fn_ref<void(std::byte*)> write) {
  check_open();
  if (!out_)
    throw std::logic_error("pactor::connection::send: this end only receives");
  for (;;) {
    auto st = out_->put(size, write, wait_limit::none());
    if (st == ring_status::ok)
      break;
    auto forever = wait_limit::forever();
    wait(true, size, forever);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  notify(index_, 0);
}

bool pipe_end::recv(fn_ref<void(std::span<const std::byte>)> read,
                    wait_limit limit) {
  check_open();
  if (!in_)
    throw std::logic_error("pactor::connection::recv: this end only sends");
  for (;;) {
    bool got = false;
    auto wrapped = [&](std::span<const std::byte> payload) {
      got = true;
      read(payload);
    };
    try {
      in_->get(wrapped, wait_limit::none());
    } catch (...) {
      std::atomic_thread_fence(std::memory_order_seq_cst);
      notify(1 - index_, 1);
      throw;
    }
    if (got) {
      std::atomic_thread_fence(std::memory_order_seq_cst);
      notify(1 - index_, 1);
      return true;
    }
    if (!wait(false, 0, limit))
      return false;
  }
}

bool pipe_end::poll(wait_limit limit) {
  check_open();
  if (!in_)
    throw std::logic_error("pactor::connection::poll: this end only sends");
  try {
    return wait(false, 0, limit);
  } catch (const eof_error&) {
    return true; // Python: poll is true at end of file; recv then raises
  }
}

} // namespace pactor::detail
