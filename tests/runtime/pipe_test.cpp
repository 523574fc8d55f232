// Tests for pactor::pipe and connection.

#include <pactor/runtime/pipe.hpp>
#include <pactor/runtime/process.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor::start_method;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

void echo(pactor::connection<long> c) {
  for (;;) {
    auto v = c.recv(10s);
    c.send(v);
    if (v < 0)
      return;
  }
}

void send_three_then_block(pactor::connection<std::string> c) {
  c.send("one");
  c.send("");
  c.send("three");
  for (;;)
    ::pause();
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(pipes, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(both_ends_of_a_duplex_pipe_send_and_receive) {
  auto [a, b] = pactor::pipe<int>();
  a.send(1);
  BOOST_CHECK_EQUAL(b.recv(), 1);
  b.send(2);
  BOOST_CHECK_EQUAL(a.recv(), 2);
}

BOOST_AUTO_TEST_CASE(message_boundaries_are_kept_even_for_empty_messages) {
  auto [a, b] = pactor::pipe<std::string>();
  for (const auto& s : {std::string(), std::string("abc"), std::string(),
                        std::string(3000, 'x')})
    a.send(s);
  BOOST_CHECK_EQUAL(b.recv(), "");
  BOOST_CHECK_EQUAL(b.recv(), "abc");
  BOOST_CHECK_EQUAL(b.recv(), "");
  BOOST_CHECK_EQUAL(b.recv().size(), 3000U);
}

BOOST_AUTO_TEST_CASE(a_simplex_pipe_receives_on_the_first_end_only) {
  auto [r, w] = pactor::pipe<int>(false);
  w.send(5);
  BOOST_CHECK_EQUAL(r.recv(), 5);
  BOOST_CHECK_THROW(r.send(1), std::logic_error);
  BOOST_CHECK_THROW((void)w.recv(), std::logic_error);
}

BOOST_AUTO_TEST_CASE(poll_and_a_timed_recv_do_not_block) {
  auto [a, b] = pactor::pipe<int>(true, {.spin = 0ns});
  BOOST_CHECK(!b.poll());
  BOOST_CHECK(!b.poll(20ms));
  BOOST_CHECK_THROW((void)b.recv(20ms), pactor::timeout_error);
  a.send(3);
  BOOST_CHECK(b.poll());
  BOOST_CHECK_EQUAL(b.recv(1s), 3);
}

BOOST_AUTO_TEST_CASE(closing_one_end_gives_the_other_end_of_file) {
  auto [a, b] = pactor::pipe<int>();
  a.send(1);
  a.close();
  BOOST_CHECK(a.closed());
  BOOST_CHECK_THROW(a.send(2), std::logic_error);
  BOOST_CHECK_EQUAL(b.recv(1s), 1); // what was sent is still delivered
  BOOST_CHECK(b.poll(1s));          // true at end of file, as in Python
  BOOST_CHECK_THROW((void)b.recv(1s), pactor::eof_error);
}

BOOST_AUTO_TEST_CASE(sending_into_a_full_pipe_whose_reader_is_gone_fails) {
  auto [a, b] = pactor::pipe<std::string>(true, {.capacity_bytes = 4096});
  a.close();
  BOOST_CHECK_THROW(
    {
      for (int i = 0; i < 100; ++i)
        b.send(std::string(1000, 'x'));
    },
    pactor::broken_pipe);
}

BOOST_DATA_TEST_CASE(a_child_echoes_what_the_parent_sends,
                     bdata::make(all_methods), m) {
  auto [here, there] = pactor::pipe<long>();
  auto p = make(m, echo, there);
  p.start();
  there.close(); // the child holds it now
  for (long i = 0; i < 1000; ++i) {
    here.send(i);
    BOOST_REQUIRE_EQUAL(here.recv(10s), i);
  }
  here.send(-1);
  BOOST_CHECK_EQUAL(here.recv(10s), -1);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_DATA_TEST_CASE(a_killed_writer_gives_end_of_file_after_its_messages,
                     bdata::make(all_methods), m) {
  auto [here, there] = pactor::pipe<std::string>(true, {.spin = 0ns});
  auto p = make(m, send_three_then_block, there);
  p.start();
  there.close();
  BOOST_CHECK_EQUAL(here.recv(10s), "one");
  BOOST_CHECK_EQUAL(here.recv(10s), "");
  BOOST_CHECK_EQUAL(here.recv(10s), "three");
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_THROW((void)here.recv(10s), pactor::eof_error);
}

BOOST_AUTO_TEST_SUITE_END()
