// Named shared memory and its resource tracker. See
// docs/design/shared_memory.md.

#include <pactor/runtime/detail/sync.hpp>
#include <pactor/runtime/shared_memory.hpp>

#include "internal.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <random>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

namespace pactor {

namespace {

constexpr std::size_t max_name = 200;
constexpr std::size_t tracker_slots = 8192;

// --- the tracker process (async-signal-safe code only: it is forked from
// a possibly multithreaded process and never execs) -----------------------

void put_str(char*& out, const char* s) noexcept {
  while (*s != '\0')
    *out++ = *s++;
}

void put_num(char*& out, std::size_t n) noexcept {
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  while (k > 0)
    *out++ = tmp[--k];
}

// One registration. A provisional one (sent before shm_open) remembers the
// inode the name had then, so that a creator killed before it could confirm
// or abort never costs another process its segment; a confirmed one
// remembers the inode it created, so that a name unlinked and created again
// by someone else is left alone.
struct tracker_slot {
  int owner; // pidfd of the creating process, -1 = free slot
  pid_t pid; // its pid, to match confirm/abort messages
  bool confirmed;
  ino_t ino; // provisional: inode before (0: none); confirmed: ours
  char name[max_name + 1];
};

void shm_path(char* out, const char* name) noexcept {
  put_str(out, "/dev/shm/");
  put_str(out, name);
  *out = '\0';
}

// Removes the segment of `slot` if it is still the one registered, and
// frees the slot. Returns 1 if it removed one.
std::size_t remove_slot(tracker_slot& slot) noexcept {
  char path[max_name + 16];
  shm_path(path, slot.name);
  std::size_t removed = 0;
  struct stat st {};
  if (::stat(path, &st) == 0) {
    bool ours = slot.confirmed ? st.st_ino == slot.ino : st.st_ino != slot.ino;
    if (ours && ::unlink(path) == 0)
      removed = 1;
  }
  ::close(slot.owner);
  slot.owner = -1;
  return removed;
}

void report(std::size_t removed) noexcept {
  if (removed == 0)
    return;
  char line[160];
  char* p = line;
  put_str(p, "pactor: shared_memory tracker: removed ");
  put_num(p, removed);
  put_str(p, " segment(s) whose creator exited without unlink\n");
  [[maybe_unused]] auto w
    = ::write(2, line, static_cast<std::size_t>(p - line));
}

// A message is one packet: op, the sender's pid (4 bytes), an inode number
// (8 bytes), the name.
//   'R' register (provisional; the sender's pidfd attached; the inode the
//       name had just before, 0 for none, as the sender saw it)
//   'C' confirm (the sender created it)   'A' abort (it did not)
//   'U' the name was unlinked: forget every registration of it
constexpr std::size_t msg_head = 1 + sizeof(pid_t) + sizeof(std::uint64_t);

// Handles one queued message without waiting; false if there was none.
// `open` turns false when every holder of the socket is gone.
bool handle_message(int sock, tracker_slot* slots, bool& open) noexcept {
  char msg[msg_head + max_name];
  iovec iov{msg, sizeof msg};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  auto n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0)
    return errno == EINTR;
  if (n == 0) {
    open = false;
    return false;
  }
  int owner = -1;
  for (auto* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      std::memcpy(&owner, CMSG_DATA(c), sizeof(int));
  if (static_cast<std::size_t>(n) > msg_head) {
    char op = msg[0];
    pid_t pid = 0;
    std::uint64_t ino = 0;
    std::memcpy(&pid, msg + 1, sizeof pid);
    std::memcpy(&ino, msg + 1 + sizeof pid, sizeof ino);
    auto len = static_cast<std::size_t>(n) - msg_head;
    char name[max_name + 1];
    std::memcpy(name, msg + msg_head, len);
    name[len] = '\0';
    if (op == 'R' && owner >= 0) {
      for (std::size_t i = 0; i < tracker_slots; ++i)
        if (slots[i].owner < 0) {
          auto& sl = slots[i];
          std::memcpy(sl.name, name, len + 1);
          sl.pid = pid;
          sl.confirmed = false;
          sl.ino = static_cast<ino_t>(ino);
          sl.owner = owner;
          owner = -1;
          break;
        }
    }
    for (std::size_t i = 0; op != 'R' && i < tracker_slots; ++i) {
      auto& sl = slots[i];
      if (sl.owner < 0 || std::strcmp(sl.name, name) != 0)
        continue;
      if (op == 'U' || (op == 'A' && sl.pid == pid && !sl.confirmed)) {
        ::close(sl.owner);
        sl.owner = -1;
      } else if (op == 'C' && sl.pid == pid && !sl.confirmed) {
        sl.confirmed = true;
        sl.ino = static_cast<ino_t>(ino);
      }
    }
  }
  if (owner >= 0)
    ::close(owner);
  return true;
}

// Removes a segment when its creator exits (its pidfd turns readable)
// without having unlinked it, and everything left when the last holder of
// the socket is gone.
[[noreturn]] void tracker_main(int sock) noexcept {
  auto* slots = static_cast<tracker_slot*>(
    ::mmap(nullptr, tracker_slots * sizeof(tracker_slot),
           PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* fds = static_cast<pollfd*>(
    ::mmap(nullptr, (tracker_slots + 1) * sizeof(pollfd),
           PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (slots == MAP_FAILED || fds == MAP_FAILED)
    ::_exit(1);
  for (std::size_t i = 0; i < tracker_slots; ++i)
    slots[i].owner = -1;
  for (;;) {
    fds[0] = {sock, POLLIN, 0};
    for (std::size_t i = 0; i < tracker_slots; ++i)
      fds[i + 1] = {slots[i].owner, POLLIN, 0}; // -1 is ignored by poll
    if (::poll(fds, tracker_slots + 1, -1) < 0)
      continue; // EINTR
    // Every message queued is handled before any death: a creator's
    // messages were sent before it died.
    bool open = true;
    while (open && handle_message(sock, slots, open)) {
    }
    if (!open)
      break; // every holder closed its end (or died)
    // Deaths, looked at again now: the messages may have changed the slots.
    for (std::size_t i = 0; i < tracker_slots; ++i)
      fds[i + 1] = {slots[i].owner, POLLIN, 0};
    if (::poll(fds + 1, tracker_slots, 0) <= 0)
      continue;
    std::size_t removed = 0;
    for (std::size_t i = 0; i < tracker_slots; ++i)
      if (slots[i].owner >= 0 && (fds[i + 1].revents & POLLIN) != 0)
        removed += remove_slot(slots[i]);
    report(removed);
  }
  std::size_t removed = 0;
  for (std::size_t i = 0; i < tracker_slots; ++i)
    if (slots[i].owner >= 0)
      removed += remove_slot(slots[i]);
  report(removed);
  ::_exit(0);
}

std::mutex tracker_mu;
int tracker_fd = -1;

// Starts the tracker (a grandchild, so nobody has to reap it) and returns
// our end of its socket. Fork children inherit the end and share it.
int tracker() {
  std::lock_guard lock(tracker_mu);
  if (tracker_fd >= 0)
    return tracker_fd;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    detail::throw_errno("socketpair for the shared_memory tracker");
  pid_t child = ::fork();
  if (child < 0) {
    int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    detail::throw_errno(err, "fork of the shared_memory tracker");
  }
  if (child == 0) {
    // Named before the second fork, so it is never seen under our name.
    ::prctl(PR_SET_NAME, "pactor-shmtrk");
    if (::fork() != 0)
      ::_exit(0);
    ::setsid(); // no terminal signals (Ctrl-C must not stop the cleanup)
    sigset_t all;
    ::sigfillset(&all);
    // One thread after fork: the process mask is this thread's.
    ::sigprocmask(SIG_BLOCK, &all, nullptr); // NOLINT(concurrency-mt-unsafe)
    if (::dup2(sv[1], 3) < 0)
      ::_exit(1);
    ::close_range(4, ~0U, 0);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      if (null > 3)
        ::close(null);
    }
    tracker_main(3);
  }
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  ::close(sv[1]);
  detail::register_inheritable_fd(sv[0]);
  tracker_fd = sv[0];
  return tracker_fd;
}

void tell_tracker(char op, const std::string& name, std::uint64_t ino = 0) {
  if (op != 'R') {
    std::lock_guard lock(tracker_mu);
    if (tracker_fd < 0)
      return; // nothing registered from this process tree
  }
  std::string msg(msg_head, '\0');
  msg[0] = op;
  pid_t me = ::getpid();
  std::memcpy(msg.data() + 1, &me, sizeof me);
  std::memcpy(msg.data() + 1 + sizeof me, &ino, sizeof ino);
  msg += name;
  int fd = tracker();
  // A registration carries a pidfd of this process: the tracker removes the
  // segment when this process exits without unlinking it.
  detail::unique_fd self;
  if (op == 'R') {
    self.reset(static_cast<int>(::syscall(SYS_pidfd_open, me, 0)));
    if (!self)
      detail::throw_errno("pidfd_open for the shared_memory tracker");
  }
  const int owner[1] = {self.get()};
  auto send = [&](int to) {
    return detail::send_with_fds(
      to, std::as_bytes(std::span(msg.data(), msg.size())),
      self ? std::span<const int>(owner) : std::span<const int>());
  };
  int err = send(fd);
  if ((err == EPIPE || err == ECONNRESET) && op == 'R') {
    // The tracker was killed: start a new one for what comes next.
    detail::shared_memory_tracker_detach();
    err = send(tracker());
  }
  if (err != 0 && op == 'R')
    detail::throw_errno(err, "send to the shared_memory tracker");
}

std::string check_name(std::string name) {
  if (!name.empty() && name[0] == '/')
    name.erase(0, 1);
  if (name.empty() || name.size() > max_name
      || name.find('/') != std::string::npos || name == "." || name == "..")
    throw std::invalid_argument("pactor::shared_memory: bad name \"" + name
                                + "\" (1-" + std::to_string(max_name)
                                + " characters, no '/')");
  return name;
}

std::string fresh_name() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "pactor_%016llx",
                static_cast<unsigned long long>(rng()));
  return buf;
}

[[noreturn]] void throw_for(int err, const char* what,
                            const std::string& name) {
  throw std::system_error(err, std::generic_category(),
                          std::string("pactor::shared_memory: ") + what + " \""
                            + name + "\"");
}

} // namespace

struct shared_memory::state {
  std::string name;
  std::size_t size = 0;
  void* addr = nullptr;
  bool tracked = false;
  state() = default;
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    if (addr != nullptr)
      ::munmap(addr, size);
  }
};

shared_memory shared_memory::create(std::size_t size, std::string name,
                                    shared_memory_options opts) {
  if (size == 0)
    throw std::invalid_argument(
      "pactor::shared_memory::create: size must be positive");
  bool made_up = name.empty();
  name = made_up ? fresh_name() : check_name(std::move(name));
  // Registered (provisionally) before it exists: a creator killed right
  // after shm_open leaves nothing behind; then confirmed or aborted.
  auto inode_of = [](const std::string& n) -> std::uint64_t {
    struct stat st {};
    return ::stat(("/dev/shm/" + n).c_str(), &st) == 0 ? st.st_ino : 0;
  };
  if (opts.track)
    tell_tracker('R', name, inode_of(name));
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC,
                    0600);
    if (fd >= 0) {
      struct stat st {};
      if (opts.track && ::fstat(fd, &st) == 0)
        tell_tracker('C', name, st.st_ino);
      break;
    }
    int err = errno;
    if (opts.track)
      tell_tracker('A', name); // not ours: the tracker must not remove it
    if (err == EEXIST && made_up && attempt < 8) {
      name = fresh_name();
      if (opts.track)
        tell_tracker('R', name, inode_of(name));
      continue;
    }
    throw_for(err, "cannot create", name);
  }
  detail::unique_fd owner(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    ::shm_unlink(("/" + name).c_str());
    if (opts.track)
      tell_tracker('U', name);
    throw_for(err, "cannot size", name);
  }
  shared_memory m;
  m.s_ = std::make_shared<state>();
  m.s_->name = name;
  m.s_->size = size;
  m.s_->tracked = opts.track;
  m.s_->addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m.s_->addr == MAP_FAILED) {
    int err = errno;
    m.s_->addr = nullptr;
    ::shm_unlink(("/" + name).c_str());
    if (opts.track)
      tell_tracker('U', name);
    throw_for(err, "cannot map", name);
  }
  return m;
}

shared_memory shared_memory::attach(std::string name) {
  name = check_name(std::move(name));
  int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    throw_for(errno, "cannot open", name);
  detail::unique_fd owner(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw_for(errno, "cannot stat", name);
  shared_memory m;
  m.s_ = std::make_shared<state>();
  m.s_->name = name;
  m.s_->size = static_cast<std::size_t>(st.st_size);
  if (m.s_->size > 0) {
    m.s_->addr
      = ::mmap(nullptr, m.s_->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m.s_->addr == MAP_FAILED) {
      m.s_->addr = nullptr;
      throw_for(errno, "cannot map", name);
    }
  }
  return m;
}

const std::string& shared_memory::name() const noexcept {
  static const std::string none;
  return s_ ? s_->name : none;
}

std::size_t shared_memory::size() const noexcept {
  return s_ ? s_->size : 0;
}

std::span<std::byte> shared_memory::buf() const noexcept {
  if (!s_ || s_->addr == nullptr)
    return {};
  return {static_cast<std::byte*>(s_->addr), s_->size};
}

void shared_memory::close() noexcept {
  if (s_ && s_->addr != nullptr) {
    ::munmap(s_->addr, s_->size);
    s_->addr = nullptr;
  }
}

void shared_memory::unlink() {
  if (!s_)
    throw std::logic_error("pactor::shared_memory::unlink: no segment");
  if (::shm_unlink(("/" + s_->name).c_str()) != 0)
    throw_for(errno, "cannot unlink", s_->name);
  // The tracker holds names registered by this process tree; telling it is
  // harmless for a name it does not hold.
  tell_tracker('U', s_->name);
}

namespace detail {
void shared_memory_tracker_detach() noexcept {
  std::lock_guard lock(tracker_mu);
  if (tracker_fd >= 0) {
    unregister_inheritable_fd(tracker_fd);
    ::close(tracker_fd);
    tracker_fd = -1;
  }
}
} // namespace detail

} // namespace pactor
