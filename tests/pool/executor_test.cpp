// pactor::executor: submit, map with a timeout, shutdown, as_completed,
// wait, and a worker killed under submit.

#include <pactor/runtime/executor.hpp>

#include "hygiene.hpp"
#include "inputs.hpp"
#include "probe.hpp"
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using pool_test::the_probe;

namespace {

int square(int x) {
  return x * x;
}
int watched(int x) {
  if (x == 7 && pool_test::announce() == 0)
    the_probe()->never.wait(30s);
  return x * x;
}
int sleep_ms(int ms) {
  the_probe()->never.wait(std::chrono::milliseconds(ms));
  return ms;
}
int announce_then_sleep_ms(int ms) {
  pool_test::announce();
  the_probe()->never.wait(std::chrono::milliseconds(ms));
  return ms;
}
int fail_if_negative(int x) {
  if (x < 0)
    throw std::invalid_argument("negative");
  return x;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(executor, pool_test::with_probe)

BOOST_AUTO_TEST_CASE(submit_and_map) {
  pactor::executor ex(2);
  auto f = ex.submit(square, 12);
  BOOST_TEST(f.get(10s) == 144);
  std::vector<int> got;
  for (int v : ex.map(square, std::vector<int>{1, 2, 3}))
    got.push_back(v);
  BOOST_TEST(got == (std::vector<int>{1, 4, 9}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(leaving_a_map_loop_early_does_not_hang_shutdown) {
  pactor::executor ex(2);
  int seen = 0;
  for (int v : ex.map(square, pool_test::upto(100000))) {
    if (v > 100)
      break;
    ++seen;
  }
  BOOST_TEST(seen == 11);
  ex.shutdown(); // must not wait for a reader that is gone
  BOOST_TEST(ex.underlying_pool().pids().empty());
}

BOOST_AUTO_TEST_CASE(map_with_a_timeout_raises_timeout_error) {
  pactor::executor ex(2);
  auto results = ex.map(sleep_ms, std::vector<int>{10, 2000}, 300ms);
  BOOST_TEST(results.next().value() == 10);
  BOOST_CHECK_THROW(results.next(), pactor::timeout_error);
  ex.underlying_pool().terminate();
}

BOOST_AUTO_TEST_CASE(a_killed_worker_fails_only_its_future) {
  pactor::executor ex(2);
  auto killer = pool_test::start_killer();
  std::vector<pactor::future<int>> fs;
  fs.reserve(20);
  for (int i = 0; i < 20; ++i)
    fs.push_back(ex.submit(watched, i));
  for (int i = 0; i < 20; ++i) {
    auto& f = fs[static_cast<std::size_t>(i)];
    if (i == 7) {
      try {
        f.get(30s);
        BOOST_FAIL("no error");
      } catch (const pactor::worker_died& e) {
        BOOST_TEST(e.signal() == SIGKILL);
        BOOST_TEST(e.pid() == the_probe()->pid.load());
      }
    } else {
      BOOST_TEST(f.get(30s) == i * i);
    }
  }
  BOOST_REQUIRE(killer.join(10s));
  // Not broken (Python's BrokenProcessPool): new work runs.
  BOOST_TEST(ex.submit(square, 5).get(10s) == 25);
}

BOOST_AUTO_TEST_CASE(as_completed_yields_in_completion_order) {
  pactor::executor ex(2);
  std::vector<pactor::future<int>> fs;
  fs.push_back(ex.submit(sleep_ms, 300));
  fs.push_back(ex.submit(sleep_ms, 1));
  std::vector<int> order;
  for (auto& f : pactor::as_completed(fs))
    order.push_back(f.get());
  BOOST_TEST(order == (std::vector<int>{1, 300}),
             boost::test_tools::per_element());
  std::vector<pactor::future<int>> slow{ex.submit(sleep_ms, 2000)};
  pactor::as_completed late(slow, 50ms);
  BOOST_CHECK_THROW(late.next(), pactor::timeout_error);
  ex.underlying_pool().terminate();
}

BOOST_AUTO_TEST_CASE(as_completed_takes_each_of_many_futures_once) {
  pactor::executor ex(2);
  std::vector<pactor::future<int>> fs;
  fs.reserve(20000);
  for (int i = 0; i < 20000; ++i)
    fs.push_back(ex.submit(square, i % 1000));
  long long sum = 0;
  std::size_t n = 0;
  for (auto& f : pactor::as_completed(fs, 60000ms)) {
    sum += f.get();
    ++n;
  }
  BOOST_TEST(n == 20000U);
  BOOST_TEST(sum == 20LL * 332833500LL); // 20 x the squares below 1000
}

BOOST_AUTO_TEST_CASE(wait_returns_when_asked) {
  pactor::executor ex(2);
  std::vector<pactor::future<int>> fs{ex.submit(sleep_ms, 1),
                                      ex.submit(sleep_ms, 500)};
  auto first = pactor::wait(fs, pactor::return_when::first_completed, 5000ms);
  BOOST_TEST(first.done == std::vector<std::size_t>{0},
             boost::test_tools::per_element());
  BOOST_TEST(first.not_done == std::vector<std::size_t>{1},
             boost::test_tools::per_element());
  auto all = pactor::wait(fs);
  BOOST_TEST(all.done.size() == 2U);
  std::vector<pactor::future<int>> mixed{ex.submit(fail_if_negative, -1),
                                         ex.submit(sleep_ms, 2000)};
  auto exc = pactor::wait(mixed, pactor::return_when::first_exception, 5000ms);
  BOOST_TEST(exc.done == std::vector<std::size_t>{0},
             boost::test_tools::per_element());
  BOOST_TEST(pactor::wait(mixed, pactor::return_when::all_completed, 20ms)
               .not_done.size()
             == 1U);
  ex.underlying_pool().terminate();
}

BOOST_AUTO_TEST_CASE(shutdown_waits_or_cancels) {
  pactor::executor ex(1);
  auto running = ex.submit(announce_then_sleep_ms, 200);
  auto queued = ex.submit(square, 3);
  BOOST_REQUIRE(the_probe()->started.wait(10s)); // a worker runs it
  ex.shutdown(true, true);
  BOOST_TEST(running.get() == 200);
  BOOST_TEST(queued.cancelled());
  BOOST_CHECK_THROW(ex.submit(square, 1), std::logic_error);

  pactor::executor ex2(2);
  std::vector<pactor::future<int>> fs;
  fs.reserve(100);
  for (int i = 0; i < 100; ++i)
    fs.push_back(ex2.submit(square, i));
  ex2.shutdown(); // waits
  for (int i = 0; i < 100; ++i)
    BOOST_TEST(fs[static_cast<std::size_t>(i)].get(0ms) == i * i);
  BOOST_TEST(ex2.underlying_pool().pids().empty());
}

BOOST_AUTO_TEST_SUITE_END()
