// Tests for pactor::joinable_queue: task_done/join, across processes, and
// what join does when a consumer dies holding tasks.

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

// Takes tasks until it gets -1, marking each done.
void worker(pactor::joinable_queue<int> q) {
  for (;;) {
    int v = q.get(10s);
    q.task_done();
    if (v < 0)
      return;
  }
}

// Takes two tasks, marks one done, tells the parent, then hangs.
void take_two_finish_one(pactor::joinable_queue<int> q, int ready_fd) {
  (void)q.get(10s);
  (void)q.get(10s);
  q.task_done();
  char c = 'r';
  [[maybe_unused]] auto n = ::write(ready_fd, &c, 1);
  for (;;)
    ::pause();
}

void get_at_crash_point(pactor::joinable_queue<int> q, int point) {
  pactor::detail::crash_point_arm(point, 1);
  (void)q.get(10s);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(joinable_queue, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(join_returns_once_every_task_is_done) {
  pactor::joinable_queue<int> q;
  BOOST_CHECK(q.join(0ms)); // nothing put yet
  q.put(1);
  q.put(2);
  BOOST_CHECK(!q.join(20ms));
  BOOST_CHECK_EQUAL(q.get(), 1);
  q.task_done();
  BOOST_CHECK(!q.join(0ms)); // one left in the queue
  BOOST_CHECK_EQUAL(q.get(), 2);
  BOOST_CHECK(!q.join(0ms)); // taken, not done
  q.task_done();
  BOOST_CHECK(q.join(1s));
}

BOOST_AUTO_TEST_CASE(task_done_more_often_than_gets_is_an_error) {
  pactor::joinable_queue<int> q;
  BOOST_CHECK_THROW(q.task_done(), std::logic_error);
  q.put(1);
  (void)q.get();
  q.task_done();
  BOOST_CHECK_THROW(q.task_done(), std::logic_error);
}

BOOST_DATA_TEST_CASE(workers_in_other_processes_finish_every_task,
                     bdata::make(all_methods), m) {
  pactor::joinable_queue<int> q;
  auto a = make(m, worker, q);
  auto b = make(m, worker, q);
  a.start();
  b.start();
  for (int i = 0; i < 1000; ++i)
    q.put(i);
  BOOST_CHECK(q.join(30s));
  q.put(-1);
  q.put(-1);
  BOOST_REQUIRE(a.join(10s));
  BOOST_REQUIRE(b.join(10s));
  BOOST_CHECK(q.join(10s));
  BOOST_CHECK_EQUAL(q.lost_tasks(), 0U);
}

BOOST_DATA_TEST_CASE(a_consumer_that_dies_holding_a_task_breaks_join_once,
                     bdata::make(all_methods), m) {
  pactor::joinable_queue<int> q;
  int fds[2];
  BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  q.put(1);
  q.put(2);
  auto p = make(m, take_two_finish_one, q, fds[1]);
  p.pass_fds({fds[1]});
  p.start();
  pollfd pfd{fds[0], POLLIN, 0};
  BOOST_REQUIRE_EQUAL(::poll(&pfd, 1, 10000), 1);
  BOOST_CHECK(!q.join(20ms)); // one task is taken and not done
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  try {
    (void)q.join(10s);
    BOOST_ERROR("join did not report the lost task");
  } catch (const pactor::tasks_lost& e) {
    BOOST_CHECK_EQUAL(e.count(), 1U);
    BOOST_CHECK_EQUAL(e.pid(), p.pid());
  }
  BOOST_CHECK_EQUAL(q.lost_tasks(), 1U);
  BOOST_CHECK(q.join(1s)); // the lost task counts as done now
  ::close(fds[0]);
  ::close(fds[1]);
}

BOOST_DATA_TEST_CASE(a_get_cut_short_before_its_commit_loses_no_task,
                     bdata::make({112, 113}), point) {
  pactor::joinable_queue<int> q;
  q.put(7);
  pactor::process p(pactor::with_fork, get_at_crash_point, q, point);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  if (point == 112) {
    // Killed before the head commit: the task is still in the queue and
    // nothing was lost.
    BOOST_CHECK_EQUAL(q.get(1s), 7);
    q.task_done();
    BOOST_CHECK(q.join(1s));
    BOOST_CHECK_EQUAL(q.lost_tasks(), 0U);
  } else {
    // Killed after the head commit: the dead process had taken it.
    BOOST_CHECK(q.empty());
    BOOST_CHECK_THROW((void)q.join(10s), pactor::tasks_lost);
    BOOST_CHECK(q.join(1s));
    BOOST_CHECK_EQUAL(q.lost_tasks(), 1U);
  }
}

BOOST_AUTO_TEST_CASE(attach_refuses_a_plain_queue) {
  pactor::queue<int> plain;
  BOOST_CHECK_THROW(pactor::joinable_queue<int>::attach(plain.fds()),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
