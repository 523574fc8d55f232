// pactor::wait over queues, mailboxes, pipe ends and fds. Rings are made
// pollable by their socketpair: a waiter counts itself as a poller and sets
// the sleepers bit of the ring's not_empty word, and the next put that sees
// the bit writes a byte that the waiter's poll() notices. See
// docs/design/wait.md.

#include <pactor/runtime/wait.hpp>

#include "internal.hpp"

#include <algorithm>
#include <cerrno>
#include <poll.h>
#include <stdexcept>
#include <string>

namespace pactor {

namespace {

// Unregisters this waiter from its rings on every way out.
struct poller_registration {
  std::vector<std::pair<const detail::ring*, int>> rings; // ring, slot
  poller_registration() = default;
  poller_registration(const poller_registration&) = delete;
  poller_registration& operator=(const poller_registration&) = delete;
  ~poller_registration() {
    for (const auto& [r, slot] : rings)
      r->remove_poller(slot);
  }
};

int poll_timeout_ms(detail::wait_limit& limit) {
  if (limit.none_allowed())
    return 0;
  const auto& deadline = limit.deadline();
  if (!deadline)
    return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(
    *deadline - detail::steady::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30));
}

} // namespace

std::vector<std::size_t> wait(std::span<const waitable> objects,
                              detail::wait_limit limit) {
  poller_registration reg;
  reg.rings.reserve(objects.size());
  for (const auto& o : objects) {
    if (o.ring_ != nullptr) {
      reg.rings.emplace_back(o.ring_, o.ring_->add_poller());
    } else if (o.end_ != nullptr) {
      if (!o.end_->in_ring() || o.end_->closed())
        throw std::logic_error("pactor::wait: a connection that cannot "
                               "receive (send-only or closed)");
    } else if (o.fd_ < 0) {
      throw std::invalid_argument("pactor::wait: an object without an fd (a "
                                  "process not started?)");
    }
  }
  std::vector<pollfd> fds(objects.size());
  std::vector<std::size_t> ready;
  bool drained = false;
  for (;;) {
    for (const auto& o : objects) {
      if (o.ring_ != nullptr)
        o.ring_->arm_poller();
      else if (o.end_ != nullptr)
        o.end_->arm_reader();
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ready.clear();
    bool any_fd = false;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const auto& o = objects[i];
      if (o.ring_ != nullptr) {
        if (o.ring_->readable() || o.ring_->closed())
          ready.push_back(i);
        fds[i] = {o.ring_->poll_fd(), POLLIN, 0};
      } else if (o.end_ != nullptr) {
        if (o.end_->in_ring()->readable())
          ready.push_back(i);
        fds[i] = {o.end_->wait_fd(), POLLIN | POLLRDHUP, 0};
        any_fd = true;
      } else {
        fds[i] = {o.fd_, POLLIN, 0};
        any_fd = true;
      }
    }
    if (!ready.empty() && !any_fd)
      break;
    int timeout_ms = ready.empty() ? poll_timeout_ms(limit) : 0;
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      detail::throw_errno("poll in pactor::wait");
    }
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const auto& o = objects[i];
      auto ev = fds[i].revents;
      bool is_ready = false;
      if (o.ring_ != nullptr) {
        if ((ev & POLLIN) != 0) {
          o.ring_->drain_poller();
          drained = true;
        }
        is_ready = o.ring_->readable() || o.ring_->closed();
      } else if (o.end_ != nullptr) {
        bool gone = (ev & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
        if ((ev & POLLIN) != 0 && !o.end_->drain_wakes())
          gone = true;
        is_ready = gone || o.end_->in_ring()->readable();
      } else {
        is_ready = (ev & (POLLIN | POLLHUP | POLLERR)) != 0;
      }
      if ((ev & POLLNVAL) != 0)
        throw std::invalid_argument(
          "pactor::wait: object " + std::to_string(i)
          + " has a closed fd (a process or connection that is gone?)");
      if (is_ready && std::find(ready.begin(), ready.end(), i) == ready.end())
        ready.push_back(i);
    }
    if (!ready.empty())
      break;
    if (n == 0 && timeout_ms >= 0 && poll_timeout_ms(limit) == 0)
      return {};
  }
  std::sort(ready.begin(), ready.end());
  // A waiter that emptied a ring's notice socket passes the notice on, so
  // that other waiters on that ring do not sleep through it.
  if (drained)
    for (auto i : ready)
      if (objects[i].ring_ != nullptr)
        objects[i].ring_->signal_pollers();
  return ready;
}

} // namespace pactor
