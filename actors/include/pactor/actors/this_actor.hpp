// What code running inside an actor uses: its own address, sending,
// requesting, timers, links, monitors, stopping and changing behaviour.

#pragma once

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/exit_reason.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

namespace pactor::this_actor {

/// This actor's address. std::logic_error outside an actor.
actor_ref self();
/// The sender of the message being handled (actor_ref{} if none).
actor_ref sender();
/// How often the message being handled was delivered (1: first time; more
/// after earlier incarnations died handling it).
std::uint32_t delivery();
/// Which start of this actor this is (1, 2, ...).
std::uint32_t incarnation();

template <class T>
void send(actor_ref to, const T& msg) {
  detail::send_message(to, self(), msg, 0, 0);
}

/// A blocking request from inside a handler (the actor handles nothing
/// else meanwhile).
template <class R, class T, class Rep, class Period>
R request(actor_ref to, const T& msg,
          std::chrono::duration<Rep, Period> timeout) {
  return detail::request<R>(to, msg, detail::wait_limit::after(timeout));
}

/// A request that does not block the actor: it returns at once, and when
/// the reply comes the actor runs `on_reply(R)` (`on_reply()` for void)
/// between messages; `on_error(std::exception_ptr)` gets timeout_error or
/// remote_error instead, or actor_exited when the target ends first. A
/// send that fails at once (actor_exited, queue_full) throws from this
/// call. A reply after the timeout is dropped.
template <class R, class T, class Rep, class Period, class OnReply,
          class OnError>
void request_async(actor_ref to, const T& msg,
                   std::chrono::duration<Rep, Period> timeout, OnReply on_reply,
                   OnError on_error) {
  auto id = detail::next_request_id();
  detail::register_async(
    id, detail::wait_limit::after(timeout),
    [on_reply = std::move(on_reply), on_error = std::move(on_error)](
      const detail::reply_in* rep, std::exception_ptr err) mutable {
      if (err) {
        on_error(err);
        return;
      }
      if constexpr (std::is_void_v<R>) {
        on_reply();
      } else {
        if (rep->type != type_tag<R>()) {
          on_error(std::make_exception_ptr(
            remote_error("pactor::wrong_reply_type",
                         "the reply is not a " + std::string(type_name<R>()))));
          return;
        }
        std::optional<R> value;
        try {
          value.emplace(decode_payload<R>(rep->bytes));
        } catch (const decode_error&) {
          on_error(std::current_exception());
          return;
        }
        on_reply(std::move(*value));
      }
    },
    to);
  try {
    detail::send_message(to, self(), msg, id, detail::flag_request);
  } catch (...) {
    detail::register_async(id, detail::wait_limit::none(), nullptr); // forget
    throw;
  }
}

template <class A, class... Args>
actor_ref spawn(Args&&... args) {
  return detail::spawn_class<A>(spawn_options{}, std::forward<Args>(args)...);
}
template <class... P, class... Args>
actor_ref spawn(behavior (*fn)(P...), Args&&... args) {
  return detail::spawn_fn(spawn_options{}, fn, std::forward<Args>(args)...);
}

template <class A, class... Args>
actor_ref spawn_with(const spawn_options& opts, Args&&... args) {
  return detail::spawn_class<A>(opts, std::forward<Args>(args)...);
}
template <class... P, class... Args>
actor_ref spawn_with(const spawn_options& opts, behavior (*fn)(P...),
                     Args&&... args) {
  return detail::spawn_fn(opts, fn, std::forward<Args>(args)...);
}

/// Stops after the message being handled (reason normal).
void stop();
/// Replaces the behaviour from the next message on.
void become(behavior b);

/// Names a timer of send_after, for cancel_timer.
enum class timer_id : std::uint64_t {};

namespace detail_timer {
timer_id add(actor_ref to, std::chrono::nanoseconds delay, type_tag_t type,
             std::vector<std::byte> bytes);
}

/// Sends `msg` to `to` after `delay` (from this actor; the timer dies with
/// this incarnation). Returns its id for cancel_timer.
template <class T, class Rep, class Period>
timer_id send_after(actor_ref to, std::chrono::duration<Rep, Period> delay,
                    const T& msg) {
  std::vector<std::byte> bytes;
  pack_payload(bytes, msg);
  return detail_timer::add(to,
                           std::chrono::ceil<std::chrono::nanoseconds>(delay),
                           type_tag<T>(), std::move(bytes));
}

/// Cancels a timer of this incarnation: true if it had not fired (its
/// message is never sent), false if it had fired or is unknown (Erlang's
/// erlang:cancel_timer).
bool cancel_timer(timer_id id);

/// A message an actor receives when nothing came for its idle timeout.
struct idle {
  MSGPACK_DEFINE()
};
/// After `timeout` without a message, the actor gets `idle{}` (a handler
/// for it decides), or stops normally if it has no such handler.
void set_idle_timeout(std::chrono::milliseconds timeout);

/// Links this actor with `other`: when one ends abnormally, the other ends
/// too (reason linked), unless it traps exits (then it gets exit_msg).
void link(actor_ref other);
void unlink(actor_ref other);
/// Turns linked deaths into exit_msg messages.
void trap_exit(bool on);
/// A down message comes when `who` ends (at once if it has).
void monitor(actor_ref who);
/// Stops monitoring `who`: no down message comes after this returns (one
/// already in the mailbox stays).
void demonitor(actor_ref who);

void register_name(const std::string& name);
std::optional<actor_ref> whereis(const std::string& name);

} // namespace pactor::this_actor
