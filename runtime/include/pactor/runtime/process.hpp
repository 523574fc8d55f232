// Child processes with the fork, spawn and forkserver start methods
// (cf. Python's multiprocessing.Process).

#pragma once

#include <pactor/runtime/detail/target.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <type_traits>
#include <vector>

namespace pactor {

/// How a child process is created.
enum class start_method : std::uint8_t {
  /// fork() the calling process; fast; any callable. Refused when the caller
  /// has more than one thread.
  fork,
  /// fork() + exec of the same executable; the child runs only the static
  /// initializers and the target. Needs pactor::init in main.
  spawn,
  /// Ask a single-threaded server process, started on first use, to fork.
  forkserver,
};

/// Returns "fork", "spawn" or "forkserver".
std::string_view to_string(start_method m) noexcept;

/// Sets the start method used by process(target, args...) (Python's
/// multiprocessing.set_start_method). The default is fork.
void set_start_method(start_method m) noexcept;

/// Returns the start method used by process(target, args...).
[[nodiscard]] start_method get_start_method() noexcept;

template <start_method M>
struct start_method_tag {
  static constexpr start_method value = M;
};
using with_fork_t = start_method_tag<start_method::fork>;
using with_spawn_t = start_method_tag<start_method::spawn>;
using with_forkserver_t = start_method_tag<start_method::forkserver>;
/// Selects fork: process(pactor::with_fork, callable, args...).
inline constexpr with_fork_t with_fork{};
/// Selects spawn: process(pactor::with_spawn, function, args...).
inline constexpr with_spawn_t with_spawn{};
/// Selects forkserver: process(pactor::with_forkserver, function, args...).
inline constexpr with_forkserver_t with_forkserver{};

/// Ends the calling child process's target with exit code `code`: stdio is
/// flushed and the process exits without running the parent's atexit handlers
/// or static destructors (like sys.exit inside a Python target). Outside a
/// pactor child it calls std::exit.
[[noreturn]] void exit(int code);

namespace detail {
struct process_state;
template <class T>
struct is_start_method_tag : std::false_type {};
template <start_method M>
struct is_start_method_tag<start_method_tag<M>> : std::true_type {};
} // namespace detail

/// A child process running a target function (Python's Process).
///
/// `process` is a handle: copies refer to the same child. A child whose last
/// handle is dropped keeps running; it is reaped by active_children(), by the
/// next start(), or at exit, where daemonic children are terminated and the
/// others are waited for (as in Python).
///
/// The child dies with its parent (a parent-death signal, checked right after
/// it is set), inherits no fd >= 3 except pass_fds, starts with default signal
/// handlers and stdin on /dev/null, and shows its name in `ps -o comm`.
///
/// Example:
///
///     void greet(std::string who) { std::printf("hello %s\n", who.c_str()); }
///
///     pactor::process p(pactor::with_spawn, greet, std::string("bob"));
///     p.start();
///     if (!p.join(std::chrono::seconds(5)))
///       p.kill();
///     int code = p.exitcode().value(); // -N if killed by signal N
class process {
public:
  /// An empty handle; start() on it is an error.
  process() noexcept;

  /// A process running `target(args...)` with the default start method. With
  /// fork any callable works; with spawn or forkserver the target must be a
  /// captureless function whose arguments msgpack can pack.
  template <class F, class... A>
  requires(
    !std::is_same_v<
      std::remove_cvref_t<F>,
      process> && !detail::is_start_method_tag<std::remove_cvref_t<F>>::value) explicit process(F&&
                                                                                                  target,
                                                                                                A&&... args)
      : process(get_start_method()) {
    if constexpr (detail::captureless_function<std::remove_cvref_t<F>>) {
      auto fn = +target;
      set_fork_target(fn, args...);
      set_packed_target(
        [fn, ... a = args]() { return detail::pack_target(fn, a...); });
    } else {
      set_fork_target(std::forward<F>(target), std::forward<A>(args)...);
    }
  }

  /// A process started with fork running any callable on copies of `args`.
  template <class F, class... A>
  process(with_fork_t, F&& target, A&&... args) : process(start_method::fork) {
    set_fork_target(std::forward<F>(target), std::forward<A>(args)...);
  }

  /// A process started with spawn or forkserver. `target` must be a
  /// captureless function; its arguments are encoded with msgpack now.
  template <start_method M, class F, class... A>
  requires(M != start_method::fork)
    process(start_method_tag<M>, F&& target, A&&... args)
      : process(M) {
    static_assert(detail::captureless_function<std::remove_cvref_t<F>>,
                  "pactor::process: spawn and forkserver need a captureless "
                  "function as target (a capturing lambda cannot be found in "
                  "another process); pass the data as arguments");
    if constexpr (detail::captureless_function<std::remove_cvref_t<F>>) {
      // Packed at start(), so that fds of pactor objects among the
      // arguments are collected into the child's pass_fds then.
      set_packed_target([fn = +target, ... a = std::forward<A>(args)]() {
        return detail::pack_target(fn, a...);
      });
    }
  }

  /// Sets the name (before start); the default is "Process-N".
  process& name(std::string value);
  /// Returns the name.
  [[nodiscard]] const std::string& name() const;

  /// Makes the process daemonic (before start): it is terminated when the
  /// parent exits instead of being waited for, and may not start children.
  process& daemon(bool value);
  /// Returns whether the process is daemonic.
  [[nodiscard]] bool daemon() const;

  /// Keeps these fds open in the child, at the same numbers (before start).
  process& pass_fds(std::vector<int> fds);

  /// Lets fork run in a process with more than one thread (before start).
  /// Only async-signal-safe work is then safe in the child.
  process& allow_fork_with_threads(bool value);

  /// Returns the start method.
  [[nodiscard]] start_method method() const;

  /// Starts the child. Throws std::logic_error on misuse (started twice, fork
  /// with threads, spawn without pactor::init, ...), std::system_error when
  /// the system refuses (fork or exec failed).
  void start();

  /// Waits until the child exits.
  void join();

  /// Waits up to `timeout` for the child to exit; returns whether it did.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_for(
      std::chrono::ceil<std::chrono::milliseconds>(timeout).count());
  }

  /// Returns whether the child was started and has not exited yet.
  [[nodiscard]] bool is_alive();

  /// Returns the exit code: >= 0 the exit status, -N killed by signal N,
  /// empty while running or before start.
  [[nodiscard]] std::optional<int> exitcode();

  /// Returns whether the child dumped core when a signal killed it.
  [[nodiscard]] bool dumped_core();

  /// Returns the child's pid, 0 before start.
  [[nodiscard]] pid_t pid() const;

  /// Returns an fd that becomes readable when the child exits (for poll, or
  /// pactor::wait later); -1 before start. Owned by the process.
  [[nodiscard]] int sentinel() const;

  /// Sends SIGTERM (nothing if the child has exited).
  void terminate();

  /// Sends SIGKILL (nothing if the child has exited).
  void kill();

  friend bool operator==(const process& a, const process& b) noexcept {
    return a.state_ == b.state_;
  }

private:
  friend std::vector<process> active_children();

  explicit process(start_method m);
  explicit process(std::shared_ptr<detail::process_state> s) noexcept;

  bool join_for(std::int64_t timeout_ms);
  void set_fork_function(std::function<int()> fn);
  void set_packed_target(std::function<detail::packed_target()> fn);

  template <class F, class... A>
  void set_fork_target(F&& target, A&&... args) {
    auto holder
      = std::make_shared<std::tuple<std::decay_t<F>, std::decay_t<A>...>>(
        std::forward<F>(target), std::forward<A>(args)...);
    set_fork_function([holder]() -> int {
      return std::apply(
        [](auto& fn, auto&... a) {
          return detail::call_for_exit_code(fn, a...);
        },
        *holder);
    });
  }

  std::shared_ptr<detail::process_state> state_;
};

/// Returns the live children of this process, reaping those that exited
/// (Python's active_children).
[[nodiscard]] std::vector<process> active_children();

/// Who a process is.
struct process_info {
  std::string name;
  pid_t pid = 0;
  bool daemon = false;
};

/// Returns this process: "MainProcess" in the program, the child's name in
/// a child (Python's current_process).
[[nodiscard]] process_info current_process();

/// Returns the process that started this one, empty in the main process
/// (Python's parent_process).
[[nodiscard]] std::optional<process_info> parent_process();

/// Starts the forkserver now instead of on first use, e.g. early in main
/// before the program starts threads or grows its heap. Idempotent.
void start_forkserver();

/// Stops the forkserver, killing any children it still runs. The next
/// forkserver start starts a new one. Idempotent.
void stop_forkserver() noexcept;

} // namespace pactor
