// Internal declarations shared by the runtime's source files. Not installed.

#pragma once

#include <pactor/runtime/process.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <sys/types.h>
#include <vector>

namespace pactor::detail {

/// Owns one file descriptor; closes it on destruction.
class unique_fd {
public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {
  }
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {
  }
  unique_fd& operator=(unique_fd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() {
    reset();
  }
  [[nodiscard]] int get() const noexcept {
    return fd_;
  }
  explicit operator bool() const noexcept {
    return fd_ >= 0;
  }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) noexcept;

private:
  int fd_ = -1;
};

/// Demangles a type name (typeid(x).name()); the name itself on failure.
std::string demangle(const char* name);

/// Throws std::system_error for `errno` with "pactor: <what>".
[[noreturn]] void throw_errno(const char* what);
[[noreturn]] void throw_errno(int err, const char* what);

/// Polls one fd for POLLIN up to `timeout_ms` (-1 = forever), retrying on
/// EINTR with the remaining time. Returns whether it became ready.
bool poll_in(int fd, std::int64_t timeout_ms);

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a unix socket.
/// Returns 0 or an errno value.
int send_with_fds(int sock, std::span<const std::byte> data,
                  std::span<const int> fds) noexcept;

/// Receives one message (datagram semantics) into `buf`, taking any attached
/// fds (CLOEXEC) into `fds`. `flags` adds recvmsg flags (MSG_PEEK,
/// MSG_DONTWAIT). Returns the byte count (0 on EOF) or -errno (-EMSGSIZE
/// for a message or fd list cut short).
ssize_t recv_with_fds(int sock, std::span<std::byte> buf,
                      std::vector<unique_fd>& fds, int flags = 0) noexcept;

/// The size of the next message (datagram semantics) on `sock` without
/// taking it (MSG_PEEK | MSG_TRUNC; its fds stay queued). `flags` adds
/// recvmsg flags (MSG_DONTWAIT). Returns the byte count (0 on EOF or an
/// empty message) or -errno.
ssize_t next_message_size(int sock, int flags = 0) noexcept;

/// Creates a CLOEXEC memfd holding `bytes`.
unique_fd make_memfd(const char* name, std::span<const std::byte> bytes);

/// Reads a whole memfd (or file) from offset 0.
std::vector<std::byte> read_whole_fd(int fd);

/// Returns field `n` (1-based, as in proc(5)) of /proc/PID/stat as a number,
/// 0 if it cannot be read. 0 for `pid` means this process.
std::uint64_t proc_stat_field(pid_t pid, int n);

/// Returns the number of threads in this process.
int thread_count();

/// Returns the start time of `pid` (clock ticks after boot), 0 if unknown.
inline std::uint64_t process_start_time(pid_t pid) {
  return proc_stat_field(pid, 22);
}

/// Returns whether the process `pid` that started at `start_time` is gone
/// (dead, or its pid reused by a process that started at another time).
bool process_gone(std::int32_t pid, std::uint64_t start_time);

/// Process-wide runtime state.
struct globals_t {
  std::mutex mu;
  std::string argv0;
  bool initialized = false;
  std::atomic<start_method> default_method{start_method::fork};
  process_info current{"MainProcess", 0, false};
  std::optional<process_info> parent;
  std::vector<std::uint32_t> identity;
  std::uint32_t child_counter = 0;
  bool in_child = false;
};
globals_t& globals();

/// The bootstrap record a spawn or forkserver child reads from its memfd.
struct bootstrap {
  std::uint32_t version = 1;
  std::string name;
  bool daemon = false;
  std::int32_t parent_pid = 0;
  std::string parent_name;
  std::vector<std::uint32_t> identity;
  function_ref trampoline;
  function_ref function;
  std::vector<std::byte> args;
  MSGPACK_DEFINE(version, name, daemon, parent_pid, parent_name, identity,
                 trampoline, function, args)
};

/// What a child sets up before running anything else. Only async-signal-safe
/// calls. `keep` and `inheritable` are sorted fd lists (>= 0).
struct child_setup {
  pid_t expected_parent = 0;
  bool parent_death_signal = true;
  std::span<const int> keep;        // fds >= 3 to keep open
  std::span<const int> inheritable; // fds whose CLOEXEC is cleared
  bool keep_stdin = false;
};
void prepare_child(const child_setup& s) noexcept;

/// In a child right after fork (or after exec): records who it is, clears the
/// parent's children table and forkserver client, names the process.
void become_child(const std::string& name, bool daemon,
                  const process_info& parent,
                  std::vector<std::uint32_t> identity);

/// Runs a target in a child and returns its exit code; reports an escaping
/// exception on stderr (exit code 1). Flushes stdio.
int run_target(const std::function<int()>& fn) noexcept;

/// Python's _exit_function: terminates daemonic children, joins the others,
/// stops the forkserver. Runs at exit of the program and of every child.
void cleanup_children() noexcept;

/// Ends a child after its target: cleanup_children(), then _exit(code).
[[noreturn]] void child_exit(int code) noexcept;

/// Runs the bootstrap record in `memfd` and exits (spawn and forkserver
/// children). Exit 125 if the target cannot be found or decoded.
[[noreturn]] void run_bootstrap(int memfd);

/// Shared state behind a pactor::process handle.
struct process_state {
  std::mutex mu;
  start_method method = start_method::fork;
  std::string name;
  std::vector<std::uint32_t> identity; // e.g. {1, 2} for "Process-1:2"
  bool daemon = false;
  std::vector<int> pass_fds;
  bool allow_fork_with_threads = false;
  std::function<int()> fork_fn;
  std::function<packed_target()> packed_fn;

  bool started = false;
  pid_t pid = 0;
  unique_fd pidfd;  // fork/spawn: a pidfd of our child; forkserver: of its
  unique_fd status; // forkserver only: the per-child status socket
  std::optional<int> exitcode;
  bool core_dumped = false;
};

/// Result of launching a child.
struct launched {
  pid_t pid = 0;
  unique_fd pidfd;
  unique_fd status;
};

launched launch_fork(process_state& s);
launched launch_spawn(process_state& s, std::span<const std::byte> boot);
launched launch_forkserver(process_state& s, std::span<const std::byte> boot);

/// Spawns this executable with `env_name=<fd>` in its environment, keeping
/// `fd` open (and inheritable) in the child. Used for spawn children and the
/// forkserver itself.
launched spawn_self(const char* env_name, int fd, std::span<const int> pass_fds,
                    bool parent_death_signal, const std::string& name);

/// The forkserver's main loop; `control` is its end of the control socket.
[[noreturn]] void forkserver_main(int control);

/// Stops the forkserver (at exit) and forgets it (in a forked child).
void forkserver_shutdown() noexcept;
void forkserver_forget_after_fork() noexcept;

/// Clears the children table in a forked child.
void children_forget_after_fork() noexcept;

/// Converts a raw wait status into (exitcode, core dumped).
void decode_wait_status(int status, std::optional<int>& exitcode,
                        bool& core_dumped) noexcept;

inline constexpr int exit_code_bootstrap_failed = 125;

} // namespace pactor::detail
