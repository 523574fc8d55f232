// Tests for pactor::wait (multiprocessing.connection.wait): the first ready
// of queues, mailboxes, pipe ends, process sentinels and fds, woken by the
// event itself, within its timeout.

#include <pactor/runtime/wait.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <thread>
#include <unistd.h>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;
using steady = std::chrono::steady_clock;
using indices = std::vector<std::size_t>;

namespace {

// Waits on the `go` queue, then puts `value` into `q`.
void put_when_told(pactor::queue<int> go, pactor::queue<int> q, int value) {
  (void)go.get(10s);
  q.put(value);
}

void send_when_told(pactor::queue<int> go, pactor::connection<int> c) {
  (void)go.get(10s);
  c.send(5);
}

void exit_when_told(pactor::queue<int> go) {
  (void)go.get(10s);
}

void wait_long(pactor::queue<int> q) {
  (void)pactor::wait({q}, 60s);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(waits, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(ready_objects_are_returned_at_once_by_index) {
  pactor::queue<int> a;
  pactor::queue<int> b;
  pactor::queue<int> c;
  b.put(1);
  c.put(2);
  BOOST_CHECK(pactor::wait({a, b, c}, 0s) == (indices{1, 2}));
  BOOST_CHECK(pactor::wait({a, b, c}) == (indices{1, 2}));
  BOOST_CHECK(pactor::wait({a}, 0s).empty());
}

BOOST_AUTO_TEST_CASE(nothing_ready_returns_empty_after_the_timeout) {
  pactor::queue<int> a;
  auto [r, w] = pactor::pipe<int>(false);
  auto t0 = steady::now();
  BOOST_CHECK(pactor::wait({a, r}, 50ms).empty());
  auto took = steady::now() - t0;
  BOOST_CHECK(took >= 50ms);
  BOOST_CHECK(took < 5s);
}

BOOST_AUTO_TEST_CASE(a_closed_queue_is_ready) {
  pactor::queue<int> a;
  a.close();
  BOOST_CHECK(pactor::wait({a}, 1s) == (indices{0}));
}

BOOST_DATA_TEST_CASE(a_put_in_another_process_wakes_the_waiter,
                     bdata::make(all_methods), m) {
  pactor::queue<int> go;
  pactor::queue<int> a(0, {.spin = 0ns});
  pactor::queue<int> b(0, {.spin = 0ns});
  auto p = make(m, put_when_told, go, b, 9);
  p.start();
  go.put(1);
  BOOST_CHECK(pactor::wait({a, b}, 10s) == (indices{1}));
  BOOST_CHECK_EQUAL(b.get(1s), 9);
  BOOST_REQUIRE(p.join(10s));
}

BOOST_AUTO_TEST_CASE(a_mailbox_and_a_pipe_end_wake_the_waiter) {
  pactor::queue<int> go;
  pactor::mailbox<int> box;
  auto [r, w] = pactor::pipe<int>(false);
  pactor::process p(pactor::with_fork, send_when_told, go, w);
  p.start();
  w.close();
  BOOST_CHECK(pactor::wait({box, r}, 20ms).empty());
  go.put(1);
  BOOST_CHECK(pactor::wait({box, r}, 10s) == (indices{1}));
  BOOST_CHECK_EQUAL(r.recv(1s), 5);
  BOOST_REQUIRE(p.join(10s));
  // The writer is gone: the end is ready (recv reports end of file).
  BOOST_CHECK(pactor::wait({box, r}, 10s) == (indices{1}));
  BOOST_CHECK_THROW((void)r.recv(1s), pactor::eof_error);
}

BOOST_DATA_TEST_CASE(a_process_that_exits_wakes_the_waiter,
                     bdata::make(all_methods), m) {
  pactor::queue<int> go;
  pactor::queue<int> q;
  auto p = make(m, exit_when_told, go);
  p.start();
  BOOST_CHECK(pactor::wait({q, p}, 20ms).empty());
  go.put(1);
  BOOST_CHECK(pactor::wait({q, p}, 10s) == (indices{1}));
  BOOST_REQUIRE(p.join(1s));
}

BOOST_AUTO_TEST_CASE(a_raw_fd_is_waited_for) {
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);
  auto w = pactor::waitable::readable_fd(fds[0]);
  BOOST_CHECK(pactor::wait({w}, 10ms).empty());
  BOOST_REQUIRE(::write(fds[1], "x", 1) == 1);
  BOOST_CHECK(pactor::wait({w}, 1s) == (indices{0}));
  ::close(fds[0]);
  ::close(fds[1]);
}

BOOST_AUTO_TEST_CASE(two_threads_waiting_on_one_queue_are_both_woken) {
  pactor::queue<int> q(0, {.spin = 0ns});
  std::atomic<int> woken{0};
  auto waiter = [&] {
    if (pactor::wait({q}, 10s) == indices{0})
      woken.fetch_add(1);
  };
  std::thread t1(waiter);
  std::thread t2(waiter);
  // Both are asleep (or not yet waiting: then the put is seen at once).
  q.put(1);
  t1.join();
  t2.join();
  BOOST_CHECK_EQUAL(woken.load(), 2);
}

BOOST_AUTO_TEST_CASE(a_closed_fd_is_an_error_not_a_spin) {
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);
  auto w = pactor::waitable::readable_fd(fds[0]);
  ::close(fds[0]);
  ::close(fds[1]);
  BOOST_CHECK_THROW((void)pactor::wait({w}, 1s), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(padding_alone_is_not_ready) {
  // 4 KiB ring: A, B, take A; a try_put of C (too big for the room left)
  // publishes the padding up to the end alone and gives up; take B: the
  // ring now holds only that padding.
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  q.put(std::string(2000, 'a'));
  q.put(std::string(1500, 'b'));
  (void)q.get(1s);
  BOOST_CHECK(!q.try_put(std::string(2500, 'c')));
  BOOST_CHECK_EQUAL(q.get(1s).size(), 1500U);
  BOOST_CHECK(pactor::wait({q}, 0s).empty());
  q.put(std::string(2500, 'c'));
  BOOST_CHECK(pactor::wait({q}, 0s) == (indices{0}));
  BOOST_CHECK_EQUAL(q.get(1s).size(), 2500U);
}

BOOST_AUTO_TEST_CASE(a_waiter_killed_inside_wait_is_uncounted_by_the_next) {
  pactor::queue<int> q;
  pactor::process p(pactor::with_fork, wait_long, q);
  p.start();
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (q.ring().poller_count() == 0
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  BOOST_REQUIRE_EQUAL(q.ring().poller_count(), 1U);
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(q.ring().poller_count(), 1U); // left behind
  BOOST_CHECK(pactor::wait({q}, 0s).empty());
  BOOST_CHECK_EQUAL(q.ring().poller_count(), 0U); // taken back
}

BOOST_AUTO_TEST_CASE(misuse_is_reported) {
  pactor::process never_started([] {});
  BOOST_CHECK_THROW((void)pactor::wait({never_started}, 0s),
                    std::invalid_argument);
  auto [r, w] = pactor::pipe<int>(false);
  BOOST_CHECK_THROW((void)pactor::wait({w}, 0s), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
