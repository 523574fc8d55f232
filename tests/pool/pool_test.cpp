// pactor::pool: results and order, errors, worker deaths (killed from
// outside, segfaults, poison), retries, timeouts, the initializer,
// max_tasks_per_child, close/join/terminate, futures, every start method.

#include <pactor/runtime/pool.hpp>

#include "hygiene.hpp"
#include "inputs.hpp"
#include "methods.hpp"
#include "probe.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pool_test::the_probe;

namespace {

int square(int x) {
  return x * x;
}
int add(int a, int b) {
  return a + b;
}
std::string greet(const std::string& who, int times) {
  std::string out;
  for (int i = 0; i < times; ++i)
    out += "hello " + who + ";";
  return out;
}
void nothing(int) {
}
int throws_at_3(int x) {
  if (x == 3)
    throw std::domain_error("three is bad");
  return x;
}
int segfault_at_3(int x) {
  if (x == 3)
    std::raise(SIGSEGV);
  return x;
}
// Item 7 announces itself; its first run hangs until someone kills it.
int watched(int x) {
  if (x == 7 && pool_test::announce() == 0)
    the_probe()->never.wait(30s);
  return x * x;
}
// Item 3 always kills its worker.
int poison_at_3(int x) {
  if (x == 3)
    std::raise(SIGKILL);
  return x;
}
int hang_at_2(int x) {
  if (x == 2)
    the_probe()->never.wait(30s);
  return x;
}
int announce_then_sleep_ms(int ms) {
  pool_test::announce();
  the_probe()->never.wait(std::chrono::milliseconds(ms));
  return ms;
}
int my_pid(int) {
  return static_cast<int>(::getpid());
}
int g_init_value = 0;
void set_init_value(int v) {
  g_init_value = v;
}
int plus_init(int x) {
  return x + g_init_value;
}
void failing_init() {
  throw std::runtime_error("no database");
}

struct input_broke : std::runtime_error {
  input_broke() : std::runtime_error("the input broke at 5") {
  }
};

std::vector<int> squares_of(int n) {
  std::vector<int> v;
  v.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    v.push_back(i * i);
  return v;
}

/// Every outcome of an imap: the value, or the error's what().
template <class R>
std::vector<std::string> outcomes(pactor::imap_result<R> r) {
  std::vector<std::string> out;
  for (;;) {
    try {
      auto v = r.next(30s);
      if (!v)
        return out;
      out.push_back(std::to_string(*v));
    } catch (const std::exception& e) {
      out.push_back(std::string("error: ") + e.what());
    }
  }
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(pool, pactor_test::no_leftovers)

BOOST_DATA_TEST_CASE(map_returns_results_in_input_order,
                     bdata::make(all_methods), method) {
  pactor::pool p(2, {.method = method});
  BOOST_TEST(p.map(square, pool_test::upto(100)) == squares_of(100),
             boost::test_tools::per_element());
  BOOST_TEST(p.map(square, std::vector<int>{}).empty());
  std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  BOOST_TEST(p.starmap(add, pairs) == (std::vector<int>{3, 7, 11}),
             boost::test_tools::per_element());
  BOOST_TEST(p.apply(greet, std::string("bob"), 2) == "hello bob;hello bob;");
}

BOOST_AUTO_TEST_CASE(map_with_any_chunksize_and_void_tasks) {
  pactor::pool p(2);
  for (std::size_t chunk : {1, 3, 7, 1000})
    BOOST_TEST(p.map(square, pool_test::upto(500), chunk) == squares_of(500),
               boost::test_tools::per_element());
  p.map(nothing, pool_test::upto(10)); // compiles and returns
}

BOOST_AUTO_TEST_CASE(a_large_map_crosses_many_chunks) {
  pactor::pool p(2);
  std::vector<std::string> words;
  words.reserve(20000);
  for (int i = 0; i < 20000; ++i)
    words.push_back(std::string(static_cast<std::size_t>(i % 300), 'x'));
  auto lens = p.map(
    +[](const std::string& s) { return s.size(); }, words);
  BOOST_REQUIRE_EQUAL(lens.size(), words.size());
  for (std::size_t i = 0; i < words.size(); ++i)
    BOOST_TEST_REQUIRE(lens[i] == words[i].size());
}

BOOST_AUTO_TEST_CASE(imap_is_ordered_and_imap_unordered_has_every_result) {
  pactor::pool p(2);
  std::vector<int> got;
  for (int v : p.imap(square, pool_test::upto(300), 4))
    got.push_back(v);
  BOOST_TEST(got == squares_of(300), boost::test_tools::per_element());
  std::multiset<int> unordered;
  for (int v : p.imap_unordered(square, pool_test::upto(300)))
    unordered.insert(v);
  auto want = squares_of(300);
  BOOST_TEST((unordered == std::multiset<int>(want.begin(), want.end())));
}

BOOST_AUTO_TEST_CASE(imap_reads_its_input_lazily) {
  pactor::pool p(2, {.read_ahead = 4});
  int pulled = 0;
  pool_test::generated counted(1000, [&pulled](int x) {
    ++pulled;
    return x;
  });
  auto it = p.imap(square, counted);
  BOOST_TEST(it.next(10s).value() == 0);
  BOOST_TEST(pulled <= 6); // one taken + at most read_ahead ahead (+ one)
  int n = 1;
  while (it.next(10s))
    ++n;
  BOOST_TEST(n == 1000);
  BOOST_TEST(pulled == 1000);
}

BOOST_AUTO_TEST_CASE(a_throwing_task_fails_alone_with_its_type_and_message) {
  pactor::pool p(2);
  try {
    (void)p.map(throws_at_3, pool_test::upto(10), 2);
    BOOST_FAIL("map did not throw");
  } catch (const pactor::task_error& e) {
    BOOST_TEST(e.index() == 3U);
    BOOST_TEST(e.type_name() == "std::domain_error");
    BOOST_TEST(e.message() == "three is bad");
    BOOST_TEST(std::string(e.what())
               == "pactor::task_error: task 3 threw std::domain_error: three "
                  "is bad");
  }
  auto o = outcomes(p.imap(throws_at_3, pool_test::upto(6), 2));
  const std::string third = "error: pactor::task_error: task 3 threw "
                            "std::domain_error: three is bad";
  BOOST_TEST(o == (std::vector<std::string>{"0", "1", "2", third, "4", "5"}),
             boost::test_tools::per_element());
  auto f = p.apply_async(throws_at_3, 3);
  BOOST_CHECK_THROW(f.get(10s), pactor::task_error);
  BOOST_TEST(!f.successful());
  // The pool goes on.
  BOOST_TEST(p.apply(square, 9) == 81);
}

BOOST_AUTO_TEST_CASE(an_input_that_throws_yields_the_results_before_it) {
  pactor::pool p(2);
  pool_test::generated broken(10, [](int x) {
    if (x == 5)
      throw input_broke();
    return x;
  });
  auto it = p.imap(square, broken);
  std::vector<int> got;
  try {
    while (auto v = it.next(10s))
      got.push_back(*v);
    BOOST_FAIL("the input's exception did not arrive");
  } catch (const input_broke&) {
  }
  BOOST_TEST(got == (std::vector<int>{0, 1, 4, 9, 16}),
             boost::test_tools::per_element());
  BOOST_CHECK(!it.next(1s)); // then the end
  BOOST_CHECK_THROW((void)p.map(square, broken), input_broke);
}

BOOST_AUTO_TEST_CASE(a_segfaulting_task_fails_with_the_signal_and_pid) {
  pactor::pool p(2);
  auto o = outcomes(p.imap(segfault_at_3, pool_test::upto(6)));
  BOOST_REQUIRE_EQUAL(o.size(), 6U);
  BOOST_TEST(o[3].find("pactor::worker_died: task 3: its worker (pid ")
             != std::string::npos);
  BOOST_TEST(o[3].find("killed by signal 11 (SIGSEGV)") != std::string::npos);
  for (int i : {0, 1, 2, 4, 5})
    BOOST_TEST(o[static_cast<std::size_t>(i)] == std::to_string(i));
  try {
    p.apply(segfault_at_3, 3);
    BOOST_FAIL("no error");
  } catch (const pactor::worker_died& e) {
    BOOST_TEST(e.signal() == SIGSEGV);
    BOOST_TEST(e.exit_code() == -1);
    BOOST_TEST(e.pid() > 0);
    BOOST_TEST(e.attempts() == 1U);
  }
  BOOST_TEST(p.pids().size() == 2U); // replaced
  BOOST_TEST(p.workers_started() == 4U);
}

BOOST_DATA_TEST_CASE(a_dead_worker_fails_only_its_task_with_every_method,
                     bdata::make(all_methods), method) {
  pactor::pool p(2, {.method = method, .retries = 1});
  auto o = outcomes(p.imap(poison_at_3, pool_test::upto(6), 2));
  BOOST_REQUIRE_EQUAL(o.size(), 6U);
  BOOST_TEST(o[3].find("pactor::worker_died: task 3: its worker (pid ")
             != std::string::npos);
  BOOST_TEST(o[3].find("2 workers died running it") != std::string::npos);
  for (int i : {0, 1, 2, 4, 5})
    BOOST_TEST(o[static_cast<std::size_t>(i)] == std::to_string(i));
  BOOST_TEST(p.pids().size() == 2U);
}

BOOST_AUTO_TEST_CASE(
  a_task_that_kills_every_worker_is_poison_after_its_retries) {
  pactor::pool p(2, {.retries = 2});
  auto o = outcomes(p.imap(poison_at_3, pool_test::upto(6)));
  BOOST_REQUIRE_EQUAL(o.size(), 6U);
  BOOST_TEST(o[3].find("killed by signal 9 (SIGKILL) while running it; 3 "
                       "workers died running it")
             != std::string::npos);
  for (int i : {0, 1, 2, 4, 5})
    BOOST_TEST(o[static_cast<std::size_t>(i)] == std::to_string(i));
}

// The line: a worker SIGKILLed from outside in the middle of map,
// imap, imap_unordered, apply_async and executor.submit (executor_test)
// never hangs the caller and fails or retries exactly the task it ran.
BOOST_FIXTURE_TEST_SUITE(killed_from_outside, pool_test::with_probe)

BOOST_DATA_TEST_CASE(map_fails_exactly_the_running_task,
                     bdata::make({std::size_t{1}, std::size_t{4}}), chunk) {
  pactor::pool p(2);
  auto killer = pool_test::start_killer();
  try {
    (void)p.map(watched, pool_test::upto(20), chunk);
    BOOST_FAIL("map did not fail");
  } catch (const pactor::worker_died& e) {
    BOOST_TEST(e.index() == 7U);
    BOOST_TEST(e.signal() == SIGKILL);
    BOOST_TEST(e.pid() == the_probe()->pid.load());
  }
  BOOST_REQUIRE(killer.join(10s));
  BOOST_TEST(killer.exitcode().value() == 0);
  BOOST_TEST(the_probe()->runs.load() == 1);
}

BOOST_DATA_TEST_CASE(map_with_retries_runs_it_again,
                     bdata::make({std::size_t{1}, std::size_t{4}}), chunk) {
  pactor::pool p(2, {.retries = 1});
  auto killer = pool_test::start_killer();
  auto got = p.map(watched, pool_test::upto(20), chunk);
  BOOST_TEST(got == squares_of(20), boost::test_tools::per_element());
  BOOST_REQUIRE(killer.join(10s));
  BOOST_TEST(the_probe()->runs.load() == 2);
}

BOOST_AUTO_TEST_CASE(imap_fails_only_that_position) {
  pactor::pool p(2);
  auto killer = pool_test::start_killer();
  auto o = outcomes(p.imap(watched, pool_test::upto(20), 3));
  BOOST_REQUIRE(killer.join(10s));
  BOOST_REQUIRE_EQUAL(o.size(), 20U);
  for (int i = 0; i < 20; ++i) {
    if (i == 7)
      BOOST_TEST(o[7].find("pactor::worker_died: task 7: its worker (pid "
                           + std::to_string(the_probe()->pid.load())
                           + ") was killed by signal 9")
                 != std::string::npos);
    else
      BOOST_TEST(o[static_cast<std::size_t>(i)] == std::to_string(i * i));
  }
}

BOOST_AUTO_TEST_CASE(imap_unordered_fails_only_that_task) {
  pactor::pool p(2);
  auto killer = pool_test::start_killer();
  auto o = outcomes(p.imap_unordered(watched, pool_test::upto(20)));
  BOOST_REQUIRE(killer.join(10s));
  BOOST_REQUIRE_EQUAL(o.size(), 20U);
  std::multiset<std::string> got(o.begin(), o.end());
  std::size_t errors = 0;
  for (auto& s : o)
    if (s.starts_with("error: pactor::worker_died: task 7:"))
      ++errors;
  BOOST_TEST(errors == 1U);
  for (int i = 0; i < 20; ++i)
    if (i != 7)
      BOOST_TEST(got.count(std::to_string(i * i)) == 1U);
}

BOOST_AUTO_TEST_CASE(apply_async_fails_only_that_future) {
  pactor::pool p(2);
  auto killer = pool_test::start_killer();
  std::vector<pactor::async_result<int>> fs;
  fs.reserve(20);
  for (int i = 0; i < 20; ++i)
    fs.push_back(p.apply_async(watched, i));
  for (int i = 0; i < 20; ++i) {
    if (i == 7)
      BOOST_CHECK_THROW(fs[7].get(30s), pactor::worker_died);
    else
      BOOST_TEST(fs[static_cast<std::size_t>(i)].get(30s) == i * i);
  }
  BOOST_REQUIRE(killer.join(10s));
}

BOOST_AUTO_TEST_CASE(
  a_task_past_its_timeout_fails_and_only_its_worker_is_replaced) {
  pactor::pool p(2, {.task_timeout = 200ms});
  auto start = std::chrono::steady_clock::now();
  auto o = outcomes(p.imap(hang_at_2, pool_test::upto(8)));
  auto took = std::chrono::steady_clock::now() - start;
  BOOST_REQUIRE_EQUAL(o.size(), 8U);
  BOOST_TEST(o[2].find("pactor::task_timeout: task 2 ran longer than 200 ms")
             != std::string::npos);
  for (int i : {0, 1, 3, 4, 5, 6, 7})
    BOOST_TEST(o[static_cast<std::size_t>(i)] == std::to_string(i));
  BOOST_CHECK(took < 5s);
  BOOST_TEST(p.workers_started() == 3U);
}

BOOST_AUTO_TEST_CASE(terminate_fails_what_is_left_without_waiting) {
  pactor::pool p(1);
  auto slow = p.apply_async(hang_at_2, 2);
  auto queued = p.apply_async(square, 5);
  auto start = std::chrono::steady_clock::now();
  p.terminate();
  BOOST_CHECK_THROW(slow.get(5s), pactor::pool_terminated);
  BOOST_CHECK_THROW(queued.get(5s), pactor::pool_terminated);
  BOOST_CHECK(std::chrono::steady_clock::now() - start < 3s);
  BOOST_TEST(p.pids().empty());
  BOOST_CHECK_THROW(p.apply_async(square, 1), std::logic_error);
  p.join(); // allowed after terminate
}

BOOST_AUTO_TEST_CASE(futures_time_out_call_back_and_cancel) {
  pactor::pool p(1);
  auto slow = p.apply_async(announce_then_sleep_ms, 400);
  BOOST_CHECK_THROW(slow.get(20ms), pactor::timeout_error);
  BOOST_TEST(!slow.ready());
  BOOST_CHECK_THROW((void)slow.successful(), std::logic_error);
  BOOST_REQUIRE(the_probe()->started.wait(10s)); // the worker has it
  BOOST_TEST(!slow.cancel());                    // running: too late
  auto queued = p.apply_async(square, 4);        // behind it in the ring
  int calls = 0;
  queued.add_done_callback([&calls](pactor::async_result<int>&) { ++calls; });
  BOOST_TEST(queued.cancel());
  BOOST_TEST(queued.cancelled());
  BOOST_TEST(calls == 1);
  BOOST_CHECK_THROW(queued.get(), pactor::cancelled_error);
  int seen = 0;
  slow.add_done_callback(
    [&seen](pactor::async_result<int>& r) { seen = r.get(); });
  BOOST_TEST(slow.get(10s) == 400);
  BOOST_TEST(seen == 400);
  BOOST_TEST(slow.successful());
  BOOST_TEST(p.apply(square, 3) == 9); // the cancelled task never ran
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(a_lambda_with_captures_runs_on_workers_forked_for_it) {
  pactor::pool p(2);
  std::string prefix = "item-";
  int k = 3;
  auto label = [prefix, k](int x) { return prefix + std::to_string(x * k); };
  auto got = p.map(label, pool_test::upto(100), 7);
  BOOST_REQUIRE_EQUAL(got.size(), 100U);
  BOOST_TEST(got[0] == "item-0");
  BOOST_TEST(got[99] == "item-297");
  std::vector<std::string> streamed;
  for (auto& s : p.imap(label, pool_test::upto(5)))
    streamed.push_back(s);
  BOOST_TEST(streamed.back() == "item-12");
  auto f = p.apply_async([k](int a, int b) { return a * b * k; }, 2, 5);
  BOOST_TEST(f.get(10s) == 30);
  std::function<int(int)> fn = [k](int x) { return x + k; };
  BOOST_TEST(p.map(fn, std::vector<int>{1, 2}) == (std::vector<int>{4, 5}),
             boost::test_tools::per_element());
  // A capturing task that crashes fails alone, as any other.
  auto o = outcomes(
    p.imap([k](int x) { return segfault_at_3(x) + k; }, pool_test::upto(5)));
  BOOST_TEST(o[3].find("killed by signal 11") != std::string::npos);
  BOOST_TEST(o[4] == "7");
  BOOST_TEST(p.apply(square, 4) == 16); // the pool's own workers are intact
}

BOOST_AUTO_TEST_CASE(a_lambda_with_captures_on_a_spawn_pool_is_a_clear_error) {
  pactor::pool p(1, {.method = pactor::start_method::spawn});
  int k = 2;
  BOOST_CHECK_EXCEPTION(
    (void)p.map([k](int x) { return x * k; }, std::vector<int>{1}),
    std::logic_error, [](const std::logic_error& e) {
      return std::string(e.what()).find("needs a fork pool")
             != std::string::npos;
    });
  BOOST_TEST(p.apply(square, 3) == 9);
}

BOOST_AUTO_TEST_CASE(an_imap_dropped_early_does_not_hold_up_join) {
  pactor::pool p(2, {.read_ahead = 8});
  {
    auto it = p.imap(square, pool_test::upto(100000));
    BOOST_TEST(it.next(10s).value() == 0);
  } // dropped after one result
  p.close();
  BOOST_TEST(p.join(10s));
}

BOOST_AUTO_TEST_CASE(map_async_keeps_its_own_copy_of_an_lvalue_input) {
  pactor::pool p(2);
  pactor::async_result<std::vector<int>> f;
  {
    auto input = pool_test::upto(1000);
    f = p.map_async(square, input, 7);
  } // the vector is gone; the call reads its copy
  BOOST_TEST(f.get(30s) == squares_of(1000), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(max_tasks_per_child_replaces_workers) {
  pactor::pool p(1, {.max_tasks_per_child = 2});
  auto pids = p.map(my_pid, pool_test::upto(10), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  BOOST_TEST(distinct.size() == 5U);
  BOOST_TEST(p.workers_started() >= 5U);
}

BOOST_DATA_TEST_CASE(the_initializer_runs_in_every_worker,
                     bdata::make(all_methods), method) {
  pactor::pool p(
    2, {.method = method, .init = pactor::initializer(set_init_value, 100)});
  BOOST_TEST(p.map(plus_init, pool_test::upto(50)) == ([] {
               std::vector<int> v(50);
               std::iota(v.begin(), v.end(), 100);
               return v;
             }()),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_initializer_that_throws_breaks_the_pool_clearly) {
  pactor::pool p(2, {.init = pactor::initializer(failing_init)});
  try {
    (void)p.map(square, pool_test::upto(10));
    BOOST_FAIL("no error");
  } catch (const pactor::pool_broken& e) {
    BOOST_TEST(std::string(e.what()).find(
                 "the initializer threw std::runtime_error: no database")
               != std::string::npos);
  }
  BOOST_CHECK_THROW(p.apply_async(square, 1), pactor::pool_broken);
}

BOOST_AUTO_TEST_CASE(close_then_join_lets_the_work_finish) {
  pactor::pool p(2);
  std::vector<pactor::async_result<int>> fs;
  fs.reserve(50);
  for (int i = 0; i < 50; ++i)
    fs.push_back(p.apply_async(square, i));
  BOOST_CHECK_THROW(p.join(), std::logic_error); // join before close
  p.close();
  BOOST_CHECK_THROW(p.apply_async(square, 1), std::logic_error);
  BOOST_TEST(p.join(10s));
  for (int i = 0; i < 50; ++i) {
    BOOST_TEST(fs[static_cast<std::size_t>(i)].ready());
    BOOST_TEST(fs[static_cast<std::size_t>(i)].get() == i * i);
  }
  BOOST_TEST(p.pids().empty());
}

BOOST_AUTO_TEST_CASE(map_async_and_progress) {
  std::vector<pactor::progress_info> seen;
  pactor::pool p(2, {.on_progress = [&seen](const pactor::progress_info& i) {
                   seen.push_back(i);
                 }});
  auto f = p.map_async(square, pool_test::upto(1000), 10);
  BOOST_TEST(f.get(30s) == squares_of(1000), boost::test_tools::per_element());
  BOOST_REQUIRE(!seen.empty());
  BOOST_TEST(seen.back().done == 1000U);
  BOOST_TEST(seen.back().total == 1000U);
  for (std::size_t i = 1; i < seen.size(); ++i)
    BOOST_TEST(seen[i].done >= seen[i - 1].done);
}

BOOST_AUTO_TEST_SUITE_END()
