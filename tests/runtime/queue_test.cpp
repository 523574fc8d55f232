// Tests for pactor::queue: semantics in one process, across processes under
// every start method, and at every crash point of put and get.

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <fstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor::start_method;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

void put_range(pactor::queue<int> q, int from, int to) {
  for (int i = from; i < to; ++i)
    q.put(i);
}

int sum_gets(pactor::queue<int> q, int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i)
    sum += q.get(10s);
  return sum == static_cast<long>(n) * (n - 1) / 2 ? 0 : 1;
}

void put_after_crash_point(pactor::queue<int> q, int point, int countdown,
                           int n) {
  pactor::detail::crash_point_arm(point, countdown);
  for (int i = 0; i < n; ++i)
    q.put(i);
}

void get_after_crash_point(pactor::queue<int> q, int point, int countdown,
                           int n) {
  pactor::detail::crash_point_arm(point, countdown);
  for (int i = 0; i < n; ++i)
    (void)q.get(10s);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(queue, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(messages_come_out_in_the_order_they_went_in) {
  pactor::queue<std::string> q;
  for (auto s : {"a", "bb", "", "dddd"})
    q.put(s);
  BOOST_CHECK_EQUAL(q.size(), 4U);
  BOOST_CHECK_EQUAL(q.get(), "a");
  BOOST_CHECK_EQUAL(q.get(), "bb");
  BOOST_CHECK_EQUAL(q.get(), "");
  BOOST_CHECK_EQUAL(q.get(), "dddd");
  BOOST_CHECK(q.empty());
}

BOOST_AUTO_TEST_CASE(an_empty_queue_times_out_with_queue_empty) {
  pactor::queue<int> q;
  BOOST_CHECK(!q.try_get());
  auto t0 = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(q.get(30ms), pactor::queue_empty);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
}

BOOST_AUTO_TEST_CASE(maxsize_bounds_the_number_of_messages) {
  pactor::queue<int> q(2);
  BOOST_CHECK(q.try_put(1));
  BOOST_CHECK(q.try_put(2));
  BOOST_CHECK(q.full());
  BOOST_CHECK(!q.try_put(3));
  BOOST_CHECK_THROW(q.put(3, 20ms), pactor::queue_full);
  BOOST_CHECK_EQUAL(q.get(), 1);
  BOOST_CHECK(q.try_put(3));
  BOOST_CHECK_EQUAL(q.get(), 2);
  BOOST_CHECK_EQUAL(q.get(), 3);
}

BOOST_AUTO_TEST_CASE(records_of_every_size_wrap_around_the_ring_in_order) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  int next_in = 0;
  int next_out = 0;
  std::size_t bytes = 0;
  auto text = [](int i) {
    return std::string(static_cast<std::size_t>(i * 37 % 1500),
                       static_cast<char>('a' + i % 26));
  };
  for (int round = 0; round < 400; ++round) {
    while (q.try_put(text(next_in)))
      bytes += text(next_in++).size();
    for (int k = 0; k < 1 + round % 3 && !q.empty(); ++k)
      BOOST_REQUIRE_EQUAL(q.get(), text(next_out++));
  }
  while (auto s = q.try_get())
    BOOST_REQUIRE_EQUAL(*s, text(next_out++));
  BOOST_CHECK_EQUAL(next_in, next_out);
  BOOST_CHECK(bytes > std::size_t{100} * 4096); // over 100 laps of 4 KiB
}

BOOST_AUTO_TEST_CASE(a_message_that_exactly_fills_the_ring_stays_in_it) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  q.put(std::string(q.max_message_bytes() - 3, 'y')); // str16 header: 3 B
  BOOST_CHECK_EQUAL(q.get().size(), q.max_message_bytes() - 3);
}

BOOST_AUTO_TEST_CASE(a_closed_queue_refuses_puts_and_drains_then_says_so) {
  pactor::queue<int> q;
  q.put(1);
  q.close();
  BOOST_CHECK(q.closed());
  BOOST_CHECK_THROW(q.put(2), pactor::queue_closed);
  BOOST_CHECK_EQUAL(q.get(), 1);
  BOOST_CHECK_THROW(q.get(), pactor::queue_closed);
}

BOOST_AUTO_TEST_CASE(close_wakes_a_blocked_getter) {
  pactor::queue<int> q(0, {.spin = 0ns});
  std::atomic<int> outcome{0};
  std::atomic<pid_t> tid{0};
  std::thread t([&] {
    tid = ::gettid();
    try {
      (void)q.get(10s);
      outcome = 1;
    } catch (const pactor::queue_closed&) {
      outcome = 2;
    } catch (...) {
      outcome = 3;
    }
  });
  // Wait (bounded) until the getter thread sleeps in the kernel, then close.
  bool asleep = false;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !asleep && std::chrono::steady_clock::now() < until;) {
    if (tid == 0)
      continue;
    std::ifstream stat("/proc/self/task/" + std::to_string(tid.load())
                       + "/stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    asleep = close != std::string::npos && line.size() > close + 2
             && line[close + 2] == 'S';
  }
  BOOST_CHECK(asleep);
  q.close();
  t.join();
  BOOST_CHECK_EQUAL(outcome.load(), 2);
}

BOOST_AUTO_TEST_CASE(a_message_that_does_not_decode_is_consumed_with_an_error) {
  pactor::queue<std::string> strings;
  auto ints = pactor::queue<int>::attach(strings.fds());
  strings.put("not an int");
  strings.put("next");
  BOOST_CHECK_THROW((void)ints.get(), pactor::decode_error);
  BOOST_CHECK_EQUAL(strings.get(), "next");
}

BOOST_AUTO_TEST_CASE(attach_rejects_an_fd_that_is_not_a_queue) {
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);
  BOOST_CHECK_THROW(pactor::queue<int>::attach({fds[0], fds[1], -1}),
                    std::exception);
  ::close(fds[0]);
  ::close(fds[1]);
}

BOOST_AUTO_TEST_CASE(attach_rejects_sockets_of_another_queue) {
  pactor::queue<int> a;
  pactor::queue<int> b;
  auto fa = a.fds();
  auto fb = b.fds();
  BOOST_CHECK_THROW(pactor::queue<int>::attach({fa[0], fb[1], fb[2]}),
                    std::invalid_argument);
  BOOST_CHECK_THROW(pactor::queue<int>::attach({fa[0], fa[2], fa[1]}),
                    std::invalid_argument);
  auto again = pactor::queue<int>::attach(fa);
  a.put(5);
  BOOST_CHECK_EQUAL(again.get(1s), 5);
}

BOOST_DATA_TEST_CASE(a_child_fills_the_queue_the_parent_drains_it,
                     bdata::make(all_methods), m) {
  pactor::queue<int> q(0, {.capacity_bytes = 4096});
  auto p = make(m, put_range, q, 0, 5000);
  p.start();
  for (int i = 0; i < 5000; ++i)
    BOOST_REQUIRE_EQUAL(q.get(10s), i);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(a_sleeping_getter_in_a_child_is_woken_by_a_put,
                     bdata::make(all_methods), m) {
  pactor::queue<int> q(0, {.spin = 0ns});
  auto p = make(m, sum_gets, q, 100);
  p.start();
  for (int i = 0; i < 100; ++i)
    q.put(i);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(
  a_producer_killed_at_a_crash_point_loses_only_its_unreturned_put,
  bdata::make({101, 102, 103}) * bdata::make({1, 2, 7}), point, countdown) {
  pactor::queue<int> q(0, {.capacity_bytes = 4096});
  pactor::process p(pactor::with_fork, put_after_crash_point, q, point,
                    countdown, 100);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  // Puts 0..countdown-2 returned. The put at countdown-1 committed only if
  // the process died after the commit store.
  int expected = countdown - 1 + (point == 103 ? 1 : 0);
  BOOST_CHECK_EQUAL(q.size(), static_cast<std::size_t>(expected));
  for (int i = 0; i < expected; ++i)
    BOOST_CHECK_EQUAL(q.get(1s), i);
  // The queue is not wedged: both locks are taken over from the dead owner.
  q.put(77, 1s);
  BOOST_CHECK_EQUAL(q.get(1s), 77);
}

BOOST_DATA_TEST_CASE(
  a_consumer_killed_at_a_crash_point_leaves_its_untaken_message,
  bdata::make({111, 112, 113}) * bdata::make({1, 2, 7}), point, countdown) {
  pactor::queue<int> q(0, {.capacity_bytes = 4096});
  for (int i = 0; i < 20; ++i)
    q.put(i);
  pactor::process p(pactor::with_fork, get_after_crash_point, q, point,
                    countdown, 20);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  // Gets 0..countdown-2 returned; the get at countdown-1 took its message
  // only if the process died after the commit store.
  int next = countdown - 1 + (point == 113 ? 1 : 0);
  BOOST_CHECK_EQUAL(q.size(), static_cast<std::size_t>(20 - next));
  for (int i = next; i < 20; ++i)
    BOOST_CHECK_EQUAL(q.get(1s), i);
  q.put(77, 1s);
  BOOST_CHECK_EQUAL(q.get(1s), 77);
}

BOOST_AUTO_TEST_SUITE_END()
