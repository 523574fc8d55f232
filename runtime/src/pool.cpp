// The pool's core, its workers and its progress bar (docs/design/pool.md).

#include <pactor/runtime/pool.hpp>
#include <pactor/runtime/value.hpp>

#include "internal.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <optional>
#include <poll.h>
#include <thread>
#include <typeinfo>
#include <unistd.h>
#include <unordered_map>

namespace pactor {

std::string worker_died::describe(std::size_t index, bool indexed, pid_t pid,
                                  int signal, int exit_code,
                                  unsigned attempts) {
  std::string s = "pactor::worker_died: ";
  s += indexed ? "task " + std::to_string(index) : std::string("the task");
  s += ": its worker (pid " + std::to_string(pid) + ") ";
  if (signal != 0) {
    const char* name = ::sigabbrev_np(signal);
    s += "was killed by signal " + std::to_string(signal);
    if (name != nullptr)
      s += std::string(" (SIG") + name + ")";
  } else {
    s += "exited with code " + std::to_string(exit_code);
  }
  s += " while running it";
  if (attempts > 1)
    s += "; " + std::to_string(attempts) + " workers died running it";
  return s;
}

namespace detail {

namespace {

template <class T>
std::atomic_ref<T> aref(T& v) noexcept {
  return std::atomic_ref<T>(v);
}

/// A ring that travels to spawn/forkserver workers as its fds.
struct ring_handle {
  using pactor_fd_handle = void;
  ring r;
  [[nodiscard]] std::array<int, 3> fds() const noexcept {
    return r.fds();
  }
  static ring_handle attach(const std::array<int, 3>& f) {
    return ring_handle{ring::attach(f)};
  }
};

struct worker_params {
  std::uint32_t index = 0;
  std::uint64_t generation = 0;
  bool timed = false;
  bool fork = true;
  std::uint64_t max_tasks = 0;
  bool has_init = false;
  packed_target init;
  MSGPACK_DEFINE(index, generation, timed, fork, max_tasks, has_init, init)
};

/// The result ring was closed: the pool is gone; the worker ends.
struct pool_gone {};

constexpr std::size_t flush_bytes = std::size_t{256} << 10;
constexpr std::uint32_t init_failures_to_break = 3;
constexpr std::size_t max_outstanding_chunks = 65536;

// Cancel marks: one word per chunk id modulo cancel_slots, (id << 2) |
// state. The core writes `queued` before a chunk enters the task ring; a
// worker claims it with a CAS to `claimed`; cancel() wins with a CAS to
// `cancelled`, and the worker then skips the chunk. A word holding another
// id (a newer chunk took the slot) means "not cancellable": it runs.
constexpr std::size_t cancel_slots = 65536;
constexpr std::uint64_t mark_queued = 0;
constexpr std::uint64_t mark_claimed = 1;
constexpr std::uint64_t mark_cancelled = 2;

void put_record(ring& r, std::span<const std::byte> bytes) {
  auto write
    = [&](std::byte* dst) { std::memcpy(dst, bytes.data(), bytes.size()); };
  if (r.put(bytes.size(), write, wait_limit::forever()) != ring_status::ok)
    throw pool_gone{};
}

void write_array32(std::byte* at, std::uint32_t n) {
  at[0] = std::byte{0xdd};
  at[1] = static_cast<std::byte>(n >> 24);
  at[2] = static_cast<std::byte>(n >> 16);
  at[3] = static_cast<std::byte>(n >> 8);
  at[4] = static_cast<std::byte>(n);
}

/// The current exception as (type name, message).
std::pair<std::string, std::string> describe_current() {
  try {
    throw;
  } catch (const std::exception& e) {
    return {exception_type_name(e), e.what()};
  } catch (...) {
    return {"unknown exception", "(not derived from std::exception)"};
  }
}

int worker_run(ring& tasks, ring& results, pactor::array<pool_slot>& slots,
               pactor::array<std::uint64_t>& marks, const worker_params& p,
               const bound_runner* bound) {
  pool_slot& slot = slots[p.index];
  aref(slot.chunk).store(0, std::memory_order_relaxed);
  aref(slot.running).store(0, std::memory_order_relaxed);
  aref(slot.state).store(slot_starting, std::memory_order_relaxed);
  aref(slot.pid).store(static_cast<std::uint32_t>(::getpid()),
                       std::memory_order_relaxed);
  aref(slot.generation).store(p.generation, std::memory_order_release);
  if (p.has_init) {
    std::string failure;
    try {
      auto tramp = reinterpret_cast<trampoline_fn>(
        resolve_function_ref(p.init.trampoline));
      tramp(resolve_function_ref(p.init.function), p.init.args);
    } catch (const exit_request& e) {
      failure
        = "the initializer called pactor::exit(" + std::to_string(e.code) + ")";
    } catch (...) {
      auto [type, what] = describe_current();
      failure = "the initializer threw " + type + ": " + what;
    }
    if (!failure.empty()) {
      std::snprintf(slot.message, sizeof slot.message, "%s", failure.c_str());
      aref(slot.state).store(slot_init_failed, std::memory_order_release);
      return 3;
    }
  }
  aref(slot.state).store(slot_ready, std::memory_order_release);

  chunk_context ctx(results, slot, p.timed);
  std::vector<std::byte> rec;
  std::unordered_map<std::string, std::pair<chunk_runner, erased_fn>> resolved;
  try {
    for (std::uint64_t chunks = 0;; ++chunks) {
      if (p.max_tasks != 0 && chunks >= p.max_tasks)
        return 0;
      bool skip = false;
      auto read = [&](std::span<const std::byte> b) {
        rec.assign(b.begin(), b.end());
        task_header h{};
        std::memcpy(&h, b.data(), std::min(sizeof h, b.size()));
        aref(slot.running).store(0, std::memory_order_relaxed);
        // Claimed before the record is consumed (docs/design/pool.md).
        aref(slot.chunk).store(h.chunk, std::memory_order_release);
        auto expected = h.chunk << 2 | mark_queued;
        aref(marks[h.chunk % cancel_slots])
          .compare_exchange_strong(expected, h.chunk << 2 | mark_claimed,
                                   std::memory_order_acq_rel);
        skip = expected == (h.chunk << 2 | mark_cancelled);
      };
      if (tasks.get(read, wait_limit::forever()) == ring_status::closed)
        return 0;
      if (skip)
        continue; // cancelled while it waited in the ring
      task_header h{};
      if (rec.size() < sizeof h)
        continue; // not a chunk: nothing to answer
      std::memcpy(&h, rec.data(), sizeof h);
      ctx.start(h.chunk, h.count);
      try {
        if (rec.size() < sizeof h + h.refs_bytes)
          throw std::runtime_error("pactor::pool: a truncated chunk record");
        chunk_runner runner = nullptr;
        erased_fn fn = nullptr;
        if (h.trampoline == 0) {
          if (bound == nullptr || !*bound)
            throw std::logic_error("pactor::pool: a bound chunk reached a "
                                   "worker without a bound callable");
        } else if (p.fork) {
          // NOLINTNEXTLINE(performance-no-int-to-ptr): the parent's address
          runner = reinterpret_cast<chunk_runner>(h.trampoline);
          // NOLINTNEXTLINE(performance-no-int-to-ptr)
          fn = reinterpret_cast<erased_fn>(h.function);
        } else {
          std::string key(reinterpret_cast<const char*>(rec.data() + sizeof h),
                          h.refs_bytes);
          auto it = resolved.find(key);
          if (it == resolved.end()) {
            auto refs = decode_payload<std::pair<function_ref, function_ref>>(
              std::span(rec).subspan(sizeof h, h.refs_bytes));
            it = resolved
                   .emplace(std::move(key),
                            std::pair{reinterpret_cast<chunk_runner>(
                                        resolve_function_ref(refs.first)),
                                      resolve_function_ref(refs.second)})
                   .first;
          }
          runner = it->second.first;
          fn = it->second.second;
        }
        auto items = std::span(rec).subspan(sizeof h + h.refs_bytes);
        scratch_zone zone;
        auto obj = unpack_checked(zone.get(), items, decode_limits{}, 0,
                                  "pactor::pool chunk");
        if (runner != nullptr)
          runner(fn, obj, ctx);
        else if (bound != nullptr)
          (*bound)(obj, ctx);
      } catch (const exit_request&) {
        throw;
      } catch (const pool_gone&) {
        throw;
      } catch (...) {
        ctx.fail_rest();
      }
      ctx.finish();
    }
  } catch (const pool_gone&) {
    return 0;
  }
}

int pool_worker_entry(ring_handle tasks, ring_handle results,
                      pactor::array<pool_slot> slots,
                      pactor::array<std::uint64_t> marks,
                      const worker_params& p) {
  return worker_run(tasks.r, results.r, slots, marks, p, nullptr);
}

/// Draws a job's progress on stderr: a bar on a terminal, lines otherwise.
class progress_bar {
public:
  void draw(const progress_info& p, bool final) {
    auto now = std::chrono::steady_clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(tty_ ? 100 : 1000))
      return;
    last_ = now;
    char eta[32] = "?";
    if (p.eta_s >= 0)
      std::snprintf(eta, sizeof eta, "%.0fs", p.eta_s);
    if (tty_) {
      constexpr int width = 30;
      int fill = p.total != 0
                   ? static_cast<int>(width * static_cast<double>(p.done)
                                      / static_cast<double>(p.total))
                   : 0;
      std::string bar(static_cast<std::size_t>(fill), '#');
      bar.resize(width, '.');
      if (p.total != 0)
        std::fprintf(
          stderr, "\r[%s] %3.0f%% %zu/%zu %.0f/s ETA %s ", bar.c_str(),
          100.0 * static_cast<double>(p.done) / static_cast<double>(p.total),
          p.done, p.total, p.rate, eta);
      else
        std::fprintf(stderr, "\r%zu done %.0f/s ", p.done, p.rate);
      if (final)
        std::fprintf(stderr, "\n");
    } else {
      if (p.total != 0)
        std::fprintf(
          stderr, "progress: %zu/%zu (%.0f%%) %.0f/s ETA %s\n", p.done, p.total,
          100.0 * static_cast<double>(p.done) / static_cast<double>(p.total),
          p.rate, eta);
      else
        std::fprintf(stderr, "progress: %zu done %.0f/s\n", p.done, p.rate);
    }
    std::fflush(stderr);
  }

private:
  bool tty_ = ::isatty(2) == 1;
  std::chrono::steady_clock::time_point last_{};
};

} // namespace

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string exception_type_name(const std::exception& e) {
  return demangle(typeid(e).name());
}

std::size_t default_pool_size() noexcept {
  auto n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

void result_state_base::complete() noexcept {
  done = true;
  auto cbs = std::move(callbacks);
  callbacks.clear();
  for (auto& cb : cbs) {
    try {
      cb();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pactor: a done callback threw %s: %s\n",
                   exception_type_name(e).c_str(), e.what());
    } catch (...) {
      std::fprintf(stderr, "pactor: a done callback threw\n");
    }
  }
}

// ---- worker side ----------------------------------------------------------

chunk_context::chunk_context(ring& results, pool_slot& slot, bool timed)
    : results_(&results), slot_(&slot), timed_(timed) {
  buf_.reserve(flush_bytes + 4096);
  reset_values();
}

void chunk_context::start(std::uint64_t chunk, std::uint32_t count) {
  chunk_ = chunk;
  total_ = count;
  first_ = 0;
  reset_values();
}

void chunk_context::begin(std::uint32_t i) noexcept {
  if (timed_)
    aref(slot_->started_ns).store(monotonic_ns(), std::memory_order_relaxed);
  aref(slot_->running).store(std::uint64_t{i} + 1, std::memory_order_release);
}

void chunk_context::value_added() {
  ++count_;
  end_item(); // its result is buffered: a timeout cannot fail it any more
  if (buf_.size() >= flush_bytes)
    flush();
}

void chunk_context::end_item() noexcept {
  aref(slot_->running).store(0, std::memory_order_release);
}

void chunk_context::reset_values() {
  buf_.clear();
  buf_.resize(sizeof(result_header) + 5);
  count_ = 0;
}

void chunk_context::flush() {
  if (count_ == 0)
    return;
  result_header h{chunk_, first_, count_, result_values, 0};
  std::memcpy(buf_.data(), &h, sizeof h);
  write_array32(buf_.data() + sizeof h, count_);
  put_record(*results_, buf_);
  first_ += count_;
  reset_values();
}

void chunk_context::write_error(std::uint32_t i, const std::string& type,
                                const std::string& message) {
  std::vector<std::byte> rec(sizeof(result_header));
  result_header h{chunk_, i, 1, result_error, 0};
  std::memcpy(rec.data(), &h, sizeof h);
  pack_payload(rec, std::pair<std::string, std::string>(type, message));
  put_record(*results_, rec);
}

void chunk_context::error_current(std::uint32_t i) {
  auto [type, what] = describe_current();
  end_item();
  flush();
  write_error(i, type, what);
  first_ = i + 1;
}

void chunk_context::fail_rest() {
  auto [type, what] = describe_current();
  flush();
  for (auto i = first_; i < total_; ++i)
    write_error(i, type, what);
  first_ = total_;
}

void chunk_context::finish() {
  flush();
  aref(slot_->running).store(0, std::memory_order_release);
}

// ---- parent side ----------------------------------------------------------

namespace {

struct worker_rec {
  process proc;
  bool alive = false;
  bool timed_out = false;
  std::uint64_t generation = 0;
};

struct chunk_rec {
  std::shared_ptr<job_base> job;
  std::size_t index0 = 0;
  std::uint32_t count = 0;
  std::uint32_t done = 0;
  unsigned attempts = 0;
  std::vector<std::byte> record;
  bool in_ring = false;
};

} // namespace

struct pool_core_impl {
  pool_core_config cfg;
  bound_runner bound;
  std::recursive_mutex mu;
  ring_handle tasks;
  ring_handle results;
  pactor::array<pool_slot> slots;
  pactor::array<std::uint64_t> marks;
  std::vector<worker_rec> workers;
  std::unordered_map<std::uint64_t, chunk_rec> chunks;
  std::deque<std::uint64_t> pending;
  /// Every unfinished job.
  std::unordered_map<job_base*, std::shared_ptr<job_base>> jobs;
  /// The jobs whose input is not exhausted, in turn.
  std::deque<std::shared_ptr<job_base>> producing;
  /// Jobs that may have just become complete.
  std::vector<std::shared_ptr<job_base>> finishing;
  /// Jobs that report progress.
  std::vector<std::shared_ptr<job_base>> reporting;
  std::uint64_t next_chunk = 1;
  std::size_t max_chunk_bytes = 0;
  bool closed = false;
  bool retire = false;
  bool ring_closed = false;
  bool terminated = false;
  std::string broken;
  std::uint32_t init_failures = 0;
  std::size_t started = 0;
  std::unordered_map<std::uint64_t, std::vector<std::byte>> refs_cache;
  std::chrono::steady_clock::time_point last_death_check{};
  progress_bar bar;

  pool_core_impl(pool_core_config c, bound_runner b)
      : cfg(std::move(c)),
        bound(std::move(b)), tasks{ring::create(
                               {cfg.task_ring_bytes, 0, false})},
        results{ring::create({cfg.result_ring_bytes, 0, false})},
        slots(cfg.processes), marks(cancel_slots, ~std::uint64_t{0}) {
    tasks.r.spin(cfg.spin);
    results.r.spin(cfg.spin);
    max_chunk_bytes = std::clamp<std::size_t>(
      tasks.r.max_record() / 4, std::size_t{4} << 10, std::size_t{1} << 20);
    workers.resize(cfg.processes);
  }

  [[nodiscard]] bool fork_method() const noexcept {
    return cfg.method == start_method::fork;
  }

  // -- workers --

  void start_worker(std::size_t i) {
    auto& w = workers[i];
    ++w.generation;
    w.timed_out = false;
    worker_params p;
    p.index = static_cast<std::uint32_t>(i);
    p.generation = w.generation;
    p.timed = cfg.task_timeout.count() > 0;
    p.fork = fork_method();
    p.max_tasks = cfg.max_tasks_per_child;
    if (cfg.initializer) {
      p.has_init = true;
      p.init = *cfg.initializer;
    }
    process proc;
    if (bound) {
      proc = process(with_fork, [t = tasks, r = results, s = slots, k = marks,
                                 p, b = bound]() mutable {
        return worker_run(t.r, r.r, s, k, p, &b);
      });
    } else {
      switch (cfg.method) {
      case start_method::fork:
        proc = process(with_fork, &pool_worker_entry, tasks, results, slots,
                       marks, p);
        break;
      case start_method::spawn:
        proc = process(with_spawn, &pool_worker_entry, tasks, results, slots,
                       marks, p);
        break;
      case start_method::forkserver:
        proc = process(with_forkserver, &pool_worker_entry, tasks, results,
                       slots, marks, p);
        break;
      }
    }
    proc.name(cfg.name + "-" + std::to_string(i + 1)).daemon(true);
    proc.start();
    w.proc = std::move(proc);
    w.alive = true;
    ++started;
  }

  /// Whether some live worker got through its start (initializer).
  [[nodiscard]] bool any_ready() noexcept {
    for (std::size_t i = 0; i < workers.size(); ++i) {
      auto& w = workers[i];
      if (!w.alive)
        continue;
      pool_slot& s = slots[i];
      if (aref(s.generation).load(std::memory_order_acquire) == w.generation
          && aref(s.state).load(std::memory_order_acquire) == slot_ready)
        return true;
    }
    return false;
  }

  [[nodiscard]] std::size_t alive_count() const noexcept {
    return static_cast<std::size_t>(
      std::count_if(workers.begin(), workers.end(),
                    [](const worker_rec& w) { return w.alive; }));
  }

  // -- chunks --

  const std::vector<std::byte>& refs_for(const job_base& job) {
    auto key = reinterpret_cast<std::uintptr_t>(job.runner) * 31
               ^ reinterpret_cast<std::uintptr_t>(job.function);
    auto it = refs_cache.find(key);
    if (it == refs_cache.end()) {
      std::vector<std::byte> bytes;
      pack_payload(bytes, std::pair(make_function_ref(
                                      reinterpret_cast<erased_fn>(job.runner)),
                                    make_function_ref(job.function)));
      it = refs_cache.emplace(key, std::move(bytes)).first;
    }
    return it->second;
  }

  /// Makes a chunk record of `count` items whose encoded bytes are `items`.
  std::uint64_t add_chunk(const std::shared_ptr<job_base>& job,
                          std::size_t index0, std::uint32_t count,
                          std::span<const std::byte> items, unsigned attempts,
                          bool front) {
    auto id = next_chunk++;
    chunk_rec c;
    c.job = job;
    c.index0 = index0;
    c.count = count;
    c.attempts = attempts;
    task_header h{};
    h.chunk = id;
    h.count = count;
    static const std::vector<std::byte> no_refs;
    const auto& refs
      = (job->runner == nullptr || fork_method()) ? no_refs : refs_for(*job);
    if (job->runner != nullptr) {
      h.trampoline = reinterpret_cast<std::uint64_t>(job->runner);
      h.function = reinterpret_cast<std::uint64_t>(job->function);
    }
    h.refs_bytes = static_cast<std::uint32_t>(refs.size());
    c.record.resize(sizeof h + refs.size() + 5 + items.size());
    auto* at = c.record.data();
    std::memcpy(at, &h, sizeof h);
    at += sizeof h;
    if (!refs.empty())
      std::memcpy(at, refs.data(), refs.size());
    at += refs.size();
    write_array32(at, count);
    at += 5;
    if (!items.empty())
      std::memcpy(at, items.data(), items.size());
    chunks.emplace(id, std::move(c));
    if (front)
      pending.push_front(id);
    else
      pending.push_back(id);
    return id;
  }

  /// The byte ranges of a chunk's items in its record.
  static std::vector<std::size_t> item_bounds(const chunk_rec& c) {
    task_header h{};
    std::memcpy(&h, c.record.data(), sizeof h);
    std::size_t off = sizeof h + h.refs_bytes + 5;
    std::vector<std::size_t> bounds;
    bounds.reserve(c.count + 1);
    bounds.push_back(off);
    const auto* data = reinterpret_cast<const char*>(c.record.data());
    for (std::uint32_t i = 0; i < c.count; ++i) {
      msgpack::unpack(data, c.record.size(), off);
      bounds.push_back(off);
    }
    return bounds;
  }

  /// Sends items [from, to) of `c` again, as a new chunk.
  void redispatch(const chunk_rec& c, const std::vector<std::size_t>& bounds,
                  std::uint32_t from, std::uint32_t to, unsigned attempts) {
    if (from >= to)
      return;
    add_chunk(
      c.job, c.index0 + from, to - from,
      std::span(c.record).subspan(bounds[from], bounds[to] - bounds[from]),
      attempts, true);
  }

  void resolve_error(chunk_rec& c, std::uint32_t offset, std::exception_ptr e) {
    c.job->on_error(c.index0 + offset, std::move(e));
    ++c.job->resolved;
    maybe_complete(c.job);
  }

  // -- feeding --

  bool flush_pending() {
    bool moved = false;
    while (!pending.empty()) {
      auto it = chunks.find(pending.front());
      if (it == chunks.end()) {
        pending.pop_front();
        continue;
      }
      auto& rec = it->second.record;
      aref(marks[it->first % cancel_slots])
        .store(it->first << 2 | mark_queued, std::memory_order_release);
      auto write
        = [&](std::byte* dst) { std::memcpy(dst, rec.data(), rec.size()); };
      if (tasks.r.put(rec.size(), write, wait_limit::none()) != ring_status::ok)
        break;
      it->second.in_ring = true;
      pending.pop_front();
      moved = true;
    }
    return moved;
  }

  [[nodiscard]] static bool can_produce(const job_base& j) noexcept {
    return !j.exhausted && !j.cancelled
           && j.produced - j.consumed() < j.read_ahead;
  }

  bool produce_one(const std::shared_ptr<job_base>& job) {
    chunk_builder b(job->chunksize, max_chunk_bytes);
    try {
      job->produce(b);
    } catch (...) {
      job->input_error = std::current_exception();
      job->exhausted = true;
    }
    if (b.count() == 0)
      return false;
    auto index0 = job->produced;
    job->produced += b.count();
    add_chunk(job, index0, static_cast<std::uint32_t>(b.count()), b.bytes(), 0,
              false);
    return true;
  }

  bool feed() {
    if (terminated || !broken.empty())
      return false;
    bool moved = flush_pending();
    bool again = pending.empty();
    while (again && !producing.empty()) {
      again = false;
      for (auto n = producing.size(); n > 0 && !producing.empty(); --n) {
        auto job = std::move(producing.front());
        producing.pop_front();
        if (job->exhausted || job->cancelled) {
          finishing.push_back(std::move(job));
          moved = true;
          continue;
        }
        if (chunks.size() >= max_outstanding_chunks || !can_produce(*job)) {
          producing.push_back(std::move(job));
          continue;
        }
        if (produce_one(job))
          moved = again = true;
        if (job->exhausted) {
          finishing.push_back(std::move(job));
          moved = true; // the job may be complete now
        } else {
          producing.push_back(std::move(job));
        }
        flush_pending();
        if (!pending.empty())
          return moved;
      }
    }
    return moved;
  }

  /// After `job` resolved items: it may be complete.
  void maybe_complete(const std::shared_ptr<job_base>& job) {
    if (job->exhausted && job->resolved >= job->produced)
      finishing.push_back(job);
  }

  // -- results --

  void on_record(std::span<const std::byte> b) {
    result_header h{};
    if (b.size() < sizeof h)
      return;
    std::memcpy(&h, b.data(), sizeof h);
    auto it = chunks.find(h.chunk);
    if (it == chunks.end())
      return; // a duplicate (see the design note's claim window)
    auto& c = it->second;
    if (h.offset + h.count > c.count || h.count == 0)
      return;
    if (h.offset + h.count <= c.done)
      return; // already had these
    auto skip = c.done > h.offset ? c.done - h.offset : 0U;
    auto& job = *c.job;
    auto payload = b.subspan(sizeof h);
    if (h.kind == result_error) {
      std::string type = "unknown";
      std::string message;
      try {
        auto tm = decode_payload<std::pair<std::string, std::string>>(payload);
        type = std::move(tm.first);
        message = std::move(tm.second);
      } catch (const std::exception& e) {
        message
          = std::string("(its error record did not decode: ") + e.what() + ")";
      }
      job.on_error(c.index0 + h.offset,
                   std::make_exception_ptr(
                     task_error(c.index0 + h.offset, job.indexed,
                                std::move(type), std::move(message))));
      ++job.resolved;
    } else {
      try {
        scratch_zone zone;
        auto obj = unpack_checked(zone.get(), payload, decode_limits{}, 0,
                                  "pactor::pool results");
        if (obj.type != msgpack::type::ARRAY || obj.via.array.size != h.count)
          throw std::runtime_error("a result record of the wrong shape");
        job.on_values(c.index0 + h.offset + skip, obj.via.array.ptr + skip,
                      h.count - skip);
      } catch (const std::exception&) {
        // Item by item: the ones that convert are kept.
        values_one_by_one(c, h, skip, payload);
      }
      job.resolved += h.count - skip;
    }
    c.done = h.offset + h.count;
    maybe_complete(c.job);
    if (c.done == c.count)
      chunks.erase(it);
  }

  void values_one_by_one(chunk_rec& c, const result_header& h,
                         std::uint32_t skip,
                         std::span<const std::byte> payload) {
    auto& job = *c.job;
    std::optional<msgpack::object> obj;
    scratch_zone zone;
    std::string why;
    try {
      obj = unpack_checked(zone.get(), payload, decode_limits{}, 0,
                           "pactor::pool results");
      if (obj->type != msgpack::type::ARRAY || obj->via.array.size != h.count)
        throw std::runtime_error("a result record of the wrong shape");
    } catch (const std::exception& e) {
      obj.reset();
      why = e.what();
    }
    for (auto i = skip; i < h.count; ++i) {
      const auto index = c.index0 + h.offset + i;
      try {
        if (!obj)
          throw std::runtime_error(why);
        job.on_values(index, obj->via.array.ptr + i, 1);
      } catch (const std::exception& e) {
        job.on_error(index,
                     std::make_exception_ptr(task_error(
                       index, job.indexed, exception_type_name(e),
                       std::string("the result did not decode: ") + e.what())));
      }
    }
  }

  bool drain() {
    bool moved = false;
    auto read = [this](std::span<const std::byte> b) { on_record(b); };
    while (results.r.get(read, wait_limit::none()) == ring_status::ok)
      moved = true;
    return moved;
  }

  // -- deaths and timeouts --

  void handle_death(std::size_t i) {
    auto& w = workers[i];
    drain(); // everything it wrote before it died
    auto code = w.proc.exitcode().value_or(-SIGKILL);
    w.alive = false;
    const pid_t pid = w.proc.pid();
    pool_slot& s = slots[i];
    const bool ours
      = aref(s.generation).load(std::memory_order_acquire) == w.generation;
    const auto state = ours ? aref(s.state).load(std::memory_order_acquire)
                            : std::uint32_t{slot_starting};
    if (state != slot_ready) {
      if (any_ready())
        init_failures = 0; // others started: not the initializer's fault
      std::string why;
      if (state == slot_init_failed)
        why = std::string(s.message, strnlen(s.message, sizeof s.message));
      else
        why = "a worker died while starting ("
              + (code < 0 ? "signal " + std::to_string(-code)
                          : "exit code " + std::to_string(code))
              + ")";
      // A SIGKILL came from outside (or the OOM killer): try again. Any
      // other death before ready is the start or the initializer failing.
      if (code != -SIGKILL && ++init_failures >= init_failures_to_break)
        break_pool("pactor::pool_broken: workers fail to start: " + why);
      else
        respawn(i);
      return;
    }
    init_failures = 0;
    const auto chunk = aref(s.chunk).load(std::memory_order_acquire);
    const auto running = aref(s.running).load(std::memory_order_acquire);
    auto it = chunks.find(chunk);
    if (chunk != 0 && it != chunks.end() && it->second.in_ring) {
      auto c = std::move(it->second);
      chunks.erase(it);
      auto bounds = item_bounds(c);
      const auto p = c.done;
      if (running > 0 && running - 1 >= p && running - 1 < c.count) {
        const auto r = static_cast<std::uint32_t>(running - 1);
        // Re-dispatched in reverse, each to the front: they go in order.
        redispatch(c, bounds, r + 1, c.count, 0);
        const unsigned attempts = (r == 0 ? c.attempts : 0) + 1;
        const auto index = c.index0 + r;
        if (w.timed_out) {
          resolve_error(c, r,
                        std::make_exception_ptr(task_timeout(
                          index, c.job->indexed, pid,
                          std::chrono::duration_cast<std::chrono::milliseconds>(
                            cfg.task_timeout))));
        } else if (attempts <= cfg.retries) {
          redispatch(c, bounds, r, r + 1, attempts);
        } else {
          resolve_error(c, r,
                        std::make_exception_ptr(worker_died(
                          index, c.job->indexed, pid, code < 0 ? -code : 0,
                          code < 0 ? -1 : code, attempts)));
        }
        redispatch(c, bounds, p, r, 0);
      } else {
        redispatch(c, bounds, p, c.count, c.attempts);
      }
    }
    respawn(i);
  }

  void respawn(std::size_t i) {
    if (terminated || ring_closed || !broken.empty())
      return;
    try {
      start_worker(i);
    } catch (const std::exception& e) {
      if (alive_count() == 0)
        break_pool(std::string("pactor::pool_broken: cannot start a worker: ")
                   + e.what());
    }
  }

  bool check_deaths() {
    std::vector<pollfd> fds;
    std::vector<std::size_t> who;
    for (std::size_t i = 0; i < workers.size(); ++i) {
      if (!workers[i].alive)
        continue;
      fds.push_back({workers[i].proc.sentinel(), POLLIN, 0});
      who.push_back(i);
    }
    if (fds.empty())
      return false;
    if (::poll(fds.data(), fds.size(), 0) <= 0)
      return false;
    bool any = false;
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0)
        continue;
      handle_death(who[k]);
      any = true;
    }
    return any;
  }

  void check_timeouts() {
    if (cfg.task_timeout.count() <= 0)
      return;
    const auto now = monotonic_ns();
    for (std::size_t i = 0; i < workers.size(); ++i) {
      auto& w = workers[i];
      if (!w.alive || w.timed_out)
        continue;
      pool_slot& s = slots[i];
      auto c1 = aref(s.chunk).load(std::memory_order_acquire);
      auto r1 = aref(s.running).load(std::memory_order_acquire);
      if (r1 == 0)
        continue;
      auto started_ns = aref(s.started_ns).load(std::memory_order_acquire);
      auto c2 = aref(s.chunk).load(std::memory_order_acquire);
      auto r2 = aref(s.running).load(std::memory_order_acquire);
      if (c1 != c2 || r1 != r2 || started_ns == 0)
        continue;
      if (now - started_ns > cfg.task_timeout.count()) {
        w.timed_out = true;
        w.proc.kill();
      }
    }
  }

  // -- jobs --

  void report(job_base& job, bool final) {
    if (!job.report_progress || (!cfg.on_progress && !cfg.progress_bar))
      return;
    auto now = std::chrono::steady_clock::now();
    if (!final && now - job.last_report < std::chrono::milliseconds(50))
      return;
    if (!final && job.resolved == job.last_reported)
      return;
    job.last_report = now;
    job.last_reported = job.resolved;
    progress_info p;
    p.done = job.resolved;
    p.total = job.known_total != 0 ? job.known_total
                                   : (job.exhausted ? job.produced : 0);
    p.elapsed_s = std::chrono::duration<double>(now - job.started).count();
    p.rate = p.elapsed_s > 0 ? static_cast<double>(p.done) / p.elapsed_s : 0;
    if (p.total != 0 && p.rate > 0)
      p.eta_s
        = static_cast<double>(p.total - std::min(p.total, p.done)) / p.rate;
    if (cfg.progress_bar)
      bar.draw(p, final);
    if (cfg.on_progress) {
      try {
        cfg.on_progress(p);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "pactor: a progress callback threw %s: %s\n",
                     exception_type_name(e).c_str(), e.what());
      } catch (...) {
        std::fprintf(stderr, "pactor: a progress callback threw\n");
      }
    }
  }

  void finish_jobs() {
    for (auto& j : reporting)
      report(*j, false);
    if (finishing.empty())
      return;
    auto candidates = std::move(finishing);
    finishing.clear();
    for (auto& j : candidates) {
      if (j->finished || !j->exhausted || j->resolved < j->produced)
        continue;
      j->finished = true;
      jobs.erase(j.get());
      if (j->report_progress)
        std::erase(reporting, j);
      report(*j, true);
      j->on_finished();
    }
    if (retire && jobs.empty() && chunks.empty() && !ring_closed) {
      ring_closed = true;
      tasks.r.close(); // the workers exit; terminate() reaps them
    }
  }

  /// Fails every unresolved item and ends every job with `e`.
  void fail_all(const std::exception_ptr& e) {
    for (auto& [id, c] : chunks)
      for (auto i = c.done; i < c.count; ++i)
        resolve_error(c, i, e);
    chunks.clear();
    pending.clear();
    producing.clear();
    for (auto& [p, j] : jobs) {
      if (!j->exhausted) {
        j->exhausted = true;
        if (!j->input_error && j->produced == j->resolved)
          j->input_error = e;
      }
      finishing.push_back(j);
    }
    finish_jobs();
  }

  /// Cancels `job` if none of its chunks is taken (`in_ring`: its chunks
  /// in the task ring); the caller drops its chunks and finishes it.
  bool cancel_locked(job_base& job, const std::vector<std::uint64_t>& in_ring) {
    if (job.finished || job.cancelled)
      return false;
    if (in_ring.size() > 1)
      return false; // one CAS cannot take several chunks back at once
    if (in_ring.size() == 1) {
      auto id = in_ring.front();
      auto expected = id << 2 | mark_queued;
      if (!aref(marks[id % cancel_slots])
             .compare_exchange_strong(expected, id << 2 | mark_cancelled,
                                      std::memory_order_acq_rel))
        return false; // a worker has it
    }
    job.cancelled = true;
    job.exhausted = true;
    job.produced = job.resolved;
    if (auto it = jobs.find(&job); it != jobs.end())
      finishing.push_back(it->second);
    return true;
  }

  void break_pool(std::string why) {
    broken = std::move(why);
    fail_all(std::make_exception_ptr(pool_broken(broken)));
  }

  // -- the loop --

  bool step() {
    bool moved = feed();
    moved = drain() || moved;
    auto now = std::chrono::steady_clock::now();
    if (!moved || now - last_death_check > std::chrono::milliseconds(10)) {
      last_death_check = now;
      moved = check_deaths() || moved;
      check_timeouts();
    }
    finish_jobs();
    return moved;
  }

  /// Sleeps on the result ring for at most `slice`.
  void sleep_on_results(std::chrono::nanoseconds slice) {
    auto read = [this](std::span<const std::byte> b) { on_record(b); };
    results.r.get(read, wait_limit::after(slice));
  }

  [[nodiscard]] std::chrono::nanoseconds slice() const noexcept {
    std::chrono::nanoseconds s = std::chrono::milliseconds(10);
    if (cfg.task_timeout.count() > 0)
      s = std::min<std::chrono::nanoseconds>(
        s, std::max<std::chrono::nanoseconds>(cfg.task_timeout / 4,
                                              std::chrono::milliseconds(1)));
    return s;
  }
};

pool_core::pool_core(pool_core_config cfg, bound_runner bound)
    : impl_(
      std::make_unique<pool_core_impl>(std::move(cfg), std::move(bound))) {
  auto& m = *impl_;
  try {
    for (std::size_t i = 0; i < m.workers.size(); ++i)
      m.start_worker(i);
  } catch (...) {
    terminate();
    throw;
  }
}

pool_core::~pool_core() {
  terminate();
}

std::recursive_mutex& pool_core::mutex() noexcept {
  return impl_->mu;
}

const pool_core_config& pool_core::config() const noexcept {
  return impl_->cfg;
}

void pool_core::submit(std::shared_ptr<job_base> job) {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  if (!m.broken.empty())
    throw pool_broken(m.broken);
  if (m.closed)
    throw std::logic_error(m.terminated
                             ? "pactor::pool: the pool was terminated"
                             : "pactor::pool: the pool is closed (no new "
                               "work after close())");
  job->started = std::chrono::steady_clock::now();
  if (job->report_progress && (m.cfg.on_progress || m.cfg.progress_bar))
    m.reporting.push_back(job);
  m.producing.push_back(job);
  m.jobs.emplace(job.get(), std::move(job));
  m.step();
}

bool pool_core::run_until(const std::function<bool()>& done, wait_limit limit) {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  for (;;) {
    if (done())
      return true;
    bool moved = m.step();
    if (done())
      return true;
    if (moved)
      continue;
    if (limit.none_allowed())
      return false;
    auto slice = m.slice();
    const auto& deadline = limit.deadline();
    if (deadline) {
      auto now = std::chrono::steady_clock::now();
      if (now >= *deadline)
        return false;
      slice = std::min<std::chrono::nanoseconds>(slice, *deadline - now);
    }
    if (m.terminated || !m.broken.empty()) {
      // Nothing will move any more: whatever `done` waits for is over.
      return done();
    }
    m.sleep_on_results(slice);
  }
}

bool pool_core::cancel(job_base& job) {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  std::vector<std::uint64_t> in_ring;
  for (auto& [id, c] : m.chunks)
    if (c.job.get() == &job && c.in_ring)
      in_ring.push_back(id);
  if (!m.cancel_locked(job, in_ring))
    return job.finished && job.cancelled;
  std::erase_if(m.chunks,
                [&job](const auto& kv) { return kv.second.job.get() == &job; });
  m.finish_jobs();
  return true;
}

void pool_core::cancel_pending() {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  // One pass over the chunks, not one per job.
  std::unordered_map<job_base*, std::vector<std::uint64_t>> in_ring;
  for (auto& [id, c] : m.chunks)
    if (c.in_ring)
      in_ring[c.job.get()].push_back(id);
  static const std::vector<std::uint64_t> none;
  std::vector<job_base*> cancelled;
  for (auto& [p, j] : m.jobs) {
    auto it = in_ring.find(p);
    if (m.cancel_locked(*j, it == in_ring.end() ? none : it->second))
      cancelled.push_back(p);
  }
  std::sort(cancelled.begin(), cancelled.end());
  std::erase_if(m.chunks, [&cancelled](const auto& kv) {
    return std::binary_search(cancelled.begin(), cancelled.end(),
                              kv.second.job.get());
  });
  m.finish_jobs();
}

void pool_core::abandon(job_base& job) noexcept {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  if (job.finished)
    return;
  job.exhausted = true;
  std::erase_if(m.chunks, [&job](auto& kv) {
    auto& c = kv.second;
    if (c.job.get() != &job || c.in_ring)
      return false;
    job.resolved += c.count - c.done; // dropped: counted as ended
    return true;
  });
  if (auto it = m.jobs.find(&job); it != m.jobs.end())
    m.finishing.push_back(it->second);
  try {
    m.finish_jobs();
  } catch (...) {
  }
}

void pool_core::retire_when_idle() noexcept {
  std::lock_guard lk(impl_->mu);
  impl_->retire = true;
}

bool pool_core::idle() noexcept {
  std::lock_guard lk(impl_->mu);
  return impl_->jobs.empty() && impl_->chunks.empty();
}

void pool_core::close() {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  m.closed = true;
}

bool pool_core::closed() const noexcept {
  return impl_->closed;
}

bool pool_core::join(wait_limit limit) {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  if (!m.closed)
    throw std::logic_error("pactor::pool::join: close() or terminate() first");
  if (!run_until([&m] { return m.jobs.empty() && m.chunks.empty(); }, limit))
    return false;
  if (!m.ring_closed) {
    m.ring_closed = true;
    m.tasks.r.close();
  }
  return run_until(
    [&m] {
      m.check_deaths();
      return m.alive_count() == 0;
    },
    limit);
}

void pool_core::terminate() noexcept {
  if (!impl_)
    return;
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  if (m.terminated)
    return;
  m.terminated = true;
  m.closed = true;
  m.ring_closed = true;
  m.tasks.r.close();
  m.results.r.close();
  for (auto& w : m.workers)
    if (w.alive) {
      try {
        w.proc.terminate();
      } catch (...) {
      }
    }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& w : m.workers) {
    if (!w.alive)
      continue;
    try {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (!w.proc.join(std::max(left, std::chrono::milliseconds(0)))) {
        w.proc.kill();
        w.proc.join();
      }
    } catch (...) {
    }
    w.alive = false;
  }
  try {
    m.fail_all(std::make_exception_ptr(pool_terminated()));
  } catch (...) {
  }
}

std::vector<pid_t> pool_core::pids() {
  auto& m = *impl_;
  std::lock_guard lk(m.mu);
  std::vector<pid_t> out;
  for (auto& w : m.workers)
    if (w.alive)
      out.push_back(w.proc.pid());
  return out;
}

std::size_t pool_core::workers_started() const noexcept {
  return impl_->started;
}

} // namespace detail

// ---- pool -----------------------------------------------------------------

pool::pool(std::size_t processes, pool_options opts) : opts_(std::move(opts)) {
  detail::pool_core_config cfg;
  cfg.processes = processes == 0 ? detail::default_pool_size() : processes;
  cfg.method = opts_.method.value_or(get_start_method());
  cfg.max_tasks_per_child = opts_.max_tasks_per_child;
  cfg.retries = opts_.retries;
  if (opts_.task_timeout.count() < 0)
    throw std::invalid_argument("pactor::pool: task_timeout must not be "
                                "negative");
  cfg.task_timeout = opts_.task_timeout;
  cfg.spin = opts_.spin;
  if (opts_.init)
    cfg.initializer = opts_.init->target;
  cfg.on_progress = opts_.on_progress;
  cfg.progress_bar = opts_.progress_bar;
  cfg.name = opts_.name;
  core_ = std::make_shared<detail::pool_core>(std::move(cfg));
}

pool::~pool() {
  terminate();
}

std::shared_ptr<detail::pool_core> pool::bound_core(detail::bound_runner run,
                                                    std::size_t workers) {
  prune_bound();
  if (core_->closed())
    throw std::logic_error("pactor::pool: the pool is closed (no new work "
                           "after close())");
  auto cfg = core_->config();
  if (cfg.method != start_method::fork)
    throw std::logic_error(
      "pactor::pool: a task with captures needs a fork pool (a spawn or "
      "forkserver worker cannot receive a lambda's captures); use a function "
      "or a captureless lambda and pass the data as arguments");
  cfg.processes = workers;
  cfg.name += "-bound";
  auto core
    = std::make_shared<detail::pool_core>(std::move(cfg), std::move(run));
  core->retire_when_idle();
  std::lock_guard lk(*bound_mu_);
  bound_.push_back(core);
  return core;
}

void pool::prune_bound() noexcept {
  std::vector<std::shared_ptr<detail::pool_core>> cores;
  {
    std::lock_guard lk(*bound_mu_);
    cores = bound_;
  }
  for (auto& c : cores) {
    if (!c->idle())
      continue;
    c->terminate();
    std::lock_guard lk(*bound_mu_);
    std::erase(bound_, c);
  }
}

void pool::release(const std::shared_ptr<detail::pool_core>& core) noexcept {
  if (core == core_)
    return;
  core->terminate();
  std::lock_guard lk(*bound_mu_);
  std::erase(bound_, core);
}

std::size_t pool::bound_workers(std::optional<std::size_t> total,
                                std::size_t chunksize) const noexcept {
  std::size_t n = size();
  if (total) {
    auto chunks
      = (*total + chunksize - 1) / std::max<std::size_t>(chunksize, 1);
    n = std::min(n, std::max<std::size_t>(chunks, 1));
  }
  return n;
}

void pool::close() {
  core_->close();
}

void pool::join() {
  join_until(detail::wait_limit::forever());
}

bool pool::join_until(detail::wait_limit limit) {
  if (!core_->closed())
    throw std::logic_error("pactor::pool::join: close() or terminate() first");
  std::vector<std::shared_ptr<detail::pool_core>> cores;
  {
    std::lock_guard lk(*bound_mu_);
    cores = bound_;
  }
  for (auto& c : cores) {
    if (!c->run_until([&c] { return c->idle(); }, limit))
      return false;
  }
  prune_bound();
  return core_->join(limit);
}

void pool::terminate() noexcept {
  if (!bound_mu_)
    return; // moved from
  std::vector<std::shared_ptr<detail::pool_core>> cores;
  {
    std::lock_guard lk(*bound_mu_);
    cores.swap(bound_);
  }
  for (auto& c : cores)
    c->terminate();
  if (core_)
    core_->terminate();
}

std::size_t pool::size() const noexcept {
  return core_->config().processes;
}

std::vector<pid_t> pool::pids() {
  return core_->pids();
}

std::size_t pool::workers_started() const noexcept {
  return core_->workers_started();
}

std::size_t pool::pick_chunksize(std::size_t requested,
                                 std::optional<std::size_t> total) const {
  if (requested != 0)
    return requested;
  if (opts_.chunksize != 0)
    return opts_.chunksize;
  if (!total)
    return 64;
  auto per = size() * 4;
  auto c = (*total + per - 1) / per;
  return std::max<std::size_t>(c, 1);
}

std::size_t pool::read_ahead(std::size_t chunksize) const noexcept {
  if (opts_.read_ahead != 0)
    return opts_.read_ahead;
  return std::max<std::size_t>(1024, 8 * size()) * chunksize;
}

} // namespace pactor
