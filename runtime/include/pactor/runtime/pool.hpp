// pactor::pool: a process pool that never hangs and never breaks (cf.
// Python's multiprocessing.Pool). Design: docs/design/pool.md; guide:
// docs/pool.md.

#pragma once

#include <pactor/runtime/detail/pool_core.hpp>
#include <pactor/runtime/pipe.hpp> // timeout_error

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace pactor {

/// Base of the outcomes of pool tasks that a caller handles.
class pool_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A task threw: its exception's type name and message, and which task.
class task_error : public pool_error {
public:
  task_error(std::size_t index, bool indexed, std::string type,
             std::string message)
      : pool_error("pactor::task_error: "
                   + (indexed ? "task " + std::to_string(index) : "the task")
                   + " threw " + type + ": " + message),
        index_(index), type_(std::move(type)), message_(std::move(message)) {
  }
  /// The task's position in the call (0 for apply / submit).
  [[nodiscard]] std::size_t index() const noexcept {
    return index_;
  }
  /// The exception's type, demangled ("std::runtime_error").
  [[nodiscard]] const std::string& type_name() const noexcept {
    return type_;
  }
  /// The exception's what().
  [[nodiscard]] const std::string& message() const noexcept {
    return message_;
  }

private:
  std::size_t index_;
  std::string type_;
  std::string message_;
};

/// The worker running a task died (a signal, or an exit from inside the
/// task) more times than the retries allow.
class worker_died : public pool_error {
public:
  worker_died(std::size_t index, bool indexed, pid_t pid, int signal,
              int exit_code, unsigned attempts)
      : pool_error(describe(index, indexed, pid, signal, exit_code, attempts)),
        index_(index), pid_(pid), signal_(signal), exit_code_(exit_code),
        attempts_(attempts) {
  }
  [[nodiscard]] std::size_t index() const noexcept {
    return index_;
  }
  /// The pid of the worker that died last running it.
  [[nodiscard]] pid_t pid() const noexcept {
    return pid_;
  }
  /// The signal that killed it, 0 if it exited.
  [[nodiscard]] int signal() const noexcept {
    return signal_;
  }
  /// Its exit code when it exited, -1 when a signal killed it.
  [[nodiscard]] int exit_code() const noexcept {
    return exit_code_;
  }
  /// How many workers died running this task.
  [[nodiscard]] unsigned attempts() const noexcept {
    return attempts_;
  }

private:
  static std::string describe(std::size_t index, bool indexed, pid_t pid,
                              int signal, int exit_code, unsigned attempts);
  std::size_t index_;
  pid_t pid_;
  int signal_;
  int exit_code_;
  unsigned attempts_;
};

/// A task ran longer than pool_options::task_timeout; its worker was killed.
class task_timeout : public pool_error {
public:
  task_timeout(std::size_t index, bool indexed, pid_t pid,
               std::chrono::milliseconds limit)
      : pool_error("pactor::task_timeout: "
                   + (indexed ? "task " + std::to_string(index) : "the task")
                   + " ran longer than " + std::to_string(limit.count())
                   + " ms; its worker (pid " + std::to_string(pid)
                   + ") was killed"),
        index_(index), pid_(pid) {
  }
  [[nodiscard]] std::size_t index() const noexcept {
    return index_;
  }
  [[nodiscard]] pid_t pid() const noexcept {
    return pid_;
  }

private:
  std::size_t index_;
  pid_t pid_;
};

/// The pool was terminated (or destroyed) before the task ended.
class pool_terminated : public pool_error {
public:
  pool_terminated()
      : pool_error("pactor::pool_terminated: the pool was terminated before "
                   "the task ended") {
  }
};

/// Workers keep failing to start (the initializer throws or they die in
/// it): the pool cannot run tasks.
class pool_broken : public pool_error {
public:
  using pool_error::pool_error;
};

/// The future was cancelled (concurrent.futures.CancelledError).
class cancelled_error : public pool_error {
public:
  cancelled_error()
      : pool_error("pactor::cancelled_error: the task was cancelled") {
  }
};

/// A function run in every worker when it starts (Pool's initializer and
/// initargs): a captureless function and msgpack-packable arguments.
struct pool_initializer {
  detail::packed_target target;
};

/// Makes a pool_initializer: initializer(set_up, std::string("db.sqlite")).
template <class F, class... A>
pool_initializer initializer(F fn, A&&... args) {
  static_assert(detail::captureless_function<F>,
                "pactor::initializer needs a captureless function; pass the "
                "data as arguments");
  return {detail::pack_target(+fn, std::forward<A>(args)...)};
}

/// How a pool works.
struct pool_options {
  /// map/starmap/map_async chunk size; 0 = automatic (as Python: the input
  /// split into about 4 chunks per worker, for an input with a size; 64
  /// items otherwise). A chunk is also cut at 1 MiB of encoded arguments.
  std::size_t chunksize = 0;
  /// fork (default: get_start_method()), spawn or forkserver.
  std::optional<start_method> method{};
  /// A worker is replaced after this many chunks (0 = never).
  std::size_t max_tasks_per_child = 0;
  /// How many times a task whose worker died is run again before it fails
  /// with worker_died.
  unsigned retries = 0;
  /// A task running longer is failed with task_timeout and its worker
  /// killed and replaced (0 = no limit).
  std::chrono::milliseconds task_timeout{0};
  /// Runs in each worker when it starts.
  std::optional<pool_initializer> init{};
  /// Called (in the calling thread) as map, starmap, imap and map_async
  /// calls advance, and once at the end.
  std::function<void(const progress_info&)> on_progress{};
  /// Draws a progress bar with rate and ETA on stderr for map, starmap and
  /// imap calls (plain lines when stderr is not a terminal).
  bool progress_bar = false;
  /// imap/imap_unordered: items encoded ahead of the caller (0 = automatic:
  /// 1024 chunks).
  std::size_t read_ahead = 0;
  /// How long the pool's waits spin before sleeping.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  /// Worker process names: "<name>-<slot>".
  std::string name = "pool";
};

namespace detail {

template <class R>
using result_value_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

template <class R>
void convert_result(const msgpack::object& o, result_value_t<R>& out) {
  if constexpr (!std::is_void_v<R>)
    o.convert(out);
}

template <class F>
struct fn_traits;
template <class R, class... P>
struct fn_traits<R (*)(P...)> {
  using result = R;
  static constexpr std::size_t arity = sizeof...(P);
  template <bool Star>
  using item = item_of<Star, P...>;
  template <bool Star>
  static chunk_runner runner() noexcept {
    return &run_chunk<Star, R, P...>;
  }
};
template <class R, class... P>
struct fn_traits<R (*)(P...) noexcept> : fn_traits<R (*)(P...)> {};

/// A task function as it travels: an address.
template <class F>
concept task_function = captureless_function<std::remove_cvref_t<F>>;

template <class F>
using fn_ptr_t = decltype(+std::declval<std::remove_cvref_t<F>&>());

/// The signature of a callable object's (non-generic) operator().
template <class M>
struct member_traits;
template <class C, class R, class... P>
struct member_traits<R (C::*)(P...)> {
  using result = R;
  static constexpr std::size_t arity = sizeof...(P);
  template <bool Star>
  using item = item_of<Star, P...>;
};
template <class C, class R, class... P>
struct member_traits<R (C::*)(P...) const> : member_traits<R (C::*)(P...)> {};
template <class C, class R, class... P>
struct member_traits<R (C::*)(P...) noexcept> : member_traits<R (C::*)(P...)> {
};
template <class C, class R, class... P>
struct member_traits<R (C::*)(P...) const noexcept>
    : member_traits<R (C::*)(P...)> {};

/// A callable with captures: copyable, with one non-template operator().
template <class F>
concept bound_callable
  = std::copy_constructible<std::remove_cvref_t<F>> && requires {
  &std::remove_cvref_t<F>::operator();
};

template <class F>
struct task_traits_impl {
  static_assert(task_function<F> || bound_callable<F>,
                "pactor::pool: a task must be a function, a lambda or a "
                "copyable function object with one non-template operator() "
                "(a generic lambda has no signature to encode its arguments "
                "with)");
};
template <class F>
requires task_function<F>
struct task_traits_impl<F> : fn_traits<fn_ptr_t<F>> {
};
template <class F>
requires(!task_function<F> && bound_callable<F>) struct task_traits_impl<F>
    : member_traits<decltype(&std::remove_cvref_t<F>::operator())> {
};

template <class F>
using task_traits = task_traits_impl<F>;

template <class F>
using task_result_t = typename task_traits<F>::result;

/// The chunk runner a bound core's workers hold for a callable with
/// captures (forked with a copy of it).
template <bool Star, class F>
bound_runner make_bound_runner(const F& f) {
  using traits = task_traits<F>;
  using R = typename traits::result;
  using item_t = typename traits::template item<Star>;
  return [f](const msgpack::object& items, chunk_context& ctx) mutable {
    run_items<item_t, R>(items, ctx, [&f](item_t&& v) -> R {
      if constexpr (Star)
        return std::apply(f, std::move(v));
      else
        return f(std::move(v));
    });
  };
}

/// The shared state of an async_result.
struct result_state_base {
  std::shared_ptr<pool_core> core;
  std::weak_ptr<job_base> job;
  /// Set (release) once value/error/cancelled are final: readable without
  /// the core's mutex (wait() over futures of several pools).
  std::atomic<bool> done{false};
  bool cancelled = false;
  std::exception_ptr error;
  std::vector<std::function<void()>> callbacks;
  /// Marks the result done and runs the callbacks (core mutex held).
  void complete() noexcept;
};

template <class R>
struct result_state : result_state_base {
  std::optional<result_value_t<R>> value;
};

/// Anything with std::begin and std::end: containers, views, arrays.
/// (Plain begin/end rather than std::ranges, which clang 14 cannot
/// compile with libstdc++ 12.)
template <class R>
concept iterable = requires(R& r) {
  std::begin(r);
  std::end(r);
};

/// Whether std::size(r) is there (progress totals, chunk sizes).
template <class R>
concept sized_iterable = iterable<R> && requires(R& r) {
  std::size(r);
};

/// Holds a call's input: a pointer to an lvalue, a moved-in rvalue.
template <class Rng>
class input_holder {
public:
  using range_type = std::remove_cvref_t<Rng>;
  explicit input_holder(Rng&& r) : v_(hold(std::forward<Rng>(r))) {
  }
  auto& get() noexcept {
    if constexpr (std::is_lvalue_reference_v<Rng>)
      return *v_;
    else
      return v_;
  }

private:
  using stored = std::conditional_t<std::is_lvalue_reference_v<Rng>,
                                    std::remove_reference_t<Rng>*, range_type>;
  static stored hold(Rng&& r) {
    if constexpr (std::is_lvalue_reference_v<Rng>)
      return &r;
    else
      return stored(std::move(r));
  }
  stored v_;
};

/// Produces the items of an input range (map, starmap, imap...).
template <class Item, class Rng>
class input_job : public job_base {
public:
  explicit input_job(Rng&& r) : in_(std::forward<Rng>(r)) {
  }
  void produce(chunk_builder& b) override {
    auto& range = in_.get();
    if (!it_)
      it_.emplace(std::begin(range));
    auto& it = *it_;
    const auto end = std::end(range);
    while (!b.full() && produced + b.count() - consumed() < read_ahead) {
      if (it == end) {
        exhausted = true;
        return;
      }
      b.add(Item(*it));
      ++it;
    }
    if (it == end)
      exhausted = true;
  }

private:
  input_holder<Rng> in_;
  std::optional<decltype(std::begin(std::declval<input_holder<Rng>&>().get()))>
    it_;
};

/// map, starmap, map_async: every result in input order.
template <class R, class Item, class Rng>
class map_job final : public input_job<Item, Rng> {
public:
  using value_type = result_value_t<R>;
  using input_job<Item, Rng>::input_job;

  std::shared_ptr<result_state<std::vector<value_type>>> future;

  void on_values(std::size_t index, const msgpack::object* values,
                 std::size_t n) override {
    if (values_.size() < index + n)
      values_.resize(index + n);
    for (std::size_t i = 0; i < n; ++i)
      convert_result<R>(values[i], values_[index + i]);
  }
  void on_error(std::size_t index, std::exception_ptr e) override {
    if (!first_error_ || index < first_error_index_) {
      first_error_ = std::move(e);
      first_error_index_ = index;
    }
  }
  void on_finished() override {
    if (!future)
      return;
    if (this->cancelled) {
      future->cancelled = true;
      future->complete();
      return;
    }
    try {
      future->value.emplace(take());
    } catch (...) {
      future->error = std::current_exception();
    }
    future->complete();
  }
  /// The results, or the lowest-index error, or the input's exception.
  std::vector<value_type> take() {
    if (first_error_)
      std::rethrow_exception(first_error_);
    if (this->input_error)
      std::rethrow_exception(this->input_error);
    values_.resize(this->produced);
    return std::move(values_);
  }

private:
  std::vector<value_type> values_;
  std::exception_ptr first_error_;
  std::size_t first_error_index_ = 0;
};

/// imap / imap_unordered: results handed out one by one, in input order
/// (Ordered) or as they come.
template <class R, class Item, class Rng, bool Ordered>
class stream_job final : public input_job<Item, Rng> {
public:
  using base = input_job<Item, Rng>;
  using value_type = result_value_t<R>;
  using outcome = std::variant<value_type, std::exception_ptr>;
  using base::base;

  void on_values(std::size_t index, const msgpack::object* values,
                 std::size_t n) override {
    // All converted first: a conversion that throws puts nothing (the core
    // then takes the items one by one).
    std::vector<value_type> converted(n);
    for (std::size_t i = 0; i < n; ++i)
      convert_result<R>(values[i], converted[i]);
    for (std::size_t i = 0; i < n; ++i)
      put(index + i, outcome(std::in_place_index<0>, std::move(converted[i])));
  }
  void on_error(std::size_t index, std::exception_ptr e) override {
    put(index, outcome(std::in_place_index<1>, std::move(e)));
  }
  [[nodiscard]] std::size_t consumed() const noexcept override {
    return taken_;
  }
  [[nodiscard]] bool has_next() const noexcept {
    if constexpr (Ordered) {
      if (!ready_.empty() && ready_.begin()->first == taken_)
        return true;
    } else {
      if (!ready_.empty())
        return true;
    }
    return at_end();
  }
  [[nodiscard]] bool at_end() const noexcept {
    return this->exhausted && taken_ == this->produced;
  }
  /// The next outcome; nullopt at the end. Only when has_next().
  std::optional<outcome> take_next() {
    if (ready_.empty())
      return std::nullopt;
    auto node = ready_.extract(ready_.begin());
    ++taken_;
    return std::move(node.mapped());
  }

private:
  void put(std::size_t index, outcome o) {
    if constexpr (Ordered)
      ready_.emplace(index, std::move(o));
    else
      ready_.emplace(arrival_++, std::move(o));
  }
  std::map<std::size_t, outcome> ready_;
  std::size_t taken_ = 0;
  std::size_t arrival_ = 0;
};

/// apply, apply_async, submit: one item.
template <class R, class Item>
class apply_job final : public job_base {
public:
  explicit apply_job(Item item) : item_(std::move(item)) {
  }
  std::shared_ptr<result_state<R>> future;

  void produce(chunk_builder& b) override {
    b.add(item_);
    exhausted = true;
  }
  void on_values(std::size_t, const msgpack::object* values,
                 std::size_t n) override {
    if (n == 0)
      return;
    result_value_t<R> v{};
    convert_result<R>(values[0], v);
    future->value.emplace(std::move(v));
  }
  void on_error(std::size_t, std::exception_ptr e) override {
    future->error = std::move(e);
  }
  void on_finished() override {
    if (cancelled)
      future->cancelled = true;
    else if (!future->value && !future->error)
      future->error = std::make_exception_ptr(pool_terminated());
    future->complete();
  }

private:
  Item item_;
};

std::size_t default_pool_size() noexcept;

/// What as_completed and wait need of a future without running its pool.
struct future_access {
  template <class F>
  static result_state_base& state(const F& f) {
    return f.state();
  }
};

} // namespace detail

/// The result of apply_async / map_async / executor::submit: a future
/// (Python's AsyncResult and concurrent.futures.Future). The pool makes
/// progress while a thread waits here (get, wait, ready...); callbacks run
/// in that thread. Copies share the result.
template <class R>
class async_result {
public:
  using value_type = detail::result_value_t<R>;

  async_result() = default;
  explicit async_result(std::shared_ptr<detail::result_state<R>> s)
      : s_(std::move(s)) {
  }

  /// Waits for the result; rethrows the task's error (task_error,
  /// worker_died, task_timeout, pool_terminated, cancelled_error).
  value_type get() {
    wait_until(detail::wait_limit::forever());
    return result();
  }
  /// Waits at most `timeout`; timeout_error if the task has not ended.
  template <class Rep, class Period>
  value_type get(std::chrono::duration<Rep, Period> timeout) {
    if (!wait_until(detail::wait_limit::after(timeout)))
      throw timeout_error();
    return result();
  }
  /// Waits until the task ended.
  void wait() {
    wait_until(detail::wait_limit::forever());
  }
  /// Waits at most `timeout`; returns whether the task ended.
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(detail::wait_limit::after(timeout));
  }
  /// Whether the task ended (runs the pool once without waiting).
  [[nodiscard]] bool ready() {
    return wait_until(detail::wait_limit::none());
  }
  /// concurrent.futures' name for ready().
  [[nodiscard]] bool done() {
    return ready();
  }
  /// Whether it ended with a value. std::logic_error if not ready (as
  /// Python's ValueError).
  [[nodiscard]] bool successful() {
    if (!ready())
      throw std::logic_error("pactor::async_result::successful: the result "
                             "is not ready");
    std::lock_guard lk(state().core->mutex());
    return !s_->error && !s_->cancelled;
  }
  /// Waits, then returns the task's error (null if it succeeded).
  std::exception_ptr exception() {
    wait();
    std::lock_guard lk(state().core->mutex());
    if (s_->cancelled)
      return std::make_exception_ptr(cancelled_error());
    return s_->error;
  }
  /// Cancels the task if no worker has it yet; returns whether it is
  /// cancelled.
  bool cancel() {
    auto& st = state();
    std::lock_guard lk(st.core->mutex());
    if (st.done.load())
      return st.cancelled;
    auto job = st.job.lock();
    // On success the job ends at once and marks this result cancelled.
    return job && st.core->cancel(*job);
  }
  [[nodiscard]] bool cancelled() {
    std::lock_guard lk(state().core->mutex());
    return s_->cancelled;
  }
  /// Calls `fn(*this)` when the task ends (at once if it has), in the
  /// thread that is running the pool then.
  void add_done_callback(std::function<void(async_result&)> fn) {
    auto& st = state();
    std::unique_lock lk(st.core->mutex());
    if (st.done.load()) {
      lk.unlock();
      fn(*this);
      return;
    }
    st.callbacks.push_back(
      [self = *this, fn = std::move(fn)]() mutable { fn(self); });
  }
  [[nodiscard]] bool valid() const noexcept {
    return s_ != nullptr;
  }

private:
  friend struct detail::future_access;
  detail::result_state<R>& state() const {
    if (!s_)
      throw std::logic_error("pactor::async_result: an empty result");
    return *s_;
  }
  bool wait_until(detail::wait_limit limit) {
    auto& st = state();
    return st.core->run_until([&st] { return st.done.load(); }, limit);
  }
  value_type result() {
    auto& st = state();
    std::lock_guard lk(st.core->mutex());
    if (st.cancelled)
      throw cancelled_error();
    if (st.error)
      std::rethrow_exception(st.error);
    return *st.value;
  }

  std::shared_ptr<detail::result_state<R>> s_;
};

/// concurrent.futures' name.
template <class R>
using future = async_result<R>;

/// The lazy results of imap / imap_unordered: next() or a range-for. A task
/// that failed throws its error at its position; iteration can go on after
/// it with next(). Holds the pool's engine; the input range must outlive
/// the iteration when it was passed as an lvalue.
template <class R>
class imap_result {
public:
  using value_type = detail::result_value_t<R>;

  /// The next result, or nullopt after the last one.
  std::optional<value_type> next() {
    return next_until(detail::wait_limit::forever());
  }
  /// The same, waiting at most `timeout` (timeout_error).
  template <class Rep, class Period>
  std::optional<value_type> next(std::chrono::duration<Rep, Period> timeout) {
    return next_until(detail::wait_limit::after(timeout));
  }

  class iterator {
  public:
    using value_type = imap_result::value_type;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(imap_result* r) : r_(r) {
      advance();
    }
    const value_type& operator*() const {
      return *current_;
    }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) {
      advance();
    }
    friend bool operator==(const iterator& it, std::default_sentinel_t) {
      return !it.current_.has_value();
    }

  private:
    void advance() {
      current_.reset();
      current_ = r_->next();
    }
    imap_result* r_ = nullptr;
    std::optional<value_type> current_;
  };

  iterator begin() {
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept {
    return {};
  }

  imap_result(const imap_result&) = delete;
  imap_result& operator=(const imap_result&) = delete;
  imap_result(imap_result&&) noexcept = default;
  imap_result& operator=(imap_result&&) noexcept = default;
  /// Dropped before the end: the rest of the input is not read, tasks not
  /// yet sent are dropped, and the pool forgets the results (so close +
  /// join, or an executor's shutdown, do not wait for a reader).
  ~imap_result() {
    if (core_ && job_)
      core_->abandon(*job_);
  }

  imap_result(
    std::shared_ptr<detail::pool_core> core,
    std::shared_ptr<detail::job_base> job, std::function<bool()> has_next,
    std::function<std::optional<std::variant<value_type, std::exception_ptr>>()>
      take)
      : core_(std::move(core)), job_(std::move(job)),
        has_next_(std::move(has_next)), take_(std::move(take)) {
  }

private:
  std::optional<value_type> next_until(detail::wait_limit limit) {
    if (!core_->run_until(has_next_, limit))
      throw timeout_error();
    std::lock_guard lk(core_->mutex());
    auto o = take_();
    if (!o) {
      if (job_->input_error && !input_error_thrown_) {
        input_error_thrown_ = true;
        std::rethrow_exception(job_->input_error);
      }
      return std::nullopt;
    }
    if (o->index() == 1)
      std::rethrow_exception(std::get<1>(*o));
    return std::move(std::get<0>(*o));
  }

  std::shared_ptr<detail::pool_core> core_;
  std::shared_ptr<detail::job_base> job_;
  std::function<bool()> has_next_;
  std::function<std::optional<std::variant<value_type, std::exception_ptr>>()>
    take_;
  bool input_error_thrown_ = false;
};

/// A pool of worker processes (Python's multiprocessing.Pool).
///
/// Tasks are functions (or captureless lambdas) with msgpack-packable
/// arguments and results. A worker that dies fails (or, with `retries`,
/// re-runs) only the task it was running, and is replaced; no call waits
/// forever on a dead worker. The destructor terminates the workers (as
/// Python's `with Pool()`); close() + join() lets the work finish first.
///
/// Example:
///
///     int square(int x) { return x * x; }
///
///     pactor::pool pool(4);
///     std::vector<int> squares = pool.map(square, std::views::iota(0, 10));
///     auto f = pool.apply_async(square, 7);
///     int v = f.get(std::chrono::seconds(5)); // timeout_error on timeout
class pool {
public:
  /// Starts `processes` workers (0 = one per CPU). Throws
  /// std::invalid_argument for bad options, std::logic_error for fork in a
  /// process with threads (as pactor::process).
  explicit pool(std::size_t processes = 0, pool_options opts = {});
  /// Terminates the workers (unfinished tasks fail with pool_terminated).
  ~pool();
  pool(pool&&) noexcept = default;
  pool& operator=(pool&&) noexcept = default;
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// f(x) for every x of `items`, in order (Python's map). Throws the
  /// lowest-index task error after every task ended, or the input range's
  /// exception. `chunksize` 0 = pool_options::chunksize.
  template <class F, detail::iterable Rng>
  auto map(F&& f, Rng&& items, std::size_t chunksize = 0) {
    return run_map<false>(f, std::forward<Rng>(items), chunksize);
  }

  /// f(args...) for every tuple of `items` (Python's starmap).
  template <class F, detail::iterable Rng>
  auto starmap(F&& f, Rng&& items, std::size_t chunksize = 0) {
    return run_map<true>(f, std::forward<Rng>(items), chunksize);
  }

  /// map without waiting: a future of the whole vector.
  template <class F, detail::iterable Rng>
  auto map_async(F&& f, Rng&& items, std::size_t chunksize = 0) {
    using R = detail::task_result_t<F>;
    using V = std::vector<detail::result_value_t<R>>;
    // The input is read lazily, after this returns: an lvalue is copied.
    auto [job, core] = make_map_job<false>(
      f, std::remove_cvref_t<Rng>(std::forward<Rng>(items)), chunksize);
    return launch<V>(job, core);
  }

  /// Lazy map (Python's imap): results in order as they come; reads the
  /// input at most read_ahead items ahead.
  template <class F, detail::iterable Rng>
  auto imap(F&& f, Rng&& items, std::size_t chunksize = 1) {
    return run_stream<true>(f, std::forward<Rng>(items), chunksize);
  }

  /// imap in completion order (Python's imap_unordered).
  template <class F, detail::iterable Rng>
  auto imap_unordered(F&& f, Rng&& items, std::size_t chunksize = 1) {
    return run_stream<false>(f, std::forward<Rng>(items), chunksize);
  }

  /// f(args...) in a worker; waits for the result.
  template <class F, class... A>
  auto apply(F&& f, A&&... args) {
    return apply_async(f, std::forward<A>(args)...).get();
  }

  /// f(args...) in a worker, without waiting.
  template <class F, class... A>
  auto apply_async(F&& f, A&&... args) {
    using traits = detail::task_traits<F>;
    using R = typename traits::result;
    static_assert(traits::arity == sizeof...(A),
                  "pactor::pool::apply: the function takes a different "
                  "number of arguments");
    using item_t = typename traits::template item<true>;
    auto job = std::make_shared<detail::apply_job<R, item_t>>(
      item_t(std::forward<A>(args)...));
    auto core = core_for<true>(f, *job, 1);
    job->indexed = false;
    return launch<R>(job, core);
  }

  /// No more work; the workers exit once the submitted work is done.
  void close();
  /// After close() or terminate(): waits for the work and the workers.
  void join();
  /// The same, at most `timeout`; returns whether everything ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return join_until(detail::wait_limit::after(timeout));
  }
  /// Stops the workers now; unfinished tasks fail with pool_terminated.
  void terminate() noexcept;

  /// The number of workers.
  [[nodiscard]] std::size_t size() const noexcept;
  /// The workers' pids (they change as workers are replaced).
  [[nodiscard]] std::vector<pid_t> pids();
  /// Worker processes started so far, replacements included.
  [[nodiscard]] std::size_t workers_started() const noexcept;

  /// The engine (executor and tests).
  [[nodiscard]] const std::shared_ptr<detail::pool_core>&
  core() const noexcept {
    return core_;
  }

private:
  /// Gives `job` a future of R, submits it to `core` and returns the future.
  template <class R, class Job>
  async_result<R> launch(const std::shared_ptr<Job>& job,
                         const std::shared_ptr<detail::pool_core>& core) {
    auto st = std::make_shared<detail::result_state<R>>();
    st->core = core;
    st->job = job;
    job->future = st;
    core->submit(job);
    return async_result<R>(std::move(st));
  }

  /// Where a call with `f` runs: the pool's core for a function, a bound
  /// core of `workers` fork workers holding a copy of `f` otherwise (sets
  /// the job's runner and function).
  template <bool Star, class F>
  std::shared_ptr<detail::pool_core> core_for(F& f, detail::job_base& job,
                                              std::size_t workers) {
    using traits = detail::task_traits<F>;
    if constexpr (detail::task_function<F>) {
      job.runner = traits::template runner<Star>();
      job.function = reinterpret_cast<detail::erased_fn>(+f);
      prune_bound();
      return core_;
    } else {
      job.runner = nullptr;
      job.function = nullptr;
      return bound_core(detail::make_bound_runner<Star>(f), workers);
    }
  }
  std::shared_ptr<detail::pool_core> bound_core(detail::bound_runner run,
                                                std::size_t workers);
  /// Stops bound cores whose work is done.
  void prune_bound() noexcept;
  /// Stops `core` now if it is a bound one (its call returned).
  void release(const std::shared_ptr<detail::pool_core>& core) noexcept;
  [[nodiscard]] std::size_t bound_workers(std::optional<std::size_t> total,
                                          std::size_t chunksize) const noexcept;

  bool join_until(detail::wait_limit limit);

  std::size_t pick_chunksize(std::size_t requested,
                             std::optional<std::size_t> total) const;

  template <bool Star, class F, class Rng>
  auto make_map_job(F& f, Rng&& items, std::size_t chunksize) {
    using traits = detail::task_traits<F>;
    using R = typename traits::result;
    using item_t = typename traits::template item<Star>;
    static_assert(Star || traits::arity == 1,
                  "pactor::pool::map: the function must take one argument "
                  "(starmap for several)");
    std::optional<std::size_t> total;
    if constexpr (detail::sized_iterable<Rng>)
      total = static_cast<std::size_t>(std::size(items));
    auto job = std::make_shared<detail::map_job<R, item_t, Rng>>(
      std::forward<Rng>(items));
    job->chunksize = pick_chunksize(chunksize, total);
    job->known_total = total.value_or(0);
    job->report_progress = true;
    auto core = core_for<Star>(f, *job, bound_workers(total, job->chunksize));
    return std::pair(std::move(job), std::move(core));
  }

  template <bool Star, class F, class Rng>
  auto run_map(F& f, Rng&& items, std::size_t chunksize) {
    using R = detail::task_result_t<F>;
    // (Not a structured binding: clang 14 cannot capture one.)
    auto made = make_map_job<Star>(f, std::forward<Rng>(items), chunksize);
    auto& job = made.first;
    auto& core = made.second;
    core->submit(job);
    core->run_until([&job] { return job->finished; },
                    detail::wait_limit::forever());
    release(core);
    std::lock_guard lk(core->mutex());
    if constexpr (std::is_void_v<R>)
      job->take();
    else
      return job->take();
  }

  template <bool Ordered, class F, class Rng>
  auto run_stream(F& f, Rng&& items, std::size_t chunksize) {
    using traits = detail::task_traits<F>;
    using R = typename traits::result;
    using item_t = typename traits::template item<false>;
    static_assert(traits::arity == 1, "pactor::pool::imap: the function must "
                                      "take one argument");
    using job_t = detail::stream_job<R, item_t, Rng, Ordered>;
    std::optional<std::size_t> total;
    if constexpr (detail::sized_iterable<Rng>)
      total = static_cast<std::size_t>(std::size(items));
    auto job = std::make_shared<job_t>(std::forward<Rng>(items));
    job->chunksize = chunksize == 0 ? 1 : chunksize;
    job->read_ahead = read_ahead(job->chunksize);
    job->known_total = total.value_or(0);
    job->report_progress = true;
    auto core = core_for<false>(f, *job, bound_workers(total, job->chunksize));
    core->submit(job);
    job_t* raw = job.get();
    return imap_result<R>(
      core, job, [raw] { return raw->has_next(); },
      [raw] { return raw->take_next(); });
  }

  [[nodiscard]] std::size_t read_ahead(std::size_t chunksize) const noexcept;

  std::shared_ptr<detail::pool_core> core_;
  std::vector<std::shared_ptr<detail::pool_core>> bound_;
  /// Guards bound_ (never held while calling into a core).
  std::unique_ptr<std::mutex> bound_mu_ = std::make_unique<std::mutex>();
  pool_options opts_;
};

} // namespace pactor
