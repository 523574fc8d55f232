// The loop of an actor process: receive in place, dispatch by type, reply,
// acknowledge; timers, idle timeout, stop and become. And this_actor.

#include <pactor/actors/dedup.hpp>
#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/reply_promise.hpp>
#include <pactor/actors/this_actor.hpp>
#include <pactor/runtime/wait.hpp>

#include "context.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <unordered_map>

namespace pactor {

namespace detail {

namespace {

struct timer {
  std::uint64_t id = 0;
  steady::time_point at;
  actor_ref to;
  type_tag_t type;
  std::vector<std::byte> bytes;
};

// The actor running in this process.
struct actor_state {
  bool running = false;
  pactor::behavior beh;
  std::optional<pactor::behavior> next;
  bool stop = false;
  exit_reason reason;
  actor_ref sender;
  std::uint64_t request_id = 0; // of the request being handled (0: a tell)
  std::uint32_t delivery = 0;
  std::optional<message_origin> origin; // of the message being handled
  std::vector<timer> timers;
  std::uint64_t next_timer = 0;
  std::chrono::milliseconds idle{0};
  struct pending {
    std::optional<steady::time_point> deadline;
    async_callback cb;
    actor_ref target;
  };
  std::unordered_map<std::uint64_t, pending> asyncs;
};

actor_state& st() {
  static actor_state s;
  return s;
}

actor_state& running() {
  auto& s = st();
  if (!s.running)
    throw std::logic_error("pactor::this_actor: not inside an actor");
  return s;
}

void report_exit(const exit_reason& r) {
  rpc_request q{rpc_op::exiting, ctx().self_id, 0, {}, {}};
  pack_payload(q.blob, r);
  try {
    call_node(q);
  } catch (...) { // the node is gone: nobody to tell
  }
}

void send_reply(actor_ref to, std::uint64_t request_id, const reply_out& out,
                std::uint32_t flags) {
  envelope e{out.type, ctx().self_id, request_id, 0, flag_reply | flags};
  auto write = [&](std::byte* dst) {
    std::copy(out.bytes.begin(), out.bytes.end(), dst);
  };
  try {
    deliver(to, e, out.bytes.size(), write);
  } catch (const std::exception&) {
    // The requester is gone or its replies ring is full: the reply is lost
    // with it (it has timed out or ended).
  }
}

reply_out error_reply(const std::string& type, const std::string& message) {
  reply_out out;
  out.type = type_tag<std::pair<std::string, std::string>>();
  pack_payload(out.bytes, std::make_pair(type, message));
  return out;
}

void give_up(const envelope& h, std::span<const std::byte> payload,
             std::uint32_t delivery, const std::string& why) {
  auto kept = payload.first(std::min(payload.size(), max_letter_payload));
  pactor::dead_letter l{
    self_ref(), actor_ref(h.sender),
    h.type,     delivery,
    why,        std::vector<std::byte>(kept.begin(), kept.end())};
  rpc_request q{rpc_op::dead_letter, 0, 0, {}, {}};
  pack_payload(q.blob, l);
  try {
    call_node(q);
  } catch (...) {
  }
}

// Handles one record. Exceptions from a tell's handler propagate (the
// actor ends; the record stays unacknowledged).
// `waiting`: the messages in the mailbox from this one on (drop_oldest).
void handle_record(std::span<const std::byte> bytes, std::uint32_t delivery,
                   std::uint64_t waiting) {
  auto& s = st();
  message_view mv;
  try {
    mv = read_envelope(bytes);
  } catch (const std::exception& e) {
    give_up({}, bytes, delivery,
            std::string("a malformed message: ") + e.what());
    return;
  }
  const auto& h = mv.header;
  s.sender = actor_ref(h.sender);
  s.request_id = (h.flags & flag_request) != 0 ? h.request_id : 0;
  s.delivery = delivery;
  s.origin.reset();
  if (h.origin != 0)
    s.origin = message_origin{s.sender, h.origin - 1, h.origin_index};
  if ((h.flags & flag_system) != 0) {
    if (h.type == type_tag<sys_shutdown>()) {
      sys_shutdown m;
      try {
        m = decode_payload<sys_shutdown>(mv.payload);
      } catch (const decode_error&) { // (from the node: not expected)
      }
      if (m.incarnation != 0 && m.incarnation != ctx().incarnation)
        return; // for an earlier incarnation, killed before it got here
      s.stop = true;
      s.reason.kind = exit_kind::shutdown;
    }
    return;
  }
  if (auto keep = ctx().keep_newest; keep != 0 && waiting > keep) {
    // drop_oldest: this is the oldest waiting message, and more than
    // `keep` wait; it goes, not the newer ones.
    auto why = "dropped: " + std::to_string(waiting - 1)
               + " newer messages were waiting (overflow::drop_oldest keeps "
               + std::to_string(keep) + ")";
    give_up(h, mv.payload, delivery, why);
    if ((h.flags & flag_request) != 0)
      send_reply(s.sender, h.request_id,
                 error_reply("pactor::message_dropped", why), flag_error);
    return;
  }
  if (delivery > ctx().max_deliveries) {
    auto why = "poison message: delivered " + std::to_string(delivery - 1)
               + " times, and each time the actor ended";
    give_up(h, mv.payload, delivery, why);
    if ((h.flags & flag_request) != 0)
      send_reply(s.sender, h.request_id,
                 error_reply("pactor::poison_message", why), flag_error);
    return;
  }
  if ((h.flags & flag_request) != 0) {
    reply_out out;
    std::uint32_t flags = 0;
    try {
      if (!s.beh.invoke(h.type, mv.payload, &out)) {
        out = error_reply("pactor::unknown_message",
                          "no handler for this message type");
        flags = flag_error;
        give_up(h, mv.payload, delivery, "no handler for this request type");
      }
    } catch (const std::exception& e) {
      out = error_reply(current_exception_type(), e.what());
      flags = flag_error;
    } catch (...) {
      out = error_reply(current_exception_type(), "");
      flags = flag_error;
    }
    if (out.type == 0 && flags == 0) // deferred: a reply_promise answers
      return;
    send_reply(s.sender, h.request_id, out, flags);
    return;
  }
  try {
    if (!s.beh.invoke(h.type, mv.payload, nullptr)) {
      if (h.type != type_tag<down>() && h.type != type_tag<exit_msg>())
        give_up(h, mv.payload, delivery, "no handler for this message type");
    }
  } catch (const decode_error& e) {
    give_up(h, mv.payload, delivery,
            std::string("a message that does not decode: ") + e.what());
  }
}

// Runs the callbacks of asynchronous requests whose reply came (in the
// stash of a blocking request, or in the replies ring) or whose time is up.
// Returns whether one ran.
bool process_async() {
  auto& s = st();
  auto& c = ctx();
  if (s.asyncs.empty())
    return false;
  bool ran = false;
  auto finish
    = [&](std::uint64_t id, const reply_in* rep, std::exception_ptr err) {
        auto it = s.asyncs.find(id);
        if (it == s.asyncs.end())
          return;
        auto cb = std::move(it->second.cb);
        s.asyncs.erase(it);
        c.async_ids.erase(id);
        ran = true;
        cb(rep, std::move(err));
      };
  auto deliver_one = [&](std::uint64_t id, bool error, type_tag_t type,
                         std::vector<std::byte> bytes) {
    if (error) {
      std::exception_ptr err;
      try {
        auto [t, m]
          = decode_payload<std::pair<std::string, std::string>>(bytes);
        err = std::make_exception_ptr(remote_error(t, m));
      } catch (...) {
        err = std::current_exception();
      }
      finish(id, nullptr, err);
    } else {
      reply_in rep{type, std::move(bytes)};
      finish(id, &rep, nullptr);
    }
  };
  auto stash = std::move(c.async_stash);
  c.async_stash.clear();
  for (auto& r : stash)
    deliver_one(r.id, r.error, r.type, std::move(r.bytes));
  for (;;) {
    std::optional<process_context::stashed_reply> got;
    auto read = [&](std::span<const std::byte> bytes) {
      auto mv = read_envelope(bytes);
      if (s.asyncs.count(mv.header.request_id) == 0)
        return; // late or duplicate: dropped
      got = process_context::stashed_reply{
        mv.header.request_id,
        (mv.header.flags & flag_error) != 0,
        mv.header.type,
        {mv.payload.begin(), mv.payload.end()}};
    };
    if (c.replies->get(read, wait_limit::none()) != ring_status::ok)
      break;
    if (got) // the callback runs outside the ring's get
      deliver_one(got->id, got->error, got->type, std::move(got->bytes));
  }
  auto now = steady::now();
  std::vector<std::uint64_t> expired;
  std::vector<std::pair<std::uint64_t, std::exception_ptr>> ended;
  for (auto& [id, p] : s.asyncs) {
    if (p.deadline && *p.deadline <= now) {
      expired.push_back(id);
      continue;
    }
    try { // its target ended without answering (the replies are drained)
      target_ended(p.target, true);
    } catch (...) {
      ended.emplace_back(id, std::current_exception());
    }
  }
  for (auto id : expired)
    finish(id, nullptr, std::make_exception_ptr(timeout_error()));
  for (auto& [id, err] : ended)
    finish(id, nullptr, err);
  return ran;
}

void fire_timers() {
  auto& s = st();
  if (s.timers.empty())
    return;
  auto now = steady::now();
  while (!s.timers.empty()) {
    auto it = std::min_element(
      s.timers.begin(), s.timers.end(),
      [](const timer& a, const timer& b) { return a.at < b.at; });
    if (it->at > now)
      break;
    timer t = std::move(*it);
    s.timers.erase(it);
    envelope e{t.type, ctx().self_id, 0, 0, 0};
    auto write
      = [&](std::byte* dst) { std::copy(t.bytes.begin(), t.bytes.end(), dst); };
    try {
      deliver(t.to, e, t.bytes.size(), write);
    } catch (const std::exception& ex) {
      give_up(e, t.bytes, 0,
              "a timer message to " + t.to.to_string() + ": " + ex.what());
    }
  }
}

} // namespace

void register_async(std::uint64_t request_id, wait_limit limit,
                    async_callback cb, actor_ref target) {
  auto& s = running();
  if (!cb) { // forget it (the request could not be sent)
    s.asyncs.erase(request_id);
    ctx().async_ids.erase(request_id);
    return;
  }
  std::optional<steady::time_point> deadline;
  if (!limit.none_allowed()) {
    const auto& d = limit.deadline();
    if (d)
      deadline = *d;
  } else {
    deadline = steady::now();
  }
  s.asyncs[request_id] = {deadline, std::move(cb), target};
  ctx().async_ids[request_id] = true;
}

// After `idle` without a message: the idle handler, or a normal stop.
// Returns whether the handler ran.
bool check_idle(steady::time_point& last) {
  auto& s = st();
  if (s.idle.count() <= 0 || steady::now() < last + s.idle)
    return false;
  last = steady::now();
  if (s.beh.handles(type_tag<this_actor::idle>())) {
    std::vector<std::byte> empty;
    pack_payload(empty, this_actor::idle{});
    s.beh.invoke(type_tag<this_actor::idle>(), empty, nullptr);
    return true;
  }
  s.stop = true; // idle with no handler: a normal stop
  return false;
}

// The exit reason for the exception being handled ("exception", its type,
// `prefix` + what()).
exit_reason exception_reason(const std::string& prefix) {
  exit_reason r;
  r.kind = exit_kind::exception;
  r.type = current_exception_type();
  try {
    throw;
  } catch (const std::exception& e) {
    r.message = prefix + e.what();
  } catch (...) {
    r.message = prefix;
  }
  return r;
}

// Warm restart: the state the last incarnation committed replaces the
// constructor's, and the mailbox is acknowledged up to where it goes with (a
// death between the commit and the ack left that undone). A state that does
// not decode: a dead letter and the constructor's state, or (bad_state::fail)
// a stash_error.
void restore_state(actor_impl& impl) {
  auto& c = ctx();
  auto last = c.state_stash->last();
  if (!last)
    return;
  try {
    if (last->type != impl.state_type())
      throw decode_error(decode_errc::type_mismatch,
                         "the committed state is of another type");
    impl.load_state(last->bytes);
  } catch (const std::exception& e) {
    if (c.on_bad_state == bad_state::fail)
      throw stash_error(std::string("the committed state does not decode: ")
                        + e.what());
    give_up({}, last->bytes, 0,
            std::string("warm restart: the committed state does not decode, "
                        "starting from the constructor's: ")
              + e.what());
  }
  c.mailbox->ack_to(last->ack_word);
}

// Warm restart: publishes the state with the mailbox position after the
// messages handled so far, then acknowledges them (stash.hpp). With none
// handled (a change made outside a message: on_start, an idle handler, a
// reply's callback) the position is the head's.
void commit_state(actor_impl& impl) {
  auto& c = ctx();
  auto slot = c.state_stash->spare();
  auto size = impl.save_state(slot);
  c.state_stash->publish(size, impl.state_type(), c.mailbox->ack_word());
  if (c.mailbox->holding())
    c.mailbox->ack();
}

int run_actor(const std::function<std::unique_ptr<actor_impl>()>& make) {
  auto& s = st();
  auto& c = ctx();
  s = actor_state{};
  s.running = true;
  std::unique_ptr<actor_impl> impl;
  const bool warm = c.state_stash.has_value();
  try {
    impl = make();
    if (warm)
      restore_state(*impl);
    s.beh = impl->make_behavior();
    impl->on_start();
    if (warm) // what on_start changed
      commit_state(*impl);
  } catch (...) {
    report_exit(exception_reason("while starting: "));
    return 1;
  }
  auto last = steady::now();
  std::uint32_t held = 0; // warm: handled, not yet committed
  auto handler = [&](std::span<const std::byte> b, std::uint32_t d) {
    c.origin = c.mailbox->peeked_number() + 1;
    c.origin_sends = 0;
    // The held (handled, not yet committed) ones are still in the ring.
    handle_record(b, d, c.keep_newest == 0 ? 0 : c.mailbox->size() - held);
    c.origin = 0;
    s.request_id = 0; // promise() binds only inside a request's handler
  };
  try {
    while (!s.stop) {
      fire_timers();
      if (process_async() && warm) {
        commit_state(*impl); // what the callbacks changed
        held = 0;
      }
      auto st_ = c.mailbox->peek(handler, wait_limit::none());
      if (st_ == ring_status::timeout && held > 0) {
        commit_state(*impl); // the mailbox is empty: end the batch
        held = 0;
      }
      if (st_ == ring_status::timeout) {
        // Nothing now: sleep until a message, the next timer or idleness.
        std::optional<steady::time_point> until;
        for (auto& t : s.timers)
          until = until ? std::min(*until, t.at) : t.at;
        if (s.idle.count() > 0)
          until = until ? std::min(*until, last + s.idle) : last + s.idle;
        for (auto& [id, p] : s.asyncs)
          if (p.deadline)
            until = until ? std::min(*until, *p.deadline) : *p.deadline;
        if (!s.asyncs.empty()) { // look at the targets now and then
          auto soon = steady::now() + std::chrono::milliseconds(50);
          until = until ? std::min(*until, soon) : soon;
        }
        auto limit = until ? wait_limit::after(*until - steady::now())
                           : wait_limit::forever();
        if (!s.asyncs.empty()) {
          // A reply may come first: wait for either ring, then look again.
          waitable both[2]
            = {waitable::of_ring(*c.mailbox), waitable::of_ring(*c.replies)};
          (void)pactor::wait(std::span<const waitable>(both, 2), limit);
          if (check_idle(last) && warm)
            commit_state(*impl); // what the idle handler changed
          continue;
        }
        st_ = c.mailbox->peek(handler, limit);
        if (st_ == ring_status::timeout) {
          if (check_idle(last) && warm)
            commit_state(*impl); // what the idle handler changed
          continue;
        }
      }
      if (st_ == ring_status::closed)
        break;
      if (!warm) {
        c.mailbox->ack();
      } else if (++held >= c.commit_every || s.stop
                 || c.mailbox->peeked_large()) {
        commit_state(*impl);
        held = 0;
      } else {
        c.mailbox->hold();
      }
      if (s.idle.count() > 0)
        last = steady::now();
      if (s.next) {
        s.beh = std::move(*s.next);
        s.next.reset();
      }
    }
    if (warm && held > 0)
      commit_state(*impl);
    impl->on_stop();
  } catch (...) {
    c.origin = 0;
    auto r = exception_reason("");
    std::fprintf(stderr, "pactor: %s ended: exception %s: %s\n",
                 self_ref().to_string().c_str(), r.type.c_str(),
                 r.message.c_str());
    report_exit(r);
    return 1;
  }
  report_exit(s.reason);
  return 0;
}

void exit_actor(const exit_reason& why) {
  auto& s = running();
  s.stop = true;
  s.reason = why;
}

bool inside_actor() noexcept {
  return st().running;
}

bool deliver_reply(actor_ref to, std::uint64_t request_id, type_tag_t type,
                   std::span<const std::byte> bytes, bool error) {
  envelope e{type, ctx().self_id, request_id, 0,
             flag_reply | (error ? flag_error : 0U)};
  auto write
    = [&](std::byte* dst) { std::copy(bytes.begin(), bytes.end(), dst); };
  try {
    deliver(to, e, bytes.size(), write);
    return true;
  } catch (const std::exception&) { // the requester is gone (or timed out
    return false;                   // and its replies ring stays full)
  }
}

std::pair<actor_ref, std::uint64_t> current_request() {
  auto& s = running();
  if (s.request_id == 0)
    throw std::logic_error("pactor::this_actor::promise: the message being "
                           "handled is not a request");
  return {s.sender, s.request_id};
}

} // namespace detail

namespace this_actor {

actor_ref self() {
  detail::running();
  return detail::self_ref();
}
actor_ref sender() {
  return detail::running().sender;
}
std::uint32_t delivery() {
  return detail::running().delivery;
}
std::optional<message_origin> origin() {
  return detail::running().origin;
}
std::uint32_t incarnation() {
  detail::running();
  return detail::ctx().incarnation;
}
void stop() {
  auto& s = detail::running();
  s.stop = true;
  s.reason.kind = exit_kind::normal;
}
void become(behavior b) {
  detail::running().next = std::move(b);
}
namespace detail_timer {
timer_id add(actor_ref to, std::chrono::nanoseconds delay, type_tag_t type,
             std::vector<std::byte> bytes) {
  auto& s = detail::running();
  auto id = ++s.next_timer;
  s.timers.push_back(
    {id, detail::steady::now() + delay, to, type, std::move(bytes)});
  return timer_id{id};
}
} // namespace detail_timer
bool cancel_timer(timer_id id) {
  auto& timers = detail::running().timers;
  return std::erase_if(timers,
                       [&](const detail::timer& t) {
                         return t.id == static_cast<std::uint64_t>(id);
                       })
         != 0;
}
void set_idle_timeout(std::chrono::milliseconds timeout) {
  detail::running().idle = timeout;
}
void link(actor_ref other) {
  auto r = detail::call_node(
    {detail::rpc_op::link, self().id(), other.id(), {}, {}});
  detail::check_reply(r, "link");
}
void unlink(actor_ref other) {
  detail::call_node({detail::rpc_op::unlink, self().id(), other.id(), {}, {}});
}
void trap_exit(bool on) {
  detail::call_node(
    {detail::rpc_op::trap_exit, self().id(), on ? 1U : 0U, {}, {}});
}
void monitor(actor_ref who) {
  auto r = detail::call_node(
    {detail::rpc_op::monitor, self().id(), who.id(), {}, {}});
  detail::check_reply(r, "monitor");
}
void demonitor(actor_ref who) {
  detail::call_node({detail::rpc_op::demonitor, self().id(), who.id(), {}, {}});
}
void register_name(const std::string& name) {
  auto r = detail::call_node({detail::rpc_op::reg, self().id(), 0, name, {}});
  detail::check_reply(r, "register_name");
}
std::optional<actor_ref> whereis(const std::string& name) {
  auto r = detail::call_node({detail::rpc_op::whereis, 0, 0, name, {}});
  if (r.a == 0)
    return std::nullopt;
  return actor_ref(r.a);
}

} // namespace this_actor

} // namespace pactor
