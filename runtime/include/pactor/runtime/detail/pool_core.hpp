// The pool's machinery: records, the worker-side chunk context, the chunk
// trampolines, jobs and the core that runs them. Protocol and failure cases:
// docs/design/pool.md.

#pragma once

#include <pactor/runtime/detail/ring.hpp>
#include <pactor/runtime/detail/target.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/serialization/codec.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace pactor {

/// How far a pool call has come (the progress callback's argument).
struct progress_info {
  /// Items with a result (a value or an error).
  std::size_t done = 0;
  /// Items in the call; 0 while unknown (an input range without a size).
  std::size_t total = 0;
  /// Seconds since the call started.
  double elapsed_s = 0;
  /// Items per second so far.
  double rate = 0;
  /// Seconds left at that rate; negative while unknown.
  double eta_s = -1;
};

} // namespace pactor

namespace pactor::detail {

/// One worker's public state, in shared memory (docs/design/pool.md).
struct pool_slot {
  std::uint64_t chunk;     // the chunk the worker claimed
  std::uint64_t running;   // offset + 1 of the item running, 0 = none
  std::int64_t started_ns; // CLOCK_MONOTONIC start of that item (timed)
  std::uint32_t state;     // pool_slot_state
  std::uint32_t pid;
  std::uint64_t generation; // which start of the slot wrote this
  char message[216];        // the initializer's error
};
static_assert(sizeof(pool_slot) == 256);
static_assert(std::is_trivially_copyable_v<pool_slot>);

enum pool_slot_state : std::uint32_t {
  slot_starting = 0,
  slot_ready = 1,
  slot_init_failed = 2,
};

struct task_header {
  std::uint64_t chunk;
  std::uint64_t trampoline; // an address in the parent (0: bound callable)
  std::uint64_t function;
  std::uint32_t count;
  std::uint32_t refs_bytes; // msgpack [ref, ref] after the header (spawn)
};

struct result_header {
  std::uint64_t chunk;
  std::uint32_t offset;
  std::uint32_t count;
  std::uint32_t kind; // result_values or result_error
  std::uint32_t reserved;
};

inline constexpr std::uint32_t result_values = 1;
inline constexpr std::uint32_t result_error = 2;

/// Returns CLOCK_MONOTONIC in nanoseconds (the same clock in every process).
std::int64_t monotonic_ns() noexcept;

/// Worker side: collects one chunk's results and writes them to the result
/// ring (values in order; an error record for an item that threw).
class chunk_context {
public:
  chunk_context(ring& results, pool_slot& slot, bool timed);

  /// A new chunk of `count` items.
  void start(std::uint64_t chunk, std::uint32_t count);
  /// Item `i` starts running.
  void begin(std::uint32_t i) noexcept;
  /// No item is running (its result is buffered, or being written).
  void end_item() noexcept;
  /// The running item's result.
  template <class T>
  void value(const T& v) {
    const auto mark = buf_.size();
    try {
      pk_.pack(v);
    } catch (...) {
      buf_.resize(mark); // no half-packed value in the record
      throw;
    }
    value_added();
  }
  void value_nil() {
    pk_.pack_nil();
    value_added();
  }
  /// The running item (`i`) threw the current exception.
  void error_current(std::uint32_t i);
  /// Every item without a result yet fails with the current exception (the
  /// chunk could not be decoded or run).
  void fail_rest();
  /// Writes what is left; nothing runs any more.
  void finish();

private:
  void value_added();
  void flush();
  void reset_values();
  void write_error(std::uint32_t i, const std::string& type,
                   const std::string& message);

  ring* results_;
  pool_slot* slot_;
  bool timed_;
  std::uint64_t chunk_ = 0;
  std::uint32_t total_ = 0; // items in the chunk
  std::uint32_t first_ = 0; // offset of the first buffered value
  std::uint32_t count_ = 0; // buffered values
  std::vector<std::byte> buf_;
  byte_writer writer_{&buf_};
  msgpack::packer<byte_writer> pk_{writer_};
};

/// Runs a chunk: `items` is the msgpack array of the chunk's arguments.
using chunk_runner
  = void (*)(erased_fn fn, const msgpack::object& items, chunk_context& ctx);
/// The same for a bound (captured) callable.
using bound_runner
  = std::function<void(const msgpack::object& items, chunk_context& ctx)>;

/// Calls `call(item)` for every item of the chunk, item by item.
template <class Item, class R, class Call>
void run_items(const msgpack::object& items, chunk_context& ctx, Call&& call) {
  if (items.type != msgpack::type::ARRAY)
    throw std::runtime_error("pactor::pool: a chunk is not an array");
  const auto n = items.via.array.size;
  for (std::uint32_t i = 0; i < n; ++i) {
    ctx.begin(i);
    try {
      Item v{};
      items.via.array.ptr[i].convert(v);
      if constexpr (std::is_void_v<R>) {
        call(std::move(v));
        ctx.value_nil();
      } else {
        ctx.value(call(std::move(v)));
      }
    } catch (const exit_request&) {
      throw; // pactor::exit in a task ends the worker
    } catch (...) {
      ctx.error_current(i);
    }
  }
}

template <class... P>
struct first_param {
  using type = void;
};
template <class P0, class... P>
struct first_param<P0, P...> {
  using type = std::decay_t<P0>;
};

/// What one item of a chunk is for a function taking P...: the single
/// argument, or (star: starmap, apply) the tuple of all of them.
template <bool Star, class... P>
using item_of = std::conditional_t<Star, std::tuple<std::decay_t<P>...>,
                                   typename first_param<P...>::type>;

/// The chunk trampoline for a function R(P...).
template <bool Star, class R, class... P>
void run_chunk(erased_fn erased, const msgpack::object& items,
               chunk_context& ctx) {
  auto fn = reinterpret_cast<R (*)(P...)>(erased);
  using item_t = item_of<Star, P...>;
  run_items<item_t, R>(items, ctx, [fn](item_t&& v) -> R {
    if constexpr (Star)
      return std::apply(fn, std::move(v));
    else
      return fn(std::move(v));
  });
}

/// Parent side: encodes one chunk's items.
class chunk_builder {
public:
  chunk_builder(std::size_t max_items, std::size_t max_bytes)
      : max_items_(max_items), max_bytes_(max_bytes) {
  }
  /// Appends one item (nothing if packing it throws).
  template <class T>
  void add(const T& item) {
    const auto mark = buf_.size();
    try {
      pk_.pack(item);
    } catch (...) {
      buf_.resize(mark);
      throw;
    }
    ++count_;
  }
  /// Whether the chunk is full (by items or bytes).
  [[nodiscard]] bool full() const noexcept {
    return count_ >= max_items_ || buf_.size() >= max_bytes_;
  }
  [[nodiscard]] std::size_t count() const noexcept {
    return count_;
  }
  std::vector<std::byte>& bytes() noexcept {
    return buf_;
  }

private:
  std::size_t max_items_;
  std::size_t max_bytes_;
  std::size_t count_ = 0;
  std::vector<std::byte> buf_;
  byte_writer writer_{&buf_};
  msgpack::packer<byte_writer> pk_{writer_};
};

class pool_core;

/// One pool call (map, imap, apply...): produces items, takes results.
/// The core calls these under its mutex.
class job_base {
public:
  job_base() = default;
  job_base(const job_base&) = delete;
  job_base& operator=(const job_base&) = delete;
  virtual ~job_base() = default;

  // Set by the pool call before submit.
  chunk_runner runner = nullptr; // nullptr: the core's bound callable
  erased_fn function = nullptr;
  std::size_t chunksize = 1;
  /// Items produced but not yet consumed by the caller (imap's bound).
  std::size_t read_ahead = SIZE_MAX;
  /// Report progress (callback and/or bar) for this job.
  bool report_progress = false;
  /// Whether the per-item error message names the index ("task 3").
  bool indexed = true;

  // Kept by the core.
  std::size_t produced = 0;
  std::size_t resolved = 0;
  bool exhausted = false;
  bool cancelled = false;
  bool finished = false;
  std::exception_ptr input_error;
  std::chrono::steady_clock::time_point started{};
  /// The size of the input when known up front (progress).
  std::size_t known_total = 0;
  std::chrono::steady_clock::time_point last_report{};
  std::size_t last_reported = 0;

  /// Encodes items from the input into `b` until it is full or the input
  /// ends (then sets `exhausted`). An exception from the input propagates.
  virtual void produce(chunk_builder& b) = 0;
  /// `n` results from item `index` on.
  virtual void on_values(std::size_t index, const msgpack::object* values,
                         std::size_t n)
    = 0;
  /// Item `index` failed.
  virtual void on_error(std::size_t index, std::exception_ptr e) = 0;
  /// Every item has a result and the input is exhausted (or the job was
  /// ended by terminate). Called once, outside the result ring.
  virtual void on_finished() {
  }
  /// How many items the caller has taken (imap); produce stays within
  /// consumed() + read_ahead.
  [[nodiscard]] virtual std::size_t consumed() const noexcept {
    return produced;
  }
};

/// What the core is built with (pool_options, resolved).
struct pool_core_config {
  std::size_t processes = 1;
  start_method method = start_method::fork;
  std::size_t max_tasks_per_child = 0;
  unsigned retries = 0;
  std::chrono::nanoseconds task_timeout{0};
  std::size_t task_ring_bytes = std::size_t{4} << 20;
  std::size_t result_ring_bytes = std::size_t{8} << 20;
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  std::optional<packed_target> initializer;
  std::function<void(const progress_info&)> on_progress;
  bool progress_bar = false;
  std::string name = "pool";
};

struct pool_core_impl;

/// The pool's engine (docs/design/pool.md). Every member takes mutex().
class pool_core : public std::enable_shared_from_this<pool_core> {
public:
  /// Starts the workers. A bound core's workers are forked holding `bound`
  /// (its jobs have runner == nullptr).
  explicit pool_core(pool_core_config cfg, bound_runner bound = {});
  ~pool_core();
  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;

  [[nodiscard]] std::recursive_mutex& mutex() noexcept;
  [[nodiscard]] const pool_core_config& config() const noexcept;

  /// Registers a job; its chunks start moving at once. std::logic_error
  /// after close/terminate; pool_broken when the initializer keeps failing.
  void submit(std::shared_ptr<job_base> job);
  /// Runs the core until `done()` or the limit; returns done().
  bool run_until(const std::function<bool()>& done, wait_limit limit);
  /// Drops the job's chunks that are not in the task ring yet; returns
  /// whether none of it had been dispatched (then it is cancelled).
  bool cancel(job_base& job);
  /// Cancels every job none of whose chunks is in the task ring yet.
  void cancel_pending();
  /// Nobody will read `job`'s results: it reads no more input, its chunks
  /// not yet in the task ring are dropped, and it ends when the others
  /// have run.
  void abandon(job_base& job) noexcept;
  /// A bound core: once its jobs are finished its workers are told to exit.
  void retire_when_idle() noexcept;
  /// Whether every job submitted has finished.
  [[nodiscard]] bool idle() noexcept;
  /// Refuses new jobs; the workers exit once the work is done (join).
  void close();
  [[nodiscard]] bool closed() const noexcept;
  /// After close: runs every job to its end and waits for the workers to
  /// exit. Returns false on timeout. std::logic_error if not closed.
  bool join(wait_limit limit);
  /// Stops the workers now (SIGTERM, SIGKILL after 1 s); unfinished jobs
  /// fail with pool_terminated. Idempotent.
  void terminate() noexcept;
  /// The workers' pids.
  [[nodiscard]] std::vector<pid_t> pids();
  /// Worker processes started so far (replacements included).
  [[nodiscard]] std::size_t workers_started() const noexcept;

private:
  std::unique_ptr<pool_core_impl> impl_;
};

/// The type name of an exception object, demangled.
std::string exception_type_name(const std::exception& e);

} // namespace pactor::detail
