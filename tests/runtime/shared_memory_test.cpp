// Tests for pactor::shared_memory: create and attach by name across start
// methods, errors that name the segment, and removal by the tracker when the
// creator exits or is killed without unlinking.

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>
#include <pactor/runtime/shared_memory.hpp>

#include "hygiene.hpp"
#include "methods.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <poll.h>
#include <string>
#include <sys/inotify.h>
#include <system_error>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;
using pactor_test::all_methods;
using pactor_test::make;

namespace {

bool exists(const std::string& name) {
  return std::filesystem::exists("/dev/shm/" + name);
}

// Waits (inotify, bounded) until /dev/shm/<name> is gone.
bool wait_until_removed(const std::string& name, std::chrono::seconds limit) {
  int in = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (in < 0)
    return false;
  ::inotify_add_watch(in, "/dev/shm", IN_DELETE);
  auto deadline = std::chrono::steady_clock::now() + limit;
  bool gone = !exists(name);
  while (!gone && std::chrono::steady_clock::now() < deadline) {
    pollfd p{in, POLLIN, 0};
    ::poll(&p, 1, 100);
    char buf[4096];
    while (::read(in, buf, sizeof buf) > 0) {
    }
    gone = !exists(name);
  }
  ::close(in);
  return gone;
}

int add_in_child(const std::string& name, int amount) {
  auto m = pactor::shared_memory::attach(name);
  auto* p = reinterpret_cast<int*>(m.buf().data());
  *p += amount;
  return 0;
}

// Creates a segment, reports its name, then waits to be killed (or exits).
void create_and_report(pactor::queue<std::string> names, bool track,
                       pactor::queue<int> hold) {
  auto m = pactor::shared_memory::create(4096, {}, {.track = track});
  std::memcpy(m.buf().data(), "left", 4);
  names.put(m.name());
  (void)hold.get(10s); // the parent kills us, or lets us exit
}

// Creates `name`, tries to create it again (refused), then exits.
void create_twice_and_exit(const std::string& name) {
  auto m = pactor::shared_memory::create(64, name);
  if (m.size() != 64)
    pactor::exit(2);
  try {
    (void)pactor::shared_memory::create(64, name);
  } catch (const std::system_error&) {
    return;
  }
  pactor::exit(3);
}

// Creates `name`, then `name`_marker (tracked after it, in a fresh tracker:
// the tracker looks at its slots in that order), then waits for the go.
void create_and_wait(const std::string& name, pactor::queue<int> created,
                     pactor::queue<int> go) {
  auto m = pactor::shared_memory::create(64, name);
  auto marker = pactor::shared_memory::create(64, name + "_marker");
  if (m.size() != 64 || marker.size() != 64)
    pactor::exit(2);
  created.put(1);
  (void)go.get(10s);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(shared_memories, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(a_segment_is_created_attached_by_name_and_unlinked) {
  auto a = pactor::shared_memory::create(10000);
  BOOST_CHECK_EQUAL(a.size(), 10000U);
  BOOST_CHECK_EQUAL(a.name().rfind("pactor_", 0), 0U);
  BOOST_CHECK(exists(a.name()));
  std::memcpy(a.buf().data(), "hello", 5);
  auto b = pactor::shared_memory::attach("/" + a.name()); // slash is optional
  BOOST_CHECK_EQUAL(b.size(), 10000U);
  BOOST_CHECK_EQUAL(std::memcmp(b.buf().data(), "hello", 5), 0);
  a.unlink();
  BOOST_CHECK(!exists(a.name()));
  BOOST_CHECK_EQUAL(std::memcmp(b.buf().data(), "hello", 5), 0); // still mapped
  b.close();
  BOOST_CHECK(b.buf().empty());
  BOOST_CHECK_THROW(pactor::shared_memory::attach(a.name()), std::system_error);
}

BOOST_AUTO_TEST_CASE(errors_say_what_went_wrong) {
  auto a = pactor::shared_memory::create(64, "pactor_test_taken");
  try {
    (void)pactor::shared_memory::create(64, "pactor_test_taken");
    BOOST_ERROR("a taken name was created again");
  } catch (const std::system_error& e) {
    BOOST_CHECK(e.code() == std::errc::file_exists);
    BOOST_CHECK(std::string(e.what()).find("pactor_test_taken")
                != std::string::npos);
  }
  a.unlink();
  try {
    (void)pactor::shared_memory::attach("pactor_test_taken");
    BOOST_ERROR("a removed name was attached");
  } catch (const std::system_error& e) {
    BOOST_CHECK(e.code() == std::errc::no_such_file_or_directory);
  }
  BOOST_CHECK_THROW(a.unlink(), std::system_error);
  BOOST_CHECK_THROW(pactor::shared_memory::create(0), std::invalid_argument);
  BOOST_CHECK_THROW(pactor::shared_memory::create(8, "a/b"),
                    std::invalid_argument);
  BOOST_CHECK_THROW(pactor::shared_memory::create(8, std::string(300, 'x')),
                    std::invalid_argument);
}

BOOST_DATA_TEST_CASE(children_attach_by_name_under_every_start_method,
                     bdata::make(all_methods), m) {
  auto seg = pactor::shared_memory::create(sizeof(int));
  auto* counter = reinterpret_cast<int*>(seg.buf().data());
  *counter = 1;
  auto p = make(m, add_in_child, seg.name(), 41);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  BOOST_CHECK_EQUAL(*counter, 42);
  seg.unlink();
}

BOOST_DATA_TEST_CASE(a_creator_killed_without_unlink_leaves_nothing_behind,
                     bdata::make(all_methods), m) {
  pactor::queue<std::string> names;
  pactor::queue<int> hold;
  auto p = make(m, create_and_report, names, true, hold);
  p.start();
  auto name = names.get(10s);
  BOOST_CHECK(exists(name));
  p.kill();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK(wait_until_removed(name, 10s));
}

BOOST_AUTO_TEST_CASE(
  a_creator_that_exits_without_unlink_leaves_nothing_behind) {
  pactor::queue<std::string> names;
  pactor::queue<int> hold;
  pactor::process p(pactor::with_spawn, create_and_report, names, true, hold);
  p.start();
  auto name = names.get(10s);
  hold.put(1);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK(wait_until_removed(name, 10s));
}

BOOST_AUTO_TEST_CASE(an_untracked_segment_outlives_its_creator) {
  pactor::queue<std::string> names;
  pactor::queue<int> hold;
  pactor::process p(pactor::with_spawn, create_and_report, names, false, hold);
  p.start();
  auto name = names.get(10s);
  hold.put(1);
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK(exists(name));
  auto again = pactor::shared_memory::attach(name);
  BOOST_CHECK_EQUAL(std::memcmp(again.buf().data(), "left", 4), 0);
  again.unlink();
}

BOOST_AUTO_TEST_CASE(a_refused_second_create_keeps_the_first_one_tracked) {
  const std::string name = "pactor_test_twice";
  pactor::process p(pactor::with_fork, create_twice_and_exit, name);
  p.start();
  BOOST_REQUIRE(p.join(10s));
  BOOST_CHECK_EQUAL(p.exitcode().value(), 0);
  BOOST_CHECK(wait_until_removed(name, 10s));
}

BOOST_AUTO_TEST_CASE(a_name_unlinked_and_created_again_is_not_removed_later) {
  const std::string name = "pactor_test_recreated";
  pactor::queue<int> created;
  pactor::queue<int> go;
  pactor::process p(pactor::with_spawn, create_and_wait, name, created, go);
  p.start();
  (void)created.get(10s);
  pactor::shared_memory::attach(name).unlink();
  auto mine = pactor::shared_memory::create(64, name, {.track = false});
  go.put(1);
  BOOST_REQUIRE(p.join(10s));
  // Once the marker is gone, the child's tracker has looked at `name` too,
  // and left it: the segment now under that name is another one.
  BOOST_REQUIRE(wait_until_removed(name + "_marker", 10s));
  BOOST_CHECK(exists(name));
  mine.unlink();
}

BOOST_AUTO_TEST_SUITE_END()
