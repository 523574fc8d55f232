// Supervisors with OTP semantics: child specs, restart strategies, restart
// intensity, and the supervisor API, as an actor (spawn_supervisor) or
// embedded in a program (pactor::supervisor). Guide: docs/supervisors.md;
// design: docs/design/supervisors.md.

#pragma once

#include <pactor/actors/detail/core.hpp>
#include <pactor/actors/exit_reason.hpp>

#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pactor {

class actor_system;

/// Which children a supervisor restarts when one ends.
enum class strategy : std::uint8_t {
  one_for_one,       ///< only that child
  one_for_all,       ///< all children (stopped in reverse order, started in
                     ///< order)
  rest_for_one,      ///< that child and those started after it
  simple_one_for_one ///< one_for_one over dynamic children of one spec
};

/// Whether an ended child is restarted.
enum class restart_type : std::uint8_t {
  permanent, ///< always
  transient, ///< only after an abnormal exit (not normal, not shutdown)
  temporary, ///< never (and it leaves the supervisor's children)
};

enum class child_type : std::uint8_t { worker, supervisor };

/// How a supervisor stops a child.
struct shutdown_policy {
  enum class kind : std::uint8_t {
    brutal_kill, ///< SIGKILL at once
    timeout,     ///< the shutdown message, SIGKILL after `timeout`
    infinity,    ///< the shutdown message, then wait as long as it takes
  };
  kind how = kind::timeout;
  std::chrono::milliseconds timeout{5000};

  static shutdown_policy brutal_kill() {
    return {kind::brutal_kill, std::chrono::milliseconds(0)};
  }
  static shutdown_policy after(std::chrono::milliseconds t) {
    return {kind::timeout, t};
  }
  static shutdown_policy infinity() {
    return {kind::infinity, std::chrono::milliseconds(0)};
  }
};

/// Exponential restart delay with jitter: the n-th restart within the
/// supervisor's period waits initial * 2^(n-1), at most `max`, +/- `jitter`
/// of it. Zero initial: no delay.
struct restart_backoff {
  std::chrono::milliseconds initial{0};
  std::chrono::milliseconds max{1000};
  double jitter = 0.2;
};

struct supervisor_spec;

/// One child of a supervisor: what to start and how to treat its ends.
struct child_spec {
  /// Unique among the supervisor's children (simple_one_for_one: the
  /// template's id; its children are "<id>-<n>").
  std::string id;
  /// Which actor, with which arguments (made by worker<A>(...) or
  /// supervisor_child(...)).
  detail::packed_target start;
  /// How it is spawned: mailbox, restart_mode::cold or warm, rlimits,
  /// CPUs... (a supervised child's mailbox always stays open between its
  /// death and its restart).
  spawn_options options;
  restart_type restart = restart_type::permanent;
  shutdown_policy shutdown{};
  child_type type = child_type::worker;
  restart_backoff backoff{};
};

/// A supervisor: its strategy, restart intensity and children.
struct supervisor_spec {
  strategy how = strategy::one_for_one;
  /// More than `intensity` restarts within `period` (sliding) and the
  /// supervisor stops all its children and exits abnormally
  /// ("pactor::supervisor_gave_up"), for its own supervisor to decide.
  int intensity = 1;
  std::chrono::milliseconds period{5000};
  std::vector<child_spec> children;
  /// The supervisor actor's process name (empty: "supervisor-<id>").
  std::string name;
};

namespace detail {
/// The specs as they travel (to a supervisor actor, in its warm state).
struct child_wire {
  std::string id;
  packed_target start;
  spawn_wire options;
  restart_type restart = restart_type::permanent;
  shutdown_policy::kind shutdown = shutdown_policy::kind::timeout;
  std::int64_t shutdown_ms = 5000;
  child_type type = child_type::worker;
  std::int64_t backoff_initial_ms = 0;
  std::int64_t backoff_max_ms = 1000;
  double backoff_jitter = 0.2;
  MSGPACK_DEFINE(id, start, options, restart, shutdown, shutdown_ms, type,
                 backoff_initial_ms, backoff_max_ms, backoff_jitter)
};
struct supervisor_wire {
  strategy how = strategy::one_for_one;
  int intensity = 1;
  std::int64_t period_ms = 5000;
  std::vector<child_wire> children;
  std::string name;
  /// Spawned by the program (spawn_supervisor), not by a parent supervisor:
  /// nobody restarts it, so when it stops its children's mailboxes close.
  bool top_level = false;
  MSGPACK_DEFINE(how, intensity, period_ms, children, name, top_level)
};
/// Validates and converts (std::invalid_argument naming child and field).
child_wire to_wire(const child_spec& c);
supervisor_wire to_wire(const supervisor_spec& s);
} // namespace detail

/// A child spec for actor class A, constructed from `args` in each
/// incarnation. With options.restart = warm, A needs warm_state().
template <class A, class... Args>
child_spec worker(std::string id, Args&&... args) {
  child_spec c;
  c.id = std::move(id);
  c.start.trampoline
    = detail::make_function_ref(reinterpret_cast<detail::erased_fn>(
      &detail::invoke_actor_class<A, std::decay_t<Args>...>));
  c.start.function = c.start.trampoline;
  c.start.args = detail::pack_actor_args<std::decay_t<Args>...>(
    std::forward<Args>(args)...);
  if constexpr (detail::has_warm_state<A>)
    c.options.restart = restart_mode::warm;
  return c;
}

/// A child spec for an actor whose behaviour `fn(args...)` returns.
template <class... P, class... Args>
child_spec worker(std::string id, behavior (*fn)(P...), Args&&... args) {
  static_assert(sizeof...(P) == sizeof...(Args),
                "pactor::worker(id, fn, args...): fn takes a different number "
                "of arguments");
  child_spec c;
  c.id = std::move(id);
  c.start.trampoline
    = detail::make_function_ref(reinterpret_cast<detail::erased_fn>(
      &detail::invoke_actor_fn<std::decay_t<P>...>));
  c.start.function
    = detail::make_function_ref(reinterpret_cast<detail::erased_fn>(fn));
  c.start.args
    = detail::pack_actor_args<std::decay_t<P>...>(std::forward<Args>(args)...);
  return c;
}

/// A child that is itself a supervisor (type supervisor, shutdown
/// infinity, warm: it keeps its children's refs across its own restarts).
child_spec supervisor_child(std::string id, const supervisor_spec& spec);

/// A child as which_children reports it.
struct child_info {
  std::string id;
  actor_ref ref; ///< the same across restarts
  pid_t pid = 0; ///< 0: not running
  child_type type = child_type::worker;
  std::string status; ///< "running", "restarting", "terminated"
  std::uint32_t restarts = 0;
  MSGPACK_DEFINE(id, ref, pid, type, status, restarts)
};

/// count_children: as OTP's specs / active / supervisors / workers.
struct child_counts {
  std::uint32_t specs = 0;
  std::uint32_t active = 0;
  std::uint32_t supervisors = 0;
  std::uint32_t workers = 0;
  MSGPACK_DEFINE(specs, active, supervisors, workers)
};

namespace detail {
/// The messages of the supervisor API (requests to a supervisor actor).
struct sup_start_child {
  child_wire spec;
  std::vector<std::byte> args; ///< simple_one_for_one: the child's arguments
  MSGPACK_DEFINE(spec, args)
};
struct sup_child_op {
  std::uint8_t op = 0; ///< 0 terminate, 1 restart, 2 delete
  std::string id;
  MSGPACK_DEFINE(op, id)
};
struct sup_which {
  MSGPACK_DEFINE()
};
struct sup_count {
  MSGPACK_DEFINE()
};
struct sup_restart_due {
  std::string id;
  MSGPACK_DEFINE(id)
};
actor_ref spawn_supervisor(const supervisor_spec& spec);
} // namespace detail

/// A supervisor actor: the handle its starter uses. Every call is a request
/// to the supervisor (from the program or from inside an actor); errors
/// come back as remote_error ("std::invalid_argument": no such child...).
class supervisor_ref {
public:
  supervisor_ref() = default;
  explicit supervisor_ref(actor_ref r) : ref_(r) {
  }
  [[nodiscard]] actor_ref ref() const noexcept {
    return ref_;
  }
  /// Adds and starts a child; returns its ref.
  actor_ref start_child(const child_spec& spec,
                        std::chrono::milliseconds timeout
                        = std::chrono::seconds(10));
  /// simple_one_for_one: starts a child of the template with `args`.
  template <class... Args>
  actor_ref start_dynamic(std::chrono::milliseconds timeout, Args&&... args) {
    detail::sup_start_child m;
    m.args = detail::pack_actor_args<std::decay_t<Args>...>(
      std::forward<Args>(args)...);
    return detail::request<actor_ref>(ref_, m,
                                      detail::wait_limit::after(timeout));
  }
  /// Stops a child (its shutdown policy); it stays a spec, not restarted.
  void terminate_child(const std::string& id, std::chrono::milliseconds timeout
                                              = std::chrono::seconds(30));
  /// Starts a terminated child again.
  actor_ref restart_child(const std::string& id,
                          std::chrono::milliseconds timeout
                          = std::chrono::seconds(10));
  /// Forgets a terminated child (its mailbox and ref go).
  void delete_child(const std::string& id, std::chrono::milliseconds timeout
                                           = std::chrono::seconds(10));
  std::vector<child_info> which_children(std::chrono::milliseconds timeout
                                         = std::chrono::seconds(10));
  child_counts count_children(std::chrono::milliseconds timeout
                              = std::chrono::seconds(10));

private:
  actor_ref ref_;
};

/// Starts a supervisor actor (permanent under nobody: the program decides
/// when it ends; join(ref) sees why). Its children start in order before
/// it answers its first request.
supervisor_ref spawn_supervisor(actor_system& sys, const supervisor_spec& spec);

/// A supervisor that runs inside this program (a service): its decisions
/// run here, on a background thread (the default) or on the program's own
/// event loop (poll_fd() readable, or next_timer() due: call poll()); the
/// node does the forking, so threads in the program are no hazard and the
/// program's fds never reach the children. Destroying it stops its
/// children in reverse order.
class supervisor {
public:
  enum class mode : std::uint8_t { background_thread, event_loop };
  supervisor(actor_system& sys, const supervisor_spec& spec,
             mode m = mode::background_thread);
  ~supervisor();
  supervisor(const supervisor&) = delete;
  supervisor& operator=(const supervisor&) = delete;

  actor_ref start_child(const child_spec& spec);
  template <class... Args>
  actor_ref start_dynamic(Args&&... args) {
    return start_dynamic_packed(detail::pack_actor_args<std::decay_t<Args>...>(
      std::forward<Args>(args)...));
  }
  void terminate_child(const std::string& id);
  actor_ref restart_child(const std::string& id);
  void delete_child(const std::string& id);
  std::vector<child_info> which_children();
  child_counts count_children();
  /// The ref of child `id` (std::invalid_argument if there is none).
  actor_ref child(const std::string& id);

  /// event_loop mode: readable when there is something to decide.
  [[nodiscard]] int poll_fd() const;
  /// event_loop mode: when poll() must run even if poll_fd() stays quiet.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point>
  next_timer() const;
  /// event_loop mode: handles what is pending, without blocking.
  void poll();
  /// Whether it gave up (restart intensity exceeded): its children are
  /// stopped; the program decides.
  [[nodiscard]] bool gave_up() const;
  /// Stops the children in reverse order (and the background thread).
  void stop();

private:
  actor_ref start_dynamic_packed(std::vector<std::byte> args);
  struct impl;
  std::unique_ptr<impl> p_;
};

} // namespace pactor
