// actor_system: starts the node process, spawns actors, and lets code that
// is not an actor talk to them. One per program.

#pragma once

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/exit_reason.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pactor {

struct actor_system_options {
  /// How long an actor has to stop after the shutdown message before it is
  /// killed (SIGKILL), at shutdown and for stop(ref).
  std::chrono::milliseconds shutdown_timeout{5000};
  /// A message delivered this many times, each time ending the actor that
  /// handled it, is a poison message: the next incarnation does not handle
  /// it; it goes to the dead letters and a requester gets remote_error
  /// ("pactor::poison_message").
  std::uint32_t max_deliveries = 3;
  /// Start the node with spawn (a fresh image of this program) even when
  /// fork would do: actors, forked from the node, then carry nothing of
  /// this program's heap (smaller, at about 1 ms more start-up). Needs
  /// pactor::init in main. With threads in the program it is always spawn.
  bool spawn_node = false;
  /// How long a waiting receiver (an actor on its mailbox, a requester on
  /// its replies) spins before it sleeps; 0: never (a round trip then pays
  /// the kernel's wake-up, tens of us on a VM).
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  /// How many ended actors keep their mailbox and record so that
  /// restart(ref) can start them again. Past it the node reclaims the one
  /// that ended first: messages left in its mailbox become dead letters,
  /// its fds and memory are freed, and its ref stays an ended actor's
  /// (sends throw actor_exited, monitor and join report its exit reason,
  /// restart throws). Children of a running supervisor are never reclaimed.
  std::size_t keep_exited = 128;
};

namespace detail {
struct system_state;
}

/// The actor system: constructing it starts the node process (which forks
/// every actor, holds their mailboxes, reaps them and keeps the process
/// table); destroying it stops every actor in reverse start order and the
/// node. One per program; not copyable.
///
///     pactor::actor_system sys;
///     auto c = sys.spawn<counter>();
///     sys.send(c, add{2});
///     int sum = sys.request<int>(c, total{}, std::chrono::seconds(1));
class actor_system {
public:
  explicit actor_system(actor_system_options opts = {});
  ~actor_system();
  actor_system(const actor_system&) = delete;
  actor_system& operator=(const actor_system&) = delete;

  /// Starts an actor of class A, constructed from copies of `args` (which
  /// travel as msgpack). A needs `pactor::behavior behavior()`; optional
  /// `on_start()` and `on_stop()`.
  template <class A, class... Args>
  actor_ref spawn(Args&&... args) {
    return detail::spawn_class<A>(spawn_options{}, std::forward<Args>(args)...);
  }
  /// Starts an actor whose behaviour `fn(args...)` returns.
  template <class... P, class... Args>
  actor_ref spawn(behavior (*fn)(P...), Args&&... args) {
    return detail::spawn_fn(spawn_options{}, fn, std::forward<Args>(args)...);
  }

  /// As spawn<A>, with a name, mailbox bounds and an overflow policy.
  template <class A, class... Args>
  actor_ref spawn_with(const spawn_options& opts, Args&&... args) {
    return detail::spawn_class<A>(opts, std::forward<Args>(args)...);
  }
  template <class... P, class... Args>
  actor_ref spawn_with(const spawn_options& opts, behavior (*fn)(P...),
                       Args&&... args) {
    return detail::spawn_fn(opts, fn, std::forward<Args>(args)...);
  }

  /// Sends `msg` to `to` (tell). Throws actor_exited if `to` has exited for
  /// good.
  template <class T>
  void send(actor_ref to, const T& msg) {
    detail::send_message(to, self(), msg, 0, 0);
  }

  /// Sends `msg` as a request and waits for the reply: R, or timeout_error,
  /// remote_error (the handler threw, or there was no handler),
  /// actor_exited. A reply that comes after the timeout is dropped.
  template <class R, class T, class Rep, class Period>
  R request(actor_ref to, const T& msg,
            std::chrono::duration<Rep, Period> timeout) {
    return detail::request<R>(to, msg, detail::wait_limit::after(timeout));
  }

  /// Waits until `who` has ended; returns why, or nullopt after `timeout`.
  template <class Rep, class Period>
  std::optional<exit_reason> join(actor_ref who,
                                  std::chrono::duration<Rep, Period> timeout) {
    return join_until(who, detail::wait_limit::after(timeout));
  }

  /// Receives the next message of type T sent to self() (messages of other
  /// types are kept for later receives); nullopt after `timeout`.
  template <class T, class Rep, class Period>
  std::optional<T> receive(std::chrono::duration<Rep, Period> timeout) {
    std::optional<T> out;
    receive_until(
      type_tag<T>(),
      [&](std::span<const std::byte> b) { out.emplace(decode_payload<T>(b)); },
      detail::wait_limit::after(timeout));
    return out;
  }

  /// Asks `who` to stop: a shutdown message goes to the end of its mailbox
  /// (the messages before it are handled first; reason shutdown); it is
  /// killed if it has not stopped within the shutdown timeout.
  void stop(actor_ref who);
  /// Kills `who` at once (reason killed).
  void kill(actor_ref who);
  /// Starts the next incarnation of an actor that ended, on the same
  /// mailbox: messages not yet acknowledged (the one being handled when it
  /// died, then the queued ones) are delivered to it. std::invalid_argument
  /// if it is running. (Supervisors do this by policy: issue 6.)
  void restart(actor_ref who);
  /// The dead letters kept so far (the newest 10,000), and forgets them.
  std::vector<dead_letter> take_dead_letters();
  /// Sends a down message to self() when `who` ends (at once if it has).
  void monitor(actor_ref who);
  /// Stops monitoring `who` (a down already in self()'s mailbox stays).
  void demonitor(actor_ref who);

  /// Names `who`; std::invalid_argument if the name is taken. Names are
  /// freed when their actor ends.
  void register_name(const std::string& name, actor_ref who);
  /// The actor registered as `name`, if any.
  std::optional<actor_ref> whereis(const std::string& name);
  void unregister(const std::string& name);

  /// The address of this program in the system (to receive replies and
  /// messages from actors).
  [[nodiscard]] actor_ref self() const;
  /// Messages nobody could handle so far.
  std::uint64_t dead_letters();
  /// Sets how long this program spins waiting for a reply or a message
  /// before it sleeps (0: never).
  void spin(std::chrono::nanoseconds limit);
  /// The pid of the running incarnation of `who` (0 if it is not running).
  pid_t pid(actor_ref who);
  /// Number of actors alive now.
  std::uint64_t live_actors();

  /// Stops every actor (reverse start order) and the node; the destructor
  /// does it too. Returns whether every actor stopped within its timeout.
  bool shutdown();

private:
  std::optional<exit_reason> join_until(actor_ref who,
                                        detail::wait_limit limit);
  void receive_until(type_tag_t type,
                     const std::function<void(std::span<const std::byte>)>& f,
                     detail::wait_limit limit);
  std::unique_ptr<detail::system_state> s_;
};

} // namespace pactor
