// What the actor layer's templates need from its compiled part: sending an
// encoded message, waiting for a reply, spawning a packed target.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/actors/behavior.hpp>
#include <pactor/actors/errors.hpp>
#include <pactor/actors/spawn_options.hpp>
#include <pactor/runtime/detail/ring.hpp>
#include <pactor/runtime/detail/target.hpp>
#include <pactor/runtime/queue.hpp>
#include <pactor/serialization/codec.hpp>
#include <pactor/serialization/envelope.hpp>

#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace pactor::detail {

/// Envelope flags of the actor layer.
inline constexpr std::uint32_t flag_request = 1;
inline constexpr std::uint32_t flag_reply = 2;
inline constexpr std::uint32_t flag_error = 4;
inline constexpr std::uint32_t flag_system = 8;

/// This process's own address: the root endpoint in the program, the actor
/// in an actor. Throws std::logic_error outside an actor system.
actor_ref self_ref();

/// Puts envelope `e` and `size` payload bytes (written by `write`) into the
/// mailbox of `to`. Throws actor_exited, queue_full (after the send timeout).
void deliver(actor_ref to, const envelope& e, std::size_t size,
             fn_ref<void(std::byte*)> write);

/// Sends `msg` to `to` as `from`.
template <class T>
void send_message(actor_ref to, actor_ref from, const T& msg,
                  std::uint64_t request_id, std::uint32_t flags) {
  fd_collector fds; // fd-backed objects (queues...) cannot travel as bytes
  auto size = packed_size(msg);
  if (!fds.fds().empty())
    throw std::invalid_argument(
      "pactor::send: queues, mutexes and other fd-backed objects cannot be "
      "sent in actor messages yet");
  check_message_size(size);
  envelope e{type_tag<T>(), from.id(), request_id, 0, flags};
  auto write = [&](std::byte* dst) { pack_into(msg, {dst, size}); };
  deliver(to, e, size, write);
}

/// A reply as it arrived.
struct reply_in {
  type_tag_t type = 0;
  std::vector<std::byte> bytes;
};

/// A FIFO lock: threads get it in the order they asked, so a thread that
/// makes requests back to back (a manager get waiting in slices) cannot
/// starve another thread's request.
class fair_mutex {
public:
  void lock() {
    std::unique_lock l(mu_);
    auto mine = next_++;
    turn_.wait(l, [&] { return serving_ == mine; });
  }
  void unlock() {
    {
      std::lock_guard l(mu_);
      ++serving_;
    }
    turn_.notify_all();
  }

private:
  std::mutex mu_;
  std::condition_variable turn_;
  std::uint64_t next_ = 0;
  std::uint64_t serving_ = 0;
};

/// Requests are made one at a time per process (this lock, first come
/// first served).
fair_mutex& request_mutex();
/// A fresh request id for this process (unique across its incarnations).
std::uint64_t next_request_id();
/// Waits for the reply to `request_id` (sent to `target`) in this process's
/// replies ring, dropping replies to other (timed out, duplicate) requests.
/// Throws timeout_error, remote_error (an error reply), actor_exited (the
/// target ended without answering: seen within 1 to 50 ms),
/// actor_system_down.
reply_in await_reply(std::uint64_t request_id, wait_limit limit,
                     actor_ref target);
/// Whether `target`'s mailbox is closed (it ended and was not restarted);
/// throws actor_exited with its reason if so and `raise`.
bool target_ended(actor_ref target, bool raise);

/// Sends a request and waits for its reply, decoded as R.
template <class R, class T>
R request(actor_ref to, const T& msg, wait_limit limit) {
  std::lock_guard lock(request_mutex());
  auto id = next_request_id();
  send_message(to, self_ref(), msg, id, flag_request);
  auto rep = await_reply(id, limit, to);
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    if (rep.type != type_tag<R>())
      throw remote_error("pactor::wrong_reply_type",
                         "the reply is not a " + std::string(type_name<R>()));
    return decode_payload<R>(rep.bytes);
  }
}

/// The outcome of an asynchronous request: a reply, or an error.
using async_callback
  = std::function<void(const reply_in* reply, std::exception_ptr error)>;
/// Registers an asynchronous request of the running actor; its callback
/// runs between messages. std::logic_error outside an actor.
void register_async(std::uint64_t request_id, wait_limit limit,
                    async_callback cb, actor_ref target = {});

/// An actor class whose state a warm restart keeps: `warm_state()` returns
/// a reference to it (msgpack-packable, or trivially copyable: then its
/// bytes are copied as they are).
template <class A>
concept has_warm_state = requires(A& a) {
  { a.warm_state() } -> std::same_as<decltype(a.warm_state())>;
  requires std::is_lvalue_reference_v<decltype(a.warm_state())>;
};

/// The actor that runs in a process: made by its entry point.
class actor_impl {
public:
  actor_impl() = default;
  actor_impl(const actor_impl&) = delete;
  actor_impl& operator=(const actor_impl&) = delete;
  virtual ~actor_impl() = default;
  virtual pactor::behavior make_behavior() = 0;
  virtual void on_start() {
  }
  virtual void on_stop() {
  }
  /// Warm restart: the state's type tag (0: no warm state).
  [[nodiscard]] virtual type_tag_t state_type() const {
    return 0;
  }
  /// Encodes the state into `out`; returns the bytes used. Throws
  /// state_too_large.
  virtual std::size_t save_state(std::span<std::byte> out) {
    (void)out;
    return 0;
  }
  /// Replaces the state with the one encoded in `in` (nothing changes if it
  /// does not decode: decode_error).
  virtual void load_state(std::span<const std::byte> in) {
    (void)in;
  }
};

template <class A>
class class_actor final : public actor_impl {
public:
  template <class... P>
  explicit class_actor(P&&... args) : a_(std::forward<P>(args)...) {
  }
  pactor::behavior make_behavior() override {
    return a_.behavior();
  }
  void on_start() override {
    if constexpr (requires(A & a) { a.on_start(); })
      a_.on_start();
  }
  void on_stop() override {
    if constexpr (requires(A & a) { a.on_stop(); })
      a_.on_stop();
  }
  [[nodiscard]] type_tag_t state_type() const override {
    if constexpr (has_warm_state<A>)
      return type_tag<state_t>();
    else
      return 0;
  }
  std::size_t save_state(std::span<std::byte> out) override {
    if constexpr (has_warm_state<A>) {
      const auto& v = a_.warm_state();
      if constexpr (std::is_trivially_copyable_v<state_t>) {
        if (sizeof(state_t) > out.size())
          throw state_too_large(sizeof(state_t), out.size());
        std::memcpy(out.data(), &v, sizeof(state_t));
        return sizeof(state_t);
      } else {
        auto n = packed_size(v);
        if (n > out.size())
          throw state_too_large(n, out.size());
        pack_into(v, out.first(n));
        return n;
      }
    } else {
      (void)out;
      return 0;
    }
  }
  void load_state(std::span<const std::byte> in) override {
    if constexpr (has_warm_state<A>) {
      if constexpr (std::is_trivially_copyable_v<state_t>) {
        if (in.size() != sizeof(state_t))
          throw decode_error(decode_errc::type_mismatch,
                             "a committed state of " + std::to_string(in.size())
                               + " bytes for a type of "
                               + std::to_string(sizeof(state_t)));
        std::memcpy(&a_.warm_state(), in.data(), sizeof(state_t));
      } else {
        auto v = decode_payload<state_t>(in);
        a_.warm_state() = std::move(v);
      }
    } else {
      (void)in;
    }
  }

private:
  template <class B>
  struct state_of {
    using type = void;
  };
  template <class B>
  requires has_warm_state<B>
  struct state_of<B> {
    using type = std::remove_cvref_t<decltype(std::declval<B&>().warm_state())>;
  };
  using state_t = typename state_of<A>::type;
  A a_;
};

class fn_actor final : public actor_impl {
public:
  explicit fn_actor(pactor::behavior b) : b_(std::move(b)) {
  }
  pactor::behavior make_behavior() override {
    return std::move(b_);
  }

private:
  pactor::behavior b_;
};

/// Runs the actor loop in an actor process; returns its exit code.
int run_actor(const std::function<std::unique_ptr<actor_impl>()>& make);

template <class A, class... P>
int invoke_actor_class(erased_fn, std::span<const std::byte> args) {
  return run_actor([args]() -> std::unique_ptr<actor_impl> {
    auto tuple = decode_payload<std::tuple<P...>>(args);
    return std::apply(
      [](auto&... a) {
        return std::make_unique<class_actor<A>>(std::move(a)...);
      },
      tuple);
  });
}

template <class... P>
int invoke_actor_fn(erased_fn fn, std::span<const std::byte> args) {
  return run_actor([fn, args]() -> std::unique_ptr<actor_impl> {
    auto f = reinterpret_cast<pactor::behavior (*)(P...)>(fn);
    auto tuple = decode_payload<std::tuple<P...>>(args);
    return std::apply(
      [f](auto&... a) {
        return std::make_unique<fn_actor>(f(std::move(a)...));
      },
      tuple);
  });
}

/// Asks the node to start a packed actor; returns its ref.
actor_ref spawn_packed(const packed_target& t, const spawn_options& opts);

/// Packs `args` as a target's arguments; pactor objects that travel as fds
/// cannot be actor arguments (std::invalid_argument).
template <class... P, class... A>
std::vector<std::byte> pack_actor_args(A&&... args) {
  fd_collector fds;
  std::vector<std::byte> out;
  pack_payload(out, std::tuple<P...>(std::forward<A>(args)...));
  if (!fds.fds().empty())
    throw std::invalid_argument(
      "pactor::spawn: queues, mutexes and other fd-backed objects cannot be "
      "actor arguments yet; use messages and actor refs");
  return out;
}

template <class A, class... Args>
actor_ref spawn_class(const spawn_options& opts, Args&&... args) {
  static_assert(std::is_constructible_v<A, std::decay_t<Args>...>,
                "pactor::spawn<A>(args...): A cannot be constructed from "
                "these arguments");
  static_assert(
    requires(A & a) {
      { a.behavior() } -> std::convertible_to<pactor::behavior>;
    },
    "pactor::spawn<A>: A needs a member `pactor::behavior behavior()`");
  if (opts.restart == restart_mode::warm && !has_warm_state<A>)
    throw std::invalid_argument(
      "pactor::spawn: restart_mode::warm needs an actor class with a "
      "`warm_state()` member returning a reference to its state");
  packed_target t;
  t.trampoline = make_function_ref(
    reinterpret_cast<erased_fn>(&invoke_actor_class<A, std::decay_t<Args>...>));
  t.function = t.trampoline;
  t.args = pack_actor_args<std::decay_t<Args>...>(std::forward<Args>(args)...);
  return spawn_packed(t, opts);
}

template <class... P, class... Args>
actor_ref spawn_fn(const spawn_options& opts, pactor::behavior (*fn)(P...),
                   Args&&... args) {
  static_assert(sizeof...(P) == sizeof...(Args),
                "pactor::spawn(fn, args...): fn takes a different number of "
                "arguments");
  if (opts.restart == restart_mode::warm)
    throw std::invalid_argument(
      "pactor::spawn: restart_mode::warm needs an actor class with a "
      "`warm_state()` member; a function actor has no state to keep");
  packed_target t;
  t.trampoline = make_function_ref(
    reinterpret_cast<erased_fn>(&invoke_actor_fn<std::decay_t<P>...>));
  t.function = make_function_ref(reinterpret_cast<erased_fn>(fn));
  t.args = pack_actor_args<std::decay_t<P>...>(std::forward<Args>(args)...);
  return spawn_packed(t, opts);
}

} // namespace pactor::detail
