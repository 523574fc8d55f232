// Tests for pactor::semaphore and pactor::event.

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/semaphore.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

int take_unit(pactor::semaphore s) {
  return s.acquire(10s) ? 0 : 1;
}

int wait_for_event(pactor::event e, pactor::event started) {
  started.set();
  return e.wait(10s) ? 0 : 1;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(semaphore_and_event, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(a_semaphore_counts_its_units) {
  pactor::semaphore s(2);
  BOOST_CHECK_EQUAL(s.value(), 2U);
  BOOST_CHECK(s.try_acquire());
  BOOST_CHECK(s.try_acquire());
  BOOST_CHECK(!s.try_acquire());
  BOOST_CHECK(!s.acquire(20ms));
  s.release(2);
  BOOST_CHECK_EQUAL(s.value(), 2U);
  s.release(); // unbounded: may exceed the initial value
  BOOST_CHECK_EQUAL(s.value(), 3U);
}

BOOST_AUTO_TEST_CASE(a_bounded_semaphore_refuses_too_many_releases) {
  pactor::semaphore s(1, true);
  BOOST_CHECK_THROW(s.release(), std::logic_error);
  s.acquire();
  s.release();
  BOOST_CHECK_EQUAL(s.value(), 1U);
}

BOOST_DATA_TEST_CASE(a_release_wakes_a_child_waiting_for_a_unit,
                     bdata::make(all_methods), m) {
  pactor::semaphore s(0);
  auto p = make(m, take_unit, s);
  p.start();
  s.release();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  BOOST_CHECK_EQUAL(s.value(), 0U);
}

BOOST_AUTO_TEST_CASE(an_event_is_a_flag_that_can_be_waited_for) {
  pactor::event e;
  BOOST_CHECK(!e.is_set());
  BOOST_CHECK(!e.wait(20ms));
  e.set();
  BOOST_CHECK(e.is_set());
  BOOST_CHECK(e.wait(0ms));
  e.clear();
  BOOST_CHECK(!e.is_set());
}

BOOST_DATA_TEST_CASE(setting_an_event_wakes_a_waiting_child,
                     bdata::make(all_methods), m) {
  pactor::event e;
  pactor::event started;
  auto p = make(m, wait_for_event, e, started);
  p.start();
  BOOST_REQUIRE(started.wait(10s));
  e.set();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_AUTO_TEST_CASE(attach_rejects_a_segment_of_another_kind) {
  pactor::event e;
  BOOST_CHECK_THROW(pactor::semaphore::attach(e.fd()), std::invalid_argument);
  pactor::semaphore s;
  BOOST_CHECK_THROW(pactor::event::attach(s.fd()), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
