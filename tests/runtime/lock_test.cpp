// Tests for pactor::mutex, recursive_mutex, value<T> and array<T>.

#include <pactor/runtime/lock.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>
#include <pactor/runtime/value.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor::start_method;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

void increment(pactor::value<long> v, int n) {
  for (int i = 0; i < n; ++i)
    v.update([](long& x) { ++x; });
}

void hold_and_block(pactor::mutex m, int ready_fd) {
  m.acquire();
  char c = 'r';
  [[maybe_unused]] auto n = ::write(ready_fd, &c, 1);
  for (;;)
    ::pause();
}

void fill_array(pactor::array<double> a) {
  for (std::size_t i = 0; i < a.size(); ++i)
    a.set(i, static_cast<double>(i) * 1.5);
}

int try_to_take(pactor::mutex m) {
  return m.try_acquire() == pactor::lock_status::timeout ? 0 : 1;
}

void wait_ready(int fd) {
  pollfd p{fd, POLLIN, 0};
  BOOST_REQUIRE_EQUAL(::poll(&p, 1, 10000), 1);
  char c;
  BOOST_REQUIRE_EQUAL(::read(fd, &c, 1), 1);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(mutex_and_value, pactor_test::no_leftovers)

BOOST_DATA_TEST_CASE(updates_from_several_processes_lose_nothing,
                     bdata::make(all_methods), m) {
  pactor::value<long> v(0);
  auto a = make(m, increment, v, 20000);
  auto b = make(m, increment, v, 20000);
  a.start();
  b.start();
  increment(v, 20000);
  BOOST_REQUIRE(a.join(30s));
  BOOST_REQUIRE(b.join(30s));
  BOOST_CHECK_EQUAL(v.load(), 60000);
}

BOOST_DATA_TEST_CASE(a_mutex_whose_holder_was_killed_is_taken_over_and_told,
                     bdata::make(all_methods), m) {
  pactor::mutex mu;
  int fds[2];
  BOOST_REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  auto p = make(m, hold_and_block, mu, fds[1]);
  p.pass_fds({fds[1]});
  p.start();
  wait_ready(fds[0]);
  BOOST_CHECK(mu.try_acquire() == pactor::lock_status::timeout);
  BOOST_CHECK(mu.acquire(20ms) == pactor::lock_status::timeout);
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK(mu.acquire(1s) == pactor::lock_status::acquired_owner_died);
  BOOST_CHECK(mu.previous_owner_died());
  mu.release();
  BOOST_CHECK(mu.acquire(1s) == pactor::lock_status::acquired);
  BOOST_CHECK(!mu.previous_owner_died());
  mu.release();
  ::close(fds[0]);
  ::close(fds[1]);
}

BOOST_AUTO_TEST_CASE(a_process_that_does_not_hold_the_mutex_cannot_release_it) {
  pactor::mutex mu;
  BOOST_CHECK_THROW(mu.release(), std::logic_error);
  mu.acquire();
  pactor::process p(pactor::with_fork, try_to_take, mu);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0); // busy for the child
  mu.release();
}

BOOST_AUTO_TEST_CASE(a_recursive_mutex_is_reentrant_for_its_holder) {
  pactor::recursive_mutex mu;
  BOOST_CHECK(mu.acquire() == pactor::lock_status::acquired);
  BOOST_CHECK(mu.try_acquire() == pactor::lock_status::acquired);
  mu.release();
  pactor::process p(pactor::with_fork, try_to_take, mu);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0); // still held once
  mu.release();
  BOOST_CHECK_THROW(mu.release(), std::logic_error);
}

BOOST_AUTO_TEST_CASE(the_mutex_works_with_std_lock_guard) {
  pactor::value<int> v(1);
  {
    std::lock_guard g(v.get_lock());
    v.raw() += 41;
  }
  BOOST_CHECK_EQUAL(v.load(), 42);
  v.store(7);
  BOOST_CHECK_EQUAL(v.update([](int& x) { return x * 2; }), 14);
}

BOOST_DATA_TEST_CASE(an_array_written_by_a_child_is_seen_by_the_parent,
                     bdata::make(all_methods), m) {
  pactor::array<double> a(10, -1.0);
  BOOST_CHECK_EQUAL(a.size(), 10U);
  auto p = make(m, fill_array, a);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  for (std::size_t i = 0; i < 10; ++i)
    BOOST_CHECK_EQUAL(a.get(i), static_cast<double>(i) * 1.5);
  BOOST_CHECK_THROW((void)a.get(10), std::out_of_range);
  BOOST_CHECK_EQUAL(a.span()[3], 4.5);
}

BOOST_AUTO_TEST_CASE(attach_rejects_a_segment_that_is_not_a_mutex) {
  pactor::queue<int> q;
  BOOST_CHECK_THROW(pactor::mutex::attach(q.fds()[0]), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
