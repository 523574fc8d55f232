// File descriptor helpers: unique_fd, SCM_RIGHTS, memfds, polling.

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

namespace pactor::detail {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = fd;
}

void throw_errno(int err, const char* what) {
  throw std::system_error(err, std::generic_category(),
                          std::string("pactor: ") + what);
}

void throw_errno(const char* what) {
  throw_errno(errno, what);
}

bool poll_in(int fd, std::int64_t timeout_ms) {
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int wait_ms = -1;
    if (timeout_ms >= 0) {
      auto left
        = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now())
            .count();
      wait_ms = static_cast<int>(std::clamp<std::int64_t>(left, 0, 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, wait_ms);
    if (n > 0)
      return true;
    if (n == 0) {
      if (timeout_ms >= 0 && clock::now() >= deadline)
        return false;
      continue;
    }
    if (errno != EINTR)
      throw_errno("poll");
  }
}

int send_with_fds(int sock, std::span<const std::byte> data,
                  std::span<const int> fds) noexcept {
  msghdr msg{};
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
  if (!fds.empty()) {
    if (fds.size() > 253)
      return EINVAL;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    auto* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0)
      return 0;
    if (errno != EINTR)
      return errno;
  }
}

ssize_t recv_with_fds(int sock, std::span<std::byte> buf,
                      std::vector<unique_fd>& fds, int flags) noexcept {
  msghdr msg{};
  iovec iov{buf.data(), buf.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0)
    return -errno;
  for (auto* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    auto count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0)
    return -EMSGSIZE;
  return n;
}

ssize_t next_message_size(int sock, int flags) noexcept {
  ssize_t n;
  do {
    n = ::recv(sock, nullptr, 0, flags | MSG_PEEK | MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

unique_fd make_memfd(const char* name, std::span<const std::byte> bytes) {
  unique_fd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd)
    throw_errno("memfd_create");
  std::size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw_errno("write to memfd");
    }
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

std::vector<std::byte> read_whole_fd(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw_errno("fstat");
  std::vector<std::byte> out(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < out.size()) {
    auto n = ::pread(fd, out.data() + done, out.size() - done,
                     static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      throw_errno("read");
    }
    if (n == 0)
      break;
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

std::uint64_t proc_stat_field(pid_t pid, int n) {
  char path[64];
  if (pid == 0)
    std::snprintf(path, sizeof path, "/proc/self/stat");
  else
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  unique_fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd)
    return 0;
  char buf[1024];
  auto got = ::read(fd.get(), buf, sizeof buf - 1);
  if (got <= 0)
    return 0;
  buf[got] = '\0';
  // Fields after the ')' that ends the name (which may hold spaces) are
  // 3, 4, ...: skip to field n.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr)
    return 0;
  int field = 2;
  for (; *p != '\0' && field < n; ++p)
    if (*p == ' ')
      ++field;
  return std::strtoull(p, nullptr, 10);
}

int thread_count() {
  auto threads = static_cast<int>(proc_stat_field(0, 20));
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer runs one background thread of its own in every process.
  threads -= 1;
#endif
  return std::max(1, threads);
}

bool process_gone(std::int32_t pid, std::uint64_t start_time) {
  if (::kill(pid, 0) != 0 && errno == ESRCH)
    return true;
  auto now = process_start_time(pid);
  return now != 0 && start_time != 0 && now != start_time;
}

} // namespace pactor::detail
