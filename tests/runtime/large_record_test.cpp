// Messages larger than the ring: they travel in side blocks (a memfd each,
// passed over the queue's socket), in order with the small ones, across
// every start method, and a process killed at the side-block crash points
// loses nothing that was put and returned.

#include <pactor/runtime/mailbox.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

// A message of `size` bytes whose content depends on `seed`.
std::string blob(std::size_t size, int seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    s[i]
      = static_cast<char>('a' + (i * 7 + static_cast<std::size_t>(seed)) % 26);
  return s;
}

const std::size_t sizes[] = {10, 5000, 4089, 70000, 10, 3 << 20, 1, 200000};

void put_blobs(pactor::queue<std::string> q) {
  int seed = 0;
  for (auto size : sizes)
    q.put(blob(size, seed++));
}

void put_at_crash_point(pactor::queue<std::string> q, int point,
                        int countdown) {
  pactor::detail::crash_point_arm(point, countdown);
  for (int i = 0; i < 10; ++i)
    q.put(blob(9000, i));
}

void get_at_crash_point(pactor::queue<std::string> q, int point,
                        int countdown) {
  pactor::detail::crash_point_arm(point, countdown);
  for (int i = 0; i < 10; ++i)
    (void)q.get(10s);
}

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] auto& e :
       std::filesystem::directory_iterator("/proc/self/fd"))
    ++n;
  return n;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(large_records, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(messages_larger_than_the_ring_arrive_whole_and_in_order) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  int seed = 0;
  for (auto size : sizes)
    q.put(blob(size, seed++));
  BOOST_CHECK_EQUAL(q.size(), std::size(sizes));
  seed = 0;
  for (auto size : sizes) {
    auto got = q.get(1s);
    BOOST_REQUIRE_EQUAL(got.size(), size);
    BOOST_REQUIRE(got == blob(size, seed++));
  }
  BOOST_CHECK(q.empty());
}

BOOST_AUTO_TEST_CASE(side_blocks_leave_no_fd_behind) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  auto before = open_fds();
  for (int i = 0; i < 200; ++i) {
    q.put(blob(6000 + static_cast<std::size_t>(i), i));
    BOOST_REQUIRE_EQUAL(q.get(1s).size(), 6000U + static_cast<std::size_t>(i));
  }
  BOOST_CHECK_EQUAL(open_fds(), before);
}

BOOST_DATA_TEST_CASE(a_child_sends_large_messages_to_the_parent,
                     bdata::make(all_methods), m) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  auto p = make(m, put_blobs, q);
  p.start();
  int seed = 0;
  for (auto size : sizes)
    BOOST_REQUIRE(q.get(10s) == blob(size, seed++));
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
}

BOOST_AUTO_TEST_CASE(a_large_message_that_does_not_decode_is_consumed) {
  pactor::queue<std::string> strings(0, {.capacity_bytes = 4096});
  auto ints = pactor::queue<int>::attach(strings.fds());
  strings.put(blob(10000, 1));
  strings.put(blob(10000, 2));
  BOOST_CHECK_THROW((void)ints.get(1s), pactor::decode_error);
  BOOST_CHECK(strings.get(1s) == blob(10000, 2));
}

BOOST_AUTO_TEST_CASE(a_mailbox_keeps_a_large_message_until_ack) {
  pactor::mailbox<std::string> box(0, {.capacity_bytes = 4096});
  box.put(blob(50000, 3));
  box.put("small");
  auto l = box.receive(1s);
  BOOST_CHECK(l.value == blob(50000, 3));
  box.ack();
  BOOST_CHECK_EQUAL(box.receive(1s).value, "small");
  box.ack();
  BOOST_CHECK(box.empty());
}

// 131: side block sent, record not committed; 102: the same, later.
// 103: committed. The orphaned block of a dead putter is dropped.
BOOST_DATA_TEST_CASE(
  a_producer_killed_while_putting_a_large_message_loses_only_that_put,
  bdata::make({131, 102, 103}) * bdata::make({1, 4}), point, countdown) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  pactor::process p(pactor::with_fork, put_at_crash_point, q, point, countdown);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  int expected = countdown - 1 + (point == 103 ? 1 : 0);
  BOOST_REQUIRE_EQUAL(q.size(), static_cast<std::size_t>(expected));
  for (int i = 0; i < expected; ++i)
    BOOST_REQUIRE(q.get(1s) == blob(9000, i));
  q.put(blob(12000, 42), 1s);
  BOOST_CHECK(q.get(1s) == blob(12000, 42));
}

// 112: read, head not advanced: the message stays. 113 and 132: taken (the
// dead getter's block may stay queued; the next getter drops it).
BOOST_DATA_TEST_CASE(
  a_consumer_killed_while_getting_a_large_message_leaves_the_rest,
  bdata::make({112, 113, 132}) * bdata::make({1, 3}), point, countdown) {
  pactor::queue<std::string> q(0, {.capacity_bytes = 4096});
  for (int i = 0; i < 10; ++i)
    q.put(blob(9000, i));
  pactor::process p(pactor::with_fork, get_at_crash_point, q, point, countdown);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_REQUIRE_EQUAL(p.exitcode().value(), -SIGKILL);
  int next = countdown - 1 + (point == 112 ? 0 : 1);
  BOOST_REQUIRE_EQUAL(q.size(), static_cast<std::size_t>(10 - next));
  for (int i = next; i < 10; ++i)
    BOOST_REQUIRE(q.get(1s) == blob(9000, i));
  q.put(blob(12000, 42), 1s);
  BOOST_CHECK(q.get(1s) == blob(12000, 42));
}

BOOST_AUTO_TEST_SUITE_END()
