// Tests for pactor::mailbox: many producers, one consumer at a time, which
// receives in place and acknowledges after handling, so a consumer killed
// before its ack leaves the message, marked as redelivered, for the next.

#include <pactor/runtime/mailbox.hpp>
#include <pactor/runtime/process.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <set>
#include <string>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

void put_range(pactor::mailbox<int> box, int from, int to) {
  for (int i = from; i < to; ++i)
    box.put(i);
}

// Receives, then dies at crash point `point` on the `countdown`-th message.
void consume_at_crash_point(pactor::mailbox<int> box, int point,
                            int countdown) {
  pactor::detail::crash_point_arm(point, countdown);
  for (;;) {
    (void)box.receive(10s);
    box.ack();
  }
}

// Receives one message and acks it, then holds on until told.
void receive_one_and_hold(pactor::mailbox<int> box, pactor::queue<int> done,
                          pactor::queue<int> go) {
  (void)box.receive(10s);
  box.ack();
  done.put(1);
  (void)go.get(10s);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(mailboxes, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(a_message_stays_until_it_is_acknowledged) {
  pactor::mailbox<std::string> box;
  box.put("a");
  box.put("b");
  auto l = box.receive(1s);
  BOOST_CHECK_EQUAL(l.value, "a");
  BOOST_CHECK_EQUAL(l.delivery, 1U);
  BOOST_CHECK(!l.redelivered());
  BOOST_CHECK_EQUAL(box.size(), 2U);
  box.ack();
  BOOST_CHECK_EQUAL(box.size(), 1U);
  BOOST_CHECK_EQUAL(box.receive(1s).value, "b");
  box.ack();
  BOOST_CHECK(box.empty());
}

BOOST_AUTO_TEST_CASE(receive_before_ack_and_ack_without_receive_are_errors) {
  pactor::mailbox<int> box;
  BOOST_CHECK_THROW(box.ack(), std::logic_error);
  box.put(1);
  box.put(2);
  (void)box.receive(1s);
  BOOST_CHECK_THROW((void)box.receive(1s), pactor::unacknowledged);
  box.ack();
  BOOST_CHECK_EQUAL(box.receive(1s).value, 2);
  box.ack();
}

BOOST_AUTO_TEST_CASE(an_empty_mailbox_times_out_and_a_closed_one_says_so) {
  pactor::mailbox<int> box;
  BOOST_CHECK_THROW((void)box.receive(20ms), pactor::queue_empty);
  BOOST_CHECK(!box.try_receive());
  box.put(1);
  box.close();
  BOOST_CHECK_THROW(box.put(2), pactor::queue_closed);
  BOOST_CHECK_EQUAL(box.receive(1s).value, 1);
  box.ack();
  BOOST_CHECK_THROW((void)box.receive(1s), pactor::queue_closed);
}

BOOST_AUTO_TEST_CASE(bytes_are_handed_out_in_place_with_the_delivery_count) {
  pactor::mailbox<std::string> box;
  box.put("hello");
  std::size_t size = 0;
  std::uint32_t delivery = 0;
  bool got = box.receive_bytes(
    [&](std::span<const std::byte> b, std::uint32_t d) {
      size = b.size();
      delivery = d;
    },
    1s);
  BOOST_CHECK(got);
  BOOST_CHECK_EQUAL(size, 6U); // fixstr header + 5 bytes
  BOOST_CHECK_EQUAL(delivery, 1U);
  box.ack();
  BOOST_CHECK(!box.receive_bytes([](auto, auto) {}, 10ms));
}

BOOST_AUTO_TEST_CASE(a_message_that_does_not_decode_is_consumed_with_an_error) {
  pactor::mailbox<std::string> strings;
  auto ints = pactor::mailbox<int>::attach(strings.fds());
  strings.put("not an int");
  strings.put("next");
  BOOST_CHECK_THROW((void)ints.receive(1s), pactor::decode_error);
  BOOST_CHECK_EQUAL(strings.receive(1s).value, "next");
  strings.ack();
}

BOOST_AUTO_TEST_CASE(the_ring_wraps_under_many_small_messages) {
  pactor::mailbox<std::string> box(0, {.capacity_bytes = 4096});
  int next_in = 0;
  int next_out = 0;
  auto text = [](int i) { return std::string(1 + i % 300, 'x'); };
  for (int round = 0; round < 300; ++round) {
    while (box.try_put(text(next_in)))
      ++next_in;
    for (int k = 0; k < 1 + round % 4 && !box.empty(); ++k) {
      BOOST_REQUIRE_EQUAL(box.receive(1s).value, text(next_out++));
      box.ack();
    }
  }
  while (auto l = box.try_receive()) {
    BOOST_REQUIRE_EQUAL(l->value, text(next_out++));
    box.ack();
  }
  BOOST_CHECK_EQUAL(next_in, next_out);
}

BOOST_DATA_TEST_CASE(producers_in_children_deliver_everything_in_order,
                     bdata::make(all_methods), m) {
  pactor::mailbox<int> box(0, {.capacity_bytes = 4096});
  auto a = make(m, put_range, box, 0, 2000);
  auto b = make(m, put_range, box, 10000, 12000);
  a.start();
  b.start();
  int next_a = 0;
  int next_b = 10000;
  for (int i = 0; i < 4000; ++i) {
    auto v = box.receive(10s).value;
    box.ack();
    if (v < 10000)
      BOOST_REQUIRE_EQUAL(v, next_a++);
    else
      BOOST_REQUIRE_EQUAL(v, next_b++);
  }
  BOOST_REQUIRE(a.join(10s));
  BOOST_REQUIRE(b.join(10s));
}

// 121: received, not acked: the message is redelivered. 122: acked: the
// next consumer starts after it.
BOOST_DATA_TEST_CASE(
  a_consumer_killed_before_ack_leaves_the_message_redelivered,
  bdata::make({121, 122}) * bdata::make({1, 5}), point, countdown) {
  pactor::mailbox<int> box;
  for (int i = 0; i < 10; ++i)
    box.put(i);
  pactor::process p(pactor::with_fork, consume_at_crash_point, box, point,
                    countdown);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  int next = countdown - 1 + (point == 122 ? 1 : 0);
  BOOST_REQUIRE_EQUAL(box.size(), static_cast<std::size_t>(10 - next));
  auto l = box.receive(1s);
  BOOST_CHECK_EQUAL(l.value, next);
  BOOST_CHECK_EQUAL(l.delivery, point == 121 ? 2U : 1U);
  box.ack();
  for (int i = next + 1; i < 10; ++i) {
    auto m = box.receive(1s);
    BOOST_CHECK_EQUAL(m.value, i);
    BOOST_CHECK_EQUAL(m.delivery, 1U);
    box.ack();
  }
}

BOOST_AUTO_TEST_CASE(a_message_redelivered_again_counts_every_delivery) {
  pactor::mailbox<int> box;
  box.put(7);
  for (std::uint32_t round = 1; round <= 3; ++round) {
    pactor::process p(pactor::with_fork, consume_at_crash_point, box, 121, 1);
    p.start();
    BOOST_REQUIRE(p.join(10s));
    BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  }
  auto l = box.receive(1s);
  BOOST_CHECK_EQUAL(l.value, 7);
  BOOST_CHECK_EQUAL(l.delivery, 4U);
  BOOST_CHECK(l.redelivered());
  box.ack();
}

BOOST_AUTO_TEST_CASE(a_second_live_consumer_is_refused_until_the_first_exits) {
  pactor::mailbox<int> box;
  pactor::queue<int> done;
  pactor::queue<int> go;
  box.put(1);
  box.put(2);
  pactor::process p(pactor::with_fork, receive_one_and_hold, box, done, go);
  p.start();
  (void)done.get(10s);
  BOOST_CHECK_THROW((void)box.receive(1s), std::logic_error);
  go.put(1);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(box.receive(1s).value, 2);
  box.ack();
}

BOOST_AUTO_TEST_SUITE_END()
