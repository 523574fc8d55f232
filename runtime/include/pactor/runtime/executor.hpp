// pactor::executor: the concurrent.futures.ProcessPoolExecutor shape over
// pactor::pool (submit, map, shutdown, as_completed, wait). Guide:
// docs/pool.md.

#pragma once

#include <pactor/runtime/pool.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace pactor {

/// A process pool with the concurrent.futures interface. Unlike Python's
/// ProcessPoolExecutor it never turns into BrokenProcessPool: a dead worker
/// fails (or retries) only its own task. The destructor runs shutdown(true).
///
/// Example:
///
///     int square(int x) { return x * x; }
///
///     pactor::executor ex(4);
///     auto f = ex.submit(square, 12);
///     int v = f.get(std::chrono::seconds(5));
///     for (int s : ex.map(square, std::vector{1, 2, 3})) ...
class executor {
public:
  /// Starts `max_workers` workers (0 = one per CPU).
  explicit executor(std::size_t max_workers = 0, pool_options opts = {})
      : pool_(max_workers, std::move(opts)) {
  }
  ~executor() {
    try {
      shutdown(true);
    } catch (...) {
      pool_.terminate();
    }
  }
  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  /// Runs f(args...) in a worker; returns its future. std::logic_error
  /// after shutdown (Python's RuntimeError).
  template <class F, class... A>
  auto submit(F&& f, A&&... args) {
    if (shut_down_)
      throw std::logic_error(
        "pactor::executor::submit: cannot schedule new futures after shutdown");
    return pool_.apply_async(std::forward<F>(f), std::forward<A>(args)...);
  }

  /// f(x) for every x, results in order (lazily, as imap). With a timeout,
  /// a result not there `timeout` after this call throws timeout_error.
  template <class F, detail::iterable Rng>
  auto map(F&& f, Rng&& items,
           std::optional<std::chrono::milliseconds> timeout = std::nullopt,
           std::size_t chunksize = 1) {
    if (shut_down_)
      throw std::logic_error(
        "pactor::executor::map: cannot schedule new futures after shutdown");
    using R = detail::task_result_t<F>;
    auto it
      = pool_.imap(std::forward<F>(f), std::forward<Rng>(items), chunksize);
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (timeout)
      deadline = std::chrono::steady_clock::now() + *timeout;
    return timed_results<R>(std::move(it), deadline);
  }

  /// No new work. wait: returns once every submitted task ended and the
  /// workers exited. cancel_futures: futures no worker has taken yet are
  /// cancelled.
  void shutdown(bool wait = true, bool cancel_futures = false) {
    shut_down_ = true;
    if (cancel_futures)
      pool_.core()->cancel_pending();
    pool_.close();
    if (wait)
      pool_.join();
  }

  /// The pool underneath (pids, workers_started...).
  [[nodiscard]] pool& underlying_pool() noexcept {
    return pool_;
  }

  /// The results of executor::map.
  template <class R>
  class timed_results {
  public:
    using value_type = detail::result_value_t<R>;
    timed_results(imap_result<R> it,
                  std::optional<std::chrono::steady_clock::time_point> deadline)
        : it_(std::move(it)), deadline_(deadline) {
    }
    /// The next result; nullopt after the last. timeout_error past the
    /// deadline.
    std::optional<value_type> next() {
      if (!deadline_)
        return it_.next();
      auto left = *deadline_ - std::chrono::steady_clock::now();
      return it_.next(std::max(left, decltype(left)::zero()));
    }
    class iterator {
    public:
      using value_type = timed_results::value_type;
      using difference_type = std::ptrdiff_t;
      iterator() = default;
      explicit iterator(timed_results* r) : r_(r), v_(r->next()) {
      }
      const value_type& operator*() const {
        return *v_;
      }
      iterator& operator++() {
        v_.reset();
        v_ = r_->next();
        return *this;
      }
      void operator++(int) {
        ++*this;
      }
      friend bool operator==(const iterator& i, std::default_sentinel_t) {
        return !i.v_.has_value();
      }

    private:
      timed_results* r_ = nullptr;
      std::optional<value_type> v_;
    };
    iterator begin() {
      return iterator(this);
    }
    std::default_sentinel_t end() const noexcept {
      return {};
    }

  private:
    imap_result<R> it_;
    std::optional<std::chrono::steady_clock::time_point> deadline_;
  };

private:
  pool pool_;
  bool shut_down_ = false;
};

/// When wait() returns.
enum class return_when : std::uint8_t {
  first_completed,
  first_exception,
  all_completed,
};

/// wait()'s answer: indices into the futures passed.
struct wait_sets {
  std::vector<std::size_t> done;
  std::vector<std::size_t> not_done;
};

namespace detail {
/// Whether `f` has ended, without running its pool.
template <class R>
bool ended(const async_result<R>& f) {
  return future_access::state(f).done.load(std::memory_order_acquire);
}

/// The distinct pools behind `fs`.
template <class R>
std::vector<std::shared_ptr<pool_core>>
cores_of(std::span<async_result<R>> fs) {
  std::vector<std::shared_ptr<pool_core>> cores;
  for (auto& f : fs) {
    const auto& c = future_access::state(f).core;
    if (std::find(cores.begin(), cores.end(), c) == cores.end())
      cores.push_back(c);
  }
  return cores;
}

/// Runs `cores` until `pred()` (which must not run them) or the deadline.
template <class Pred>
bool run_futures(
  const std::vector<std::shared_ptr<pool_core>>& cores, Pred pred,
  std::optional<std::chrono::steady_clock::time_point> deadline) {
  std::function<bool()> holds = [&pred] { return pred(); };
  if (cores.empty())
    return pred();
  if (cores.size() == 1) // one pool: it sleeps until pred() or the deadline
    return cores.front()->run_until(
      holds, deadline ? wait_limit::after(
               std::max(*deadline - std::chrono::steady_clock::now(),
                        std::chrono::steady_clock::duration::zero()))
                      : wait_limit::forever());
  for (;;) {
    for (auto& c : cores)
      if (c->run_until(holds, wait_limit::none()))
        return true;
    std::chrono::nanoseconds slice = std::chrono::milliseconds(10);
    if (deadline) {
      auto now = std::chrono::steady_clock::now();
      if (now >= *deadline)
        return false;
      slice = std::min<std::chrono::nanoseconds>(slice, *deadline - now);
    }
    if (cores.front()->run_until(holds, wait_limit::after(slice)))
      return true;
  }
}
} // namespace detail

/// Waits until `when` holds for `fs` (concurrent.futures.wait).
template <class R>
wait_sets wait(std::span<async_result<R>> fs,
               return_when when = return_when::all_completed,
               std::optional<std::chrono::milliseconds> timeout
               = std::nullopt) {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (timeout)
    deadline = std::chrono::steady_clock::now() + *timeout;
  auto holds = [&] {
    std::size_t done = 0;
    for (auto& f : fs) {
      if (!detail::ended(f))
        continue;
      ++done;
      if (when == return_when::first_completed)
        return true;
      auto& st = detail::future_access::state(f);
      if (when == return_when::first_exception && (st.error || st.cancelled))
        return true;
    }
    return done == fs.size();
  };
  detail::run_futures(detail::cores_of(fs), holds, deadline);
  wait_sets out;
  for (std::size_t i = 0; i < fs.size(); ++i)
    (detail::ended(fs[i]) ? out.done : out.not_done).push_back(i);
  return out;
}

/// wait() over a vector of futures.
template <class R>
wait_sets wait(std::vector<async_result<R>>& fs,
               return_when when = return_when::all_completed,
               std::optional<std::chrono::milliseconds> timeout
               = std::nullopt) {
  return wait(std::span<async_result<R>>(fs), when, timeout);
}

/// The futures in the order they end (concurrent.futures.as_completed):
/// `for (auto& f : pactor::as_completed(fs)) use(f.get());`. With a
/// timeout, timeout_error when the next one is not done in time (counted
/// from this call).
template <class R>
class as_completed {
public:
  explicit as_completed(std::span<async_result<R>> fs,
                        std::optional<std::chrono::milliseconds> timeout
                        = std::nullopt)
      : fs_(fs), cores_(detail::cores_of(fs)),
        ended_(std::make_shared<std::deque<std::size_t>>()) {
    if (timeout)
      deadline_ = std::chrono::steady_clock::now() + *timeout;
    // Each future reports its end into a queue shared with the callbacks
    // (they may outlive this object): next() is O(1) per future.
    for (std::size_t i = 0; i < fs.size(); ++i)
      fs[i].add_done_callback(
        [q = ended_, i](async_result<R>&) { q->push_back(i); });
  }
  explicit as_completed(std::vector<async_result<R>>& fs,
                        std::optional<std::chrono::milliseconds> timeout
                        = std::nullopt)
      : as_completed(std::span<async_result<R>>(fs), timeout) {
  }

  /// The next future to end, nullptr after the last.
  async_result<R>* next() {
    if (taken_ == fs_.size())
      return nullptr;
    auto any = [this] { return !ended_->empty(); };
    if (!detail::run_futures(cores_, any, deadline_))
      throw timeout_error();
    auto i = ended_->front();
    ended_->pop_front();
    ++taken_;
    return &fs_[i];
  }

  class iterator {
  public:
    using value_type = async_result<R>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(as_completed* a) : a_(a), cur_(a->next()) {
    }
    async_result<R>& operator*() const {
      return *cur_;
    }
    iterator& operator++() {
      cur_ = a_->next();
      return *this;
    }
    void operator++(int) {
      ++*this;
    }
    friend bool operator==(const iterator& i, std::default_sentinel_t) {
      return i.cur_ == nullptr;
    }

  private:
    as_completed* a_ = nullptr;
    async_result<R>* cur_ = nullptr;
  };
  iterator begin() {
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept {
    return {};
  }

private:
  std::span<async_result<R>> fs_;
  std::vector<std::shared_ptr<detail::pool_core>> cores_;
  std::shared_ptr<std::deque<std::size_t>> ended_;
  std::size_t taken_ = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
};

template <class R>
as_completed(std::vector<async_result<R>>&) -> as_completed<R>;
template <class R>
as_completed(std::vector<async_result<R>>&, std::chrono::milliseconds)
  -> as_completed<R>;

} // namespace pactor
