// Tests for pactor::condition and pactor::barrier.

#include <pactor/runtime/condition.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/value.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

// Sets the flag under the mutex, then notifies.
void set_and_notify(pactor::mutex m, int cond_fd,
                    const pactor::value<int>& flag) {
  auto c = pactor::condition::attach(cond_fd, m);
  std::lock_guard g(m);
  flag.raw() = 1;
  c.notify_all();
}

int wait_at_barrier(pactor::barrier b) {
  try {
    (void)b.wait(10s);
    return 0;
  } catch (const pactor::broken_barrier&) {
    return 2;
  }
}

void arrive_once_then_hang(pactor::barrier b) {
  (void)b.wait(10s); // registers, completes round 0 with the parent
  for (;;)
    ::pause();
}

// Waits (bounded, yielding) until `n` parties wait at the barrier.
bool wait_for_waiters(const pactor::barrier& b, std::uint32_t n) {
  auto until = std::chrono::steady_clock::now() + 10s;
  while (b.n_waiting() < n) {
    if (std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::yield();
  }
  return true;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(condition_and_barrier, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(wait_needs_the_mutex_and_times_out) {
  pactor::mutex m;
  pactor::condition c(m);
  BOOST_CHECK_THROW(c.wait(1ms), std::logic_error);
  std::lock_guard g(m);
  BOOST_CHECK(!c.wait(20ms));
  BOOST_CHECK(m.handle().held_by_caller()); // re-acquired after the wait
  BOOST_CHECK(!c.wait_for([] { return false; }, 20ms));
}

BOOST_DATA_TEST_CASE(a_child_notifies_a_waiting_parent,
                     bdata::make(all_methods), m) {
  pactor::mutex mu;
  pactor::condition c(mu);
  pactor::value<int> flag(0);
  auto p = make(m, set_and_notify, mu, c.fd(), flag);
  p.pass_fds({c.fd()});
  {
    std::lock_guard g(mu);
    p.start();
    BOOST_CHECK(c.wait_for([&] { return flag.raw() == 1; }, 10s));
  }
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(a_barrier_releases_every_party_together,
                     bdata::make(all_methods), m) {
  int actions = 0;
  pactor::barrier b(3, [&] { ++actions; });
  auto p = make(m, wait_at_barrier, b);
  auto q = make(m, wait_at_barrier, b);
  p.start();
  q.start();
  // Arrive last, so that the action runs here, where it can be counted.
  BOOST_REQUIRE(wait_for_waiters(b, 2));
  auto index = b.wait(10s);
  BOOST_CHECK_EQUAL(index, 0U);
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE(q.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  BOOST_CHECK_EQUAL(q.exitcode().value(), 0);
  // The action ran once, in the process that arrived last.
  BOOST_CHECK_EQUAL(actions, 1);
  BOOST_CHECK(!b.broken());
}

BOOST_AUTO_TEST_CASE(a_timeout_breaks_the_barrier_for_everyone) {
  pactor::barrier b(2);
  BOOST_CHECK_THROW((void)b.wait(20ms), pactor::broken_barrier);
  BOOST_CHECK(b.broken());
  BOOST_CHECK_THROW((void)b.wait(1s), pactor::broken_barrier);
  b.reset();
  BOOST_CHECK(!b.broken());
}

BOOST_AUTO_TEST_CASE(abort_breaks_a_waiting_child) {
  pactor::barrier b(2);
  pactor::process p(pactor::with_fork, wait_at_barrier, b);
  p.start();
  BOOST_REQUIRE(wait_for_waiters(b, 1));
  b.abort();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 2);
}

BOOST_AUTO_TEST_CASE(reset_breaks_a_waiting_child_and_reopens_the_barrier) {
  pactor::barrier b(2);
  pactor::process p(pactor::with_fork, wait_at_barrier, b);
  p.start();
  BOOST_REQUIRE(wait_for_waiters(b, 1));
  b.reset();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 2);
  BOOST_CHECK(!b.broken());
  BOOST_CHECK_EQUAL(b.n_waiting(), 0U);
}

BOOST_AUTO_TEST_CASE(a_registered_party_that_dies_breaks_the_barrier) {
  pactor::barrier b(2);
  pactor::process p(pactor::with_fork, arrive_once_then_hang, b);
  p.start();
  (void)b.wait(10s); // round 0: both arrive; the child is now registered
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  auto t0 = std::chrono::steady_clock::now();
  try {
    (void)b.wait(10s);
    BOOST_ERROR("the barrier did not break");
  } catch (const pactor::broken_barrier& e) {
    BOOST_CHECK_MESSAGE(std::string(e.what()).find("died") != std::string::npos,
                        e.what());
  }
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 5s); // not the timeout
}

BOOST_AUTO_TEST_SUITE_END()
