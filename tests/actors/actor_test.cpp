// Tests for the actor layer: spawning class and function actors, tell and
// request, error replies, exit reasons, monitors, links, names, timers,
// become, idle timeouts, refs in messages, shutdown.

#include <pactor/actors/actors.hpp>
#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include "hygiene.hpp"
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using pactor::actor_ref;

namespace {

struct add {
  int n;
  MSGPACK_DEFINE(n)
};
struct total {
  MSGPACK_DEFINE()
};
struct boom {
  std::string what;
  MSGPACK_DEFINE(what)
};
struct busy {
  int ms;
  MSGPACK_DEFINE(ms)
};
struct die_with {
  int how; // 0: _exit(7), 1: SIGSEGV
  MSGPACK_DEFINE(how)
};
struct unknown_to_counter {
  MSGPACK_DEFINE()
};
struct started {
  std::uint32_t delivery = 0;
  MSGPACK_DEFINE(delivery)
};
// Adds n after spinning `ms` the first time it is delivered; says when it
// starts.
struct slow_add {
  int n = 0;
  int ms = 0;
  actor_ref report_to;
  MSGPACK_DEFINE(n, ms, report_to)
};
struct poison {
  MSGPACK_DEFINE()
};
// A message the counter has no handler for (a dead letter when taken).
struct filler {
  std::string s;
  MSGPACK_DEFINE(s)
};
// Says it started, then waits (at most 10 s) until `path` exists: the test
// decides when the actor goes on.
struct gate {
  std::string path;
  actor_ref report_to;
  MSGPACK_DEFINE(path, report_to)
};

class counter {
public:
  explicit counter(int start = 0) : sum_(start) {
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const add& a) { sum_ += a.n; },
      [this](const total&) { return sum_; },
      [](const boom& b) -> int { throw std::runtime_error(b.what); },
      [](const busy& b) {
        auto until
          = std::chrono::steady_clock::now() + std::chrono::milliseconds(b.ms);
        while (std::chrono::steady_clock::now() < until) {
        }
        return b.ms;
      },
      [](const die_with& d) {
        if (d.how == 0)
          ::_exit(7);
        ::raise(SIGSEGV);
      },
      [this](const slow_add& a) {
        auto d = pactor::this_actor::delivery();
        pactor::this_actor::send(a.report_to, started{d});
        auto until = std::chrono::steady_clock::now()
                     + std::chrono::milliseconds(d == 1 ? a.ms : 0);
        while (std::chrono::steady_clock::now() < until) {
        }
        sum_ += a.n;
      },
      [](const poison&) -> int {
        ::raise(SIGSEGV);
        return 0;
      },
      [](const gate& g) {
        pactor::this_actor::send(g.report_to, started{});
        auto until
          = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!std::filesystem::exists(g.path)
               && std::chrono::steady_clock::now() < until)
          std::this_thread::yield();
      },
    };
  }

private:
  int sum_;
};

// A function actor: echoes strings, upper-cased.
pactor::behavior shouter() {
  return pactor::behavior{[](const std::string& s) {
    std::string out = s;
    for (auto& ch : out)
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return out;
  }};
}

struct forward_add {
  actor_ref to;
  int n;
  MSGPACK_DEFINE(to, n)
};
struct ask_total {
  actor_ref of;
  MSGPACK_DEFINE(of)
};

// Talks to other actors through refs it receives in messages.
pactor::behavior relay() {
  return pactor::behavior{
    [](const forward_add& f) { pactor::this_actor::send(f.to, add{f.n}); },
    [](const ask_total& a) {
      return pactor::this_actor::request<int>(a.of, total{}, 5s);
    },
  };
}

struct link_to {
  actor_ref other;
  bool trap;
  MSGPACK_DEFINE(other, trap)
};
struct exits_seen {
  MSGPACK_DEFINE()
};

class watcher {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [](const link_to& l) {
        pactor::this_actor::trap_exit(l.trap);
        pactor::this_actor::link(l.other);
      },
      [this](const pactor::exit_msg& e) {
        seen_.push_back(e.reason.to_string());
      },
      [this](const exits_seen&) { return seen_; },
    };
  }

private:
  std::vector<std::string> seen_;
};

struct start_ticking {
  int ms;
  MSGPACK_DEFINE(ms)
};
struct tick {
  MSGPACK_DEFINE()
};
struct ticks {
  MSGPACK_DEFINE()
};

class ticker {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [](const start_ticking& s) {
        pactor::this_actor::send_after(pactor::this_actor::self(),
                                       std::chrono::milliseconds(s.ms), tick{});
      },
      [this](const tick&) { ++ticks_; },
      [this](const ticks&) { return ticks_; },
    };
  }

private:
  int ticks_ = 0;
};

struct flip {
  MSGPACK_DEFINE()
};
struct which {
  MSGPACK_DEFINE()
};

pactor::behavior second_mood() {
  return pactor::behavior{[](const which&) { return std::string("second"); }};
}

pactor::behavior first_mood() {
  return pactor::behavior{
    [](const flip&) { pactor::this_actor::become(second_mood()); },
    [](const which&) { return std::string("first"); },
  };
}

class idle_counter {
public:
  void on_start() {
    pactor::this_actor::set_idle_timeout(30ms);
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const pactor::this_actor::idle&) { ++idles_; },
      [this](const total&) { return idles_; },
    };
  }

private:
  int idles_ = 0;
};

// Same tag, different shapes: a message that does not decode as the other.
struct int_box {
  static constexpr std::string_view pactor_type_name = "test.box";
  int v = 0;
  MSGPACK_DEFINE(v)
};
struct text_box {
  static constexpr std::string_view pactor_type_name = "test.box";
  std::string a;
  std::string b;
  MSGPACK_DEFINE(a, b)
};

struct spam {
  actor_ref to;
  int left = 0;
  MSGPACK_DEFINE(to, left)
};

// Sends `add{1}` to spam.to every 20 ms, `left` times.
pactor::behavior spammer() {
  return pactor::behavior{[](const spam& s) {
    pactor::this_actor::send(s.to, add{1});
    if (s.left > 0)
      pactor::this_actor::send_after(pactor::this_actor::self(), 20ms,
                                     spam{s.to, s.left - 1});
  }};
}

// By value: a function actor's parameters are what travels.
pactor::behavior
relay_with(std::string) { // NOLINT(performance-unnecessary-value-param)
  return relay();
}

pactor::behavior idler(int ms) {
  pactor::this_actor::set_idle_timeout(std::chrono::milliseconds(ms));
  return pactor::behavior{[](const total&) { return 0; }};
}

struct ask_async {
  actor_ref of;
  int timeout_ms;
  MSGPACK_DEFINE(of, timeout_ms)
};
struct report {
  MSGPACK_DEFINE()
};

// Asks without blocking; keeps what came back.
class async_asker {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const ask_async& a) {
        pactor::this_actor::request_async<int>(
          a.of, total{}, std::chrono::milliseconds(a.timeout_ms),
          [this](int v) { last_ = v; },
          [this](const std::exception_ptr& e) {
            try {
              std::rethrow_exception(e);
            } catch (const pactor::timeout_error&) {
              ++timeouts_;
            } catch (...) {
              ++other_errors_;
            }
          });
      },
      [this](const report&) {
        return std::vector<int>{last_, timeouts_, other_errors_};
      },
    };
  }

private:
  int last_ = -1;
  int timeouts_ = 0;
  int other_errors_ = 0;
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(actors, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(a_class_actor_handles_tells_in_order_and_replies) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>(10);
  for (int i = 1; i <= 100; ++i)
    sys.send(c, add{i});
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 10 + 5050);
  BOOST_CHECK(c);
  BOOST_CHECK(c != sys.self());
  BOOST_CHECK_EQUAL(c.to_string().rfind("<actor #", 0), 0U);
}

BOOST_AUTO_TEST_CASE(a_function_actor_replies) {
  pactor::actor_system sys;
  auto s = sys.spawn(shouter);
  BOOST_CHECK_EQUAL(sys.request<std::string>(s, std::string("hey"), 5s), "HEY");
}

BOOST_AUTO_TEST_CASE(
  a_handler_that_throws_is_an_error_reply_and_the_actor_goes_on) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  try {
    (void)sys.request<int>(c, boom{"no such thing"}, 5s);
    BOOST_ERROR("no error reply");
  } catch (const pactor::remote_error& e) {
    BOOST_CHECK_EQUAL(e.type(), "std::runtime_error");
    BOOST_CHECK_EQUAL(e.message(), "no such thing");
  }
  sys.send(c, add{3});
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 3);
}

BOOST_AUTO_TEST_CASE(
  an_unknown_message_type_is_an_error_reply_and_a_dead_letter) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  BOOST_CHECK_THROW((void)sys.request<int>(c, unknown_to_counter{}, 5s),
                    pactor::remote_error);
  sys.send(c, unknown_to_counter{});
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 0); // still serving
  BOOST_CHECK_EQUAL(sys.dead_letters(), 2U);
}

BOOST_AUTO_TEST_CASE(a_timed_out_request_throws_and_its_late_reply_is_dropped) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  BOOST_CHECK_THROW((void)sys.request<int>(c, busy{300}, 20ms),
                    pactor::timeout_error);
  // The late reply (300) arrives first; this request gets its own.
  BOOST_CHECK_EQUAL(sys.request<int>(c, busy{1}, 5s), 1);
}

BOOST_AUTO_TEST_CASE(exit_reasons_say_who_and_why) {
  pactor::actor_system sys;
  auto a = sys.spawn<counter>();
  sys.send(a, boom{"bad input"});
  auto ra = sys.join(a, 10s);
  BOOST_REQUIRE(ra);
  BOOST_CHECK(ra->kind == pactor::exit_kind::exception);
  BOOST_CHECK_EQUAL(ra->type, "std::runtime_error");
  BOOST_CHECK_EQUAL(ra->message, "bad input");
  BOOST_CHECK_EQUAL(ra->incarnation, 1U);

  auto b = sys.spawn<counter>();
  sys.send(b, die_with{0});
  auto rb = sys.join(b, 10s);
  BOOST_REQUIRE(rb);
  BOOST_CHECK(rb->kind == pactor::exit_kind::exit_code);
  BOOST_CHECK_EQUAL(rb->code, 7);

  auto c = sys.spawn<counter>();
  sys.send(c, die_with{1});
  auto rc = sys.join(c, 10s);
  BOOST_REQUIRE(rc);
  BOOST_CHECK(rc->kind == pactor::exit_kind::signal);
  BOOST_CHECK_EQUAL(rc->code, SIGSEGV);

  auto d = sys.spawn<counter>();
  sys.kill(d);
  auto rd = sys.join(d, 10s);
  BOOST_REQUIRE(rd);
  BOOST_CHECK(rd->kind == pactor::exit_kind::killed);

  auto e = sys.spawn<counter>();
  sys.stop(e);
  auto re = sys.join(e, 10s);
  BOOST_REQUIRE(re);
  BOOST_CHECK(re->kind == pactor::exit_kind::shutdown);
  // Joining an actor that has already ended answers at once.
  auto again = sys.join(e, 1s);
  BOOST_REQUIRE(again);
  BOOST_CHECK(again->kind == pactor::exit_kind::shutdown);
}

BOOST_AUTO_TEST_CASE(sending_to_an_actor_that_exited_is_an_error) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  sys.kill(c);
  BOOST_REQUIRE(sys.join(c, 10s));
  BOOST_CHECK_THROW(sys.send(c, add{1}), pactor::actor_exited);
  BOOST_CHECK_THROW(sys.send(actor_ref(9999), add{1}), std::invalid_argument);
  BOOST_CHECK_THROW(sys.send(actor_ref(), add{1}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(refs_travel_in_messages_and_actors_talk_directly) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  auto r = sys.spawn(relay);
  for (int i = 0; i < 10; ++i)
    sys.send(r, forward_add{c, 2});
  // The relay asks the counter itself (a request from inside a handler).
  BOOST_CHECK_EQUAL(sys.request<int>(r, ask_total{c}, 5s), 20);
}

BOOST_AUTO_TEST_CASE(a_linked_actor_dies_too_unless_it_traps_exits) {
  pactor::actor_system sys;
  auto victim = sys.spawn<counter>();
  auto w = sys.spawn<watcher>();
  sys.send(w, link_to{victim, false});
  BOOST_CHECK(
    sys.request<std::vector<std::string>>(w, exits_seen{}, 5s).empty());
  sys.kill(victim);
  auto rw = sys.join(w, 10s);
  BOOST_REQUIRE(rw);
  BOOST_CHECK(rw->kind == pactor::exit_kind::linked);
  BOOST_CHECK_EQUAL(rw->other, victim.id());

  auto victim2 = sys.spawn<counter>();
  auto trapper = sys.spawn<watcher>();
  sys.send(trapper, link_to{victim2, true});
  (void)sys.request<std::vector<std::string>>(trapper, exits_seen{}, 5s);
  sys.send(victim2, boom{"gone"});
  BOOST_REQUIRE(sys.join(victim2, 10s));
  std::vector<std::string> seen;
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (seen.empty() && std::chrono::steady_clock::now() < deadline)
    seen = sys.request<std::vector<std::string>>(trapper, exits_seen{}, 5s);
  BOOST_REQUIRE_EQUAL(seen.size(), 1U);
  BOOST_CHECK_EQUAL(seen[0], "exception std::runtime_error: gone");
}

BOOST_AUTO_TEST_CASE(names_are_registered_found_and_freed_on_death) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  sys.register_name("counter", c);
  BOOST_CHECK(sys.whereis("counter") == c);
  auto other = sys.spawn<counter>();
  BOOST_CHECK_THROW(sys.register_name("counter", other), std::invalid_argument);
  sys.kill(c);
  BOOST_REQUIRE(sys.join(c, 10s));
  BOOST_CHECK(!sys.whereis("counter"));
  sys.register_name("counter", other);
  BOOST_CHECK(sys.whereis("counter") == other);
  sys.unregister("counter");
  BOOST_CHECK(!sys.whereis("counter"));
}

BOOST_AUTO_TEST_CASE(send_after_delivers_a_message_later) {
  pactor::actor_system sys;
  auto t = sys.spawn<ticker>();
  sys.send(t, start_ticking{30});
  auto t0 = std::chrono::steady_clock::now();
  int n = 0;
  while (n == 0 && std::chrono::steady_clock::now() - t0 < 10s)
    n = sys.request<int>(t, ticks{}, 5s);
  BOOST_CHECK_EQUAL(n, 1);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 >= 25ms);
}

BOOST_AUTO_TEST_CASE(become_replaces_the_behaviour_from_the_next_message) {
  pactor::actor_system sys;
  auto a = sys.spawn(first_mood);
  BOOST_CHECK_EQUAL(sys.request<std::string>(a, which{}, 5s), "first");
  sys.send(a, flip{});
  BOOST_CHECK_EQUAL(sys.request<std::string>(a, which{}, 5s), "second");
}

BOOST_AUTO_TEST_CASE(an_idle_actor_without_an_idle_handler_stops_normally) {
  pactor::actor_system sys;
  auto a = sys.spawn(idler, 50);
  auto r = sys.join(a, 10s);
  BOOST_REQUIRE(r);
  BOOST_CHECK(r->kind == pactor::exit_kind::normal);
}

BOOST_AUTO_TEST_CASE(an_idle_handler_runs_and_the_actor_goes_on) {
  pactor::actor_system sys;
  auto a = sys.spawn<idle_counter>();
  // join's bounded wait: the actor must still be running after it.
  BOOST_CHECK(!sys.join(a, 200ms));
  BOOST_CHECK_GE(sys.request<int>(a, total{}, 5s), 1);
}

BOOST_AUTO_TEST_CASE(fd_backed_objects_in_messages_are_refused) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  pactor::queue<int> q;
  BOOST_CHECK_THROW(sys.send(c, q), std::invalid_argument);
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 0);
}

BOOST_AUTO_TEST_CASE(a_receive_times_out_while_other_messages_keep_coming) {
  pactor::actor_system sys;
  auto s = sys.spawn(spammer);
  sys.send(s, spam{sys.self(), 100}); // two seconds of add{1} to us
  auto t0 = std::chrono::steady_clock::now();
  BOOST_CHECK(!sys.receive<total>(200ms));
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
}

BOOST_AUTO_TEST_CASE(a_message_that_does_not_decode_does_not_block_receive) {
  pactor::actor_system sys;
  sys.send(sys.self(), text_box{"not", "an int"});
  BOOST_CHECK_THROW((void)sys.receive<int_box>(1s), pactor::decode_error);
  sys.send(sys.self(), int_box{5});
  auto got = sys.receive<int_box>(1s);
  BOOST_REQUIRE(got);
  BOOST_CHECK_EQUAL(got->v, 5);
}

BOOST_AUTO_TEST_CASE(many_and_large_dead_letters_all_come_back) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  for (int i = 0; i < 1500; ++i)
    sys.send(c, unknown_to_counter{});
  sys.send(c, std::string(100000, 'x')); // no handler, and large
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 10s), 0);
  auto letters = sys.take_dead_letters();
  BOOST_CHECK_EQUAL(letters.size(), 1501U);
  BOOST_CHECK_LE(letters.back().payload.size(), 4096U); // a prefix is kept
  BOOST_CHECK(sys.take_dead_letters().empty());
}

BOOST_AUTO_TEST_CASE(spawn_arguments_over_the_node_limit_are_a_length_error) {
  pactor::actor_system sys;
  BOOST_CHECK_THROW(sys.spawn(relay_with, std::string(300000, 'x')),
                    std::length_error);
  BOOST_CHECK_EQUAL(sys.live_actors(), 0U); // and the node is fine
}

BOOST_AUTO_TEST_CASE(shutdown_stops_every_actor_and_the_node) {
  pactor::actor_system sys;
  std::vector<actor_ref> refs;
  refs.reserve(5);
  for (int i = 0; i < 5; ++i)
    refs.push_back(sys.spawn<counter>(i));
  BOOST_CHECK_EQUAL(sys.live_actors(), 5U);
  BOOST_CHECK(sys.shutdown());
  // The fixture checks that no process is left.
}

BOOST_AUTO_TEST_CASE(
  an_actor_killed_inside_a_handler_and_restarted_loses_nothing) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>(0);
  sys.send(c, slow_add{100, 20000, sys.self()});
  for (int i = 1; i <= 10; ++i)
    sys.send(c, add{i});
  auto first = sys.receive<started>(10s);
  BOOST_REQUIRE(first);
  BOOST_CHECK_EQUAL(first->delivery, 1U);
  sys.kill(c); // -9 in the middle of the handler
  auto why = sys.join(c, 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::killed);
  BOOST_CHECK_THROW(sys.send(c, add{1000}), pactor::actor_exited);
  sys.restart(c);
  auto again = sys.receive<started>(10s);
  BOOST_REQUIRE(again);
  BOOST_CHECK_EQUAL(again->delivery, 2U); // the same message, redelivered
  // The new incarnation started cold (0); it got the in-flight message and
  // every queued one.
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 10s), 100 + 55);
  BOOST_CHECK_THROW(sys.restart(c), std::invalid_argument); // running
}

BOOST_AUTO_TEST_CASE(
  ended_actors_past_keep_exited_are_reclaimed_and_their_refs_stay_ended) {
  pactor::actor_system sys({.keep_exited = 2});
  // The first one dies holding a message in its handler and two queued.
  auto first = sys.spawn<counter>(0);
  sys.send(first, slow_add{1, 20000, sys.self()});
  sys.send(first, add{2});
  sys.send(first, add{3});
  BOOST_REQUIRE(sys.receive<started>(10s));
  sys.kill(first);
  BOOST_REQUIRE(sys.join(first, 10s));
  BOOST_CHECK(sys.take_dead_letters().empty()); // kept for a restart
  std::vector<actor_ref> later;
  for (int i = 0; i < 3; ++i) {
    later.push_back(sys.spawn<counter>(0));
    BOOST_CHECK_EQUAL(sys.request<int>(later.back(), total{}, 10s), 0);
    sys.stop(later.back());
    BOOST_REQUIRE(sys.join(later.back(), 10s));
  }
  // Four ended, two kept: `first` and later[0] were reclaimed. What was
  // left in first's mailbox is in the dead letters, none lost.
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 3U);
  for (const auto& l : letters) {
    BOOST_CHECK(l.to == first);
    BOOST_CHECK(l.from == sys.self());
    BOOST_CHECK(l.why.find("reclaimed") != std::string::npos);
  }
  BOOST_CHECK_EQUAL(letters[0].delivery, 1U); // it was being handled
  BOOST_CHECK_EQUAL(letters[1].delivery, 0U);
  BOOST_CHECK_EQUAL(pactor::decode_payload<add>(letters[2].payload).n,
                    3); // in order
  // Its ref is an ended actor's: every use says so, with its exit reason.
  try {
    sys.send(first, add{1});
    BOOST_ERROR("a send to a reclaimed actor went through");
  } catch (const pactor::actor_exited& e) {
    BOOST_CHECK(std::string(e.what()).find("killed") != std::string::npos);
  }
  auto why = sys.join(first, 1s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::killed);
  sys.monitor(later[0]);
  auto d = sys.receive<pactor::down>(10s);
  BOOST_REQUIRE(d);
  BOOST_CHECK(d->who == later[0]);
  BOOST_CHECK(d->reason.kind == pactor::exit_kind::shutdown);
  try {
    sys.restart(first);
    BOOST_ERROR("a reclaimed actor restarted");
  } catch (const std::invalid_argument& e) {
    BOOST_CHECK(std::string(e.what()).find("reclaimed") != std::string::npos);
  }
  BOOST_CHECK_THROW((void)sys.request<int>(later[0], total{}, 10s),
                    pactor::actor_exited);
  // The newest two can still be restarted, on their mailboxes.
  sys.restart(later[2]);
  BOOST_CHECK_EQUAL(sys.request<int>(later[2], total{}, 10s), 0);
  sys.restart(later[1]);
  BOOST_CHECK_EQUAL(sys.request<int>(later[1], total{}, 10s), 0);
}

// A gate file that exists once open() is called; removed at the end.
struct gate_file {
  std::string path = "/tmp/pactor-gate-" + std::to_string(::getpid()) + "-"
                     + std::to_string(++count);
  void open() const {
    std::ofstream(path).put('x');
  }
  ~gate_file() {
    std::filesystem::remove(path);
  }
  static inline int count = 0;
};

BOOST_AUTO_TEST_CASE(drop_oldest_keeps_the_newest_waiting_messages) {
  pactor::actor_system sys;
  pactor::spawn_options opts;
  opts.on_full = pactor::overflow::drop_oldest;
  opts.mailbox_messages = 3;
  auto c = sys.spawn_with<counter>(opts, 0);
  gate_file g;
  sys.send(c, gate{g.path, sys.self()});
  BOOST_REQUIRE(sys.receive<started>(10s)); // busy until the gate opens
  for (int i = 1; i <= 10; ++i)
    sys.send(c, add{i});                   // never waits
  sys.send(c, slow_add{0, 0, sys.self()}); // the eleventh
  g.open();
  // add 1..8 were the oldest of more than 3 waiting: dropped; 9, 10 and
  // the eleventh handled.
  BOOST_REQUIRE(sys.receive<started>(10s));
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 10s), 9 + 10);
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 8U);
  for (int i = 0; i < 8; ++i) {
    BOOST_CHECK(letters[static_cast<std::size_t>(i)].to == c);
    BOOST_CHECK(letters[static_cast<std::size_t>(i)].why.find("drop_oldest")
                != std::string::npos);
    BOOST_CHECK_EQUAL(
      pactor::decode_payload<add>(letters[static_cast<std::size_t>(i)].payload)
        .n,
      i + 1);
  }
}

BOOST_AUTO_TEST_CASE(drop_oldest_never_makes_a_sender_wait) {
  pactor::actor_system sys;
  pactor::spawn_options opts;
  opts.on_full = pactor::overflow::drop_oldest;
  opts.mailbox_messages = 1000;
  opts.mailbox_bytes = 4096; // room for three of the messages below
  auto c = sys.spawn_with<counter>(opts, 0);
  gate_file g;
  sys.send(c, gate{g.path, sys.self()});
  BOOST_REQUIRE(sys.receive<started>(10s));
  for (int i = 0; i < 20; ++i) // the bytes run out: these are dropped
    BOOST_CHECK_NO_THROW(sys.send(c, filler{std::string(1000, 'x')}));
  g.open();
  auto letters = sys.take_dead_letters();
  std::size_t dropped = 0;
  for (const auto& l : letters)
    dropped += l.why.find("bytes were full") != std::string::npos ? 1 : 0;
  BOOST_CHECK_GE(dropped, 16U);
  pactor::spawn_options unset;
  unset.on_full = pactor::overflow::drop_oldest;
  BOOST_CHECK_THROW(sys.spawn_with<counter>(unset, 0), std::invalid_argument);
}

// The children of `parent` named `comm` (from /proc).
std::vector<pid_t> children_named(pid_t parent, const std::string& comm) {
  std::vector<pid_t> found;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream stat(e.path() / "stat");
    std::string pid, name, state;
    long ppid = 0;
    if ((stat >> pid >> name >> state >> ppid) && ppid == parent
        && name == "(" + comm + ")")
      found.push_back(static_cast<pid_t>(std::stol(pid)));
  }
  return found;
}

BOOST_AUTO_TEST_CASE(the_zygote_forks_actors_that_are_the_nodes_children) {
  pactor::actor_system sys;
  auto nodes = children_named(::getpid(), "pactor-node");
  BOOST_REQUIRE_EQUAL(nodes.size(), 1U);
  auto zygotes = children_named(nodes[0], "pactor-zygote");
  BOOST_REQUIRE_EQUAL(zygotes.size(), 1U);
  auto a = sys.spawn_with<counter>({.name = "zygote-child"}, 5);
  BOOST_CHECK_EQUAL(sys.request<int>(a, total{}, 10s), 5);
  // Reparented to the node: the node reaps it and sees how it ended.
  auto mine = children_named(nodes[0], "zygote-child");
  BOOST_REQUIRE_EQUAL(mine.size(), 1U);
  BOOST_CHECK_EQUAL(mine[0], sys.pid(a));
  sys.send(a, die_with{0}); // _exit(7)
  auto why = sys.join(a, 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::exit_code);
  BOOST_CHECK_EQUAL(why->code, 7);
  // Without the zygote (killed), the node forks actors itself.
  ::kill(zygotes[0], SIGKILL);
  auto b = sys.spawn<counter>(6);
  BOOST_CHECK_EQUAL(sys.request<int>(b, total{}, 10s), 6);
  auto c = sys.spawn<counter>(7);
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 10s), 7);
  BOOST_CHECK(children_named(nodes[0], "pactor-zygote").empty()); // reaped
}

struct arm {
  actor_ref report_to;
  MSGPACK_DEFINE(report_to)
};
struct tick {
  MSGPACK_DEFINE()
};
struct tock {
  actor_ref report_to;
  MSGPACK_DEFINE(report_to)
};
struct timer_report {
  int ticks = 0;
  bool first_cancel = false;
  bool second_cancel = false;
  bool fired_cancel = true;
  MSGPACK_DEFINE(ticks, first_cancel, second_cancel, fired_cancel)
};

// On arm: a tick in 1 ms, cancelled at once, and a tock in 5 ms. Timers
// fire in time order, so when the tock comes the tick would have come
// first had it not been cancelled.
pactor::behavior cancelling_actor() {
  auto r = std::make_shared<timer_report>();
  auto fired = std::make_shared<pactor::this_actor::timer_id>();
  return pactor::behavior{
    [r, fired](const arm& a) {
      using namespace pactor::this_actor;
      auto t = send_after(self(), 1ms, tick{});
      r->first_cancel = cancel_timer(t);
      r->second_cancel = cancel_timer(t);
      *fired = send_after(self(), 0ms, tick{});
      send_after(self(), 5ms, tock{a.report_to});
    },
    [r](const tick&) { ++r->ticks; },
    [r, fired](const tock& t) {
      r->fired_cancel = pactor::this_actor::cancel_timer(*fired);
      pactor::this_actor::send(t.report_to, *r);
    },
  };
}

BOOST_AUTO_TEST_CASE(a_cancelled_timer_never_fires) {
  pactor::actor_system sys;
  auto a = sys.spawn(cancelling_actor);
  sys.send(a, arm{sys.self()});
  auto r = sys.receive<timer_report>(10s);
  BOOST_REQUIRE(r);
  BOOST_CHECK_EQUAL(r->ticks, 1); // the uncancelled one only
  BOOST_CHECK(r->first_cancel);
  BOOST_CHECK(!r->second_cancel);
  BOOST_CHECK(!r->fired_cancel); // it had fired
}

struct watch {
  actor_ref target;
  actor_ref report_to;
  MSGPACK_DEFINE(target, report_to)
};
struct saw_down {
  actor_ref who;
  MSGPACK_DEFINE(who)
};

// Monitors what it is told to watch; reports each down it gets.
pactor::behavior witness() {
  auto report_to = std::make_shared<actor_ref>();
  return pactor::behavior{
    [report_to](const watch& w) {
      *report_to = w.report_to;
      pactor::this_actor::monitor(w.target);
      return 0;
    },
    [report_to](const pactor::down& d) {
      pactor::this_actor::send(*report_to, saw_down{d.who});
    },
  };
}

BOOST_AUTO_TEST_CASE(after_demonitor_no_down_comes) {
  pactor::actor_system sys;
  auto a = sys.spawn<counter>(0);
  auto b = sys.spawn<counter>(0);
  auto w = sys.spawn(witness);
  BOOST_REQUIRE_EQUAL(sys.request<int>(w, watch{a, sys.self()}, 10s), 0);
  sys.monitor(a);
  sys.monitor(b);
  sys.demonitor(a);
  sys.kill(a);
  // The witness's down and ours (had the monitor stayed) are sent in the
  // same step of the node: once the witness reports, ours would be here.
  auto seen = sys.receive<saw_down>(10s);
  BOOST_REQUIRE(seen);
  BOOST_CHECK(seen->who == a);
  sys.kill(b);
  auto d = sys.receive<pactor::down>(10s);
  BOOST_REQUIRE(d);
  BOOST_CHECK(d->who == b); // not a
}

struct take {
  actor_ref report_to; // told when the request is deferred
  MSGPACK_DEFINE(report_to)
};
struct put_item {
  int n = 0;
  MSGPACK_DEFINE(n)
};
struct refuse_next {
  MSGPACK_DEFINE()
};
struct answer_for {
  pactor::reply_promise<int> p;
  int n = 0;
  MSGPACK_DEFINE(p, n)
};

// Answers take with an item; with none, keeps a promise that the next
// put_item answers (or, after refuse_next, hands to `helper`, which answers
// with the item + 1000, or answers with an error if helper is nobody).
class slot_actor {
public:
  explicit slot_actor(actor_ref helper) : helper_(helper) {
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const take& t) -> pactor::reply_promise<int> {
        auto p = pactor::this_actor::promise<int>();
        if (!items_.empty()) {
          p.deliver(items_.back());
          items_.pop_back();
        } else {
          waiting_.push_back(p);
          pactor::this_actor::send(t.report_to, started{});
        }
        return p;
      },
      [this](const put_item& i) {
        if (waiting_.empty()) {
          items_.push_back(i.n);
          return;
        }
        auto p = waiting_.front();
        waiting_.erase(waiting_.begin());
        if (!refuse_)
          p.deliver(i.n);
        else if (helper_)
          pactor::this_actor::send(helper_, answer_for{p, i.n});
        else
          p.deliver_error("slot::refused", "refused " + std::to_string(i.n));
      },
      [this](const refuse_next&) { refuse_ = true; },
      [](const total&) -> int { // a request: promise() works here
        return pactor::this_actor::promise<int>().pending() ? 0 : -1;
      },
      [](const add&) { // a tell: no promise
        try {
          (void)pactor::this_actor::promise<int>();
        } catch (const std::logic_error&) {
          return;
        }
        throw std::runtime_error("promise() in a tell");
      },
    };
  }

private:
  actor_ref helper_;
  std::vector<int> items_;
  std::vector<pactor::reply_promise<int>> waiting_;
  bool refuse_ = false;
};

pactor::behavior promise_helper() {
  return pactor::behavior{
    [](answer_for a) { a.p.deliver(a.n + 1000); },
  };
}

BOOST_AUTO_TEST_CASE(a_request_answered_later_through_a_promise) {
  pactor::actor_system sys;
  auto helper = sys.spawn(promise_helper);
  auto a = sys.spawn<slot_actor>(helper);
  auto b = sys.spawn<slot_actor>(actor_ref{});
  auto later = [&](actor_ref to, auto&& before_put, int n) {
    std::optional<int> got;
    std::string error;
    std::thread asker([&] {
      try {
        got = sys.request<int>(to, take{sys.self()}, 10s);
      } catch (const pactor::remote_error& e) {
        error = e.type();
      }
    });
    bool deferred = sys.receive<started>(10s).has_value();
    before_put();
    sys.send(to, put_item{n});
    asker.join();
    BOOST_CHECK(deferred);
    return std::make_pair(got, error);
  };
  // Deferred, then answered by the next put_item's handler.
  auto r1 = later(
    a, [] {}, 42);
  BOOST_CHECK(r1.first == std::optional<int>(42));
  // Handed to another actor (a promise travels in a message), which answers.
  auto r2 = later(
    a, [&] { sys.send(a, refuse_next{}); }, 5);
  BOOST_CHECK(r2.first == std::optional<int>(1005));
  // Answered with an error.
  auto r3 = later(
    b, [&] { sys.send(b, refuse_next{}); }, 7);
  BOOST_CHECK(!r3.first);
  BOOST_CHECK_EQUAL(r3.second, "slot::refused");
  // An item already there: answered at once through the promise.
  sys.send(a, put_item{9});
  BOOST_CHECK_EQUAL(sys.request<int>(a, take{sys.self()}, 10s), 9);
  // A request handler may make a promise; a tell's handler may not.
  BOOST_CHECK_EQUAL(sys.request<int>(a, total{}, 10s), 0);
  sys.send(a, add{1});
  BOOST_CHECK_EQUAL(sys.request<int>(a, total{}, 10s), 0); // still running
}

BOOST_AUTO_TEST_CASE(
  the_program_talks_to_more_actors_than_a_low_fd_limit_allows) {
  rlimit saved{};
  BOOST_REQUIRE_EQUAL(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 2048) {
    BOOST_TEST_MESSAGE("hard fd limit " << saved.rlim_max << ": skipped");
    return;
  }
  rlimit low = saved;
  low.rlim_cur = 256; // 100 actors' rings need 600 fds here
  BOOST_REQUIRE_EQUAL(::setrlimit(RLIMIT_NOFILE, &low), 0);
  {
    pactor::actor_system sys; // raises the soft limit to the hard one
    std::vector<actor_ref> refs;
    for (int i = 0; i < 100; ++i)
      refs.push_back(sys.spawn<counter>(i));
    for (int i = 0; i < 100; ++i)
      BOOST_REQUIRE_EQUAL(
        sys.request<int>(refs[static_cast<std::size_t>(i)], total{}, 10s), i);
  }
  BOOST_CHECK_EQUAL(::setrlimit(RLIMIT_NOFILE, &saved), 0);
}

BOOST_AUTO_TEST_CASE(many_short_lived_actors_do_not_grow_the_node) {
  pactor::actor_system sys({.keep_exited = 4});
  auto node_fds = [&] {
    auto nodes = children_named(::getpid(), "pactor-node");
    BOOST_REQUIRE_EQUAL(nodes.size(), 1U);
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& f : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(nodes[0]) + "/fd"))
      ++n;
    return n;
  };
  auto churn = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto a = sys.spawn<counter>(i);
      BOOST_REQUIRE_EQUAL(sys.request<int>(a, total{}, 10s), i);
      sys.kill(a);
      BOOST_REQUIRE(sys.join(a, 10s));
    }
  };
  // The node reclaims after answering; its next answer comes after that.
  churn(20);
  (void)sys.live_actors();
  auto before = node_fds();
  churn(200);
  (void)sys.live_actors();
  BOOST_CHECK_LE(node_fds(), before); // 200 more ended, none kept
  BOOST_CHECK_EQUAL(sys.live_actors(), 0U);
}

BOOST_AUTO_TEST_CASE(
  a_poison_message_ends_in_the_dead_letters_and_its_requester_gets_an_error) {
  pactor::actor_system sys({.max_deliveries = 3});
  // The mailbox stays open across the deaths, as a supervisor keeps it: the
  // requester waits through the restarts instead of seeing a closed
  // mailbox between a death and the next restart (actor_exited).
  pactor::spawn_options opts;
  opts.keep_mailbox_open = true;
  auto c = sys.spawn_with<counter>(opts, 0);
  std::optional<std::string> error_type;
  std::thread requester([&] {
    try {
      (void)sys.request<int>(c, poison{}, 30s);
    } catch (const pactor::remote_error& e) {
      error_type = e.type();
    } catch (const std::exception& e) {
      error_type = std::string("other: ") + e.what();
    }
  });
  for (int death = 1; death <= 3; ++death) {
    auto why = sys.join(c, 10s);
    BOOST_REQUIRE(why);
    BOOST_CHECK(why->kind == pactor::exit_kind::signal);
    BOOST_CHECK_EQUAL(why->incarnation, static_cast<std::uint32_t>(death));
    sys.restart(c);
  }
  requester.join();
  BOOST_REQUIRE(error_type);
  BOOST_CHECK_EQUAL(*error_type, "pactor::poison_message");
  sys.send(c, add{5}); // the fourth incarnation goes on
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 10s), 5);
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 1U);
  BOOST_CHECK(letters[0].to == c);
  BOOST_CHECK(letters[0].from == sys.self());
  BOOST_CHECK_EQUAL(letters[0].type, pactor::type_tag<poison>());
  BOOST_CHECK_EQUAL(letters[0].delivery, 4U);
  BOOST_CHECK(letters[0].why.find("poison") != std::string::npos);
  BOOST_CHECK(sys.take_dead_letters().empty());
}

BOOST_AUTO_TEST_CASE(a_full_mailbox_blocks_fails_or_drops_as_its_policy_says) {
  pactor::actor_system sys;
  auto busy_actor = [&](pactor::overflow policy) {
    auto c = sys.spawn_with<counter>({.name = "bounded",
                                      .mailbox_messages = 2,
                                      .on_full = policy,
                                      .send_timeout = 50ms},
                                     0);
    sys.send(c, slow_add{1, 500, sys.self()}); // handled: stays until ack
    BOOST_REQUIRE(sys.receive<started>(10s));
    sys.send(c, add{1}); // the second and last place
    return c;
  };
  auto f = busy_actor(pactor::overflow::fail);
  auto t0 = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(sys.send(f, add{1}), pactor::queue_full);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 40ms);

  auto b = busy_actor(pactor::overflow::block);
  t0 = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(sys.send(b, add{1}), pactor::queue_full);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 >= 45ms);

  auto d = busy_actor(pactor::overflow::drop_newest);
  sys.send(d, add{100}); // dropped, kept as a dead letter
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 1U);
  BOOST_CHECK(letters[0].to == d);
  BOOST_CHECK(letters[0].why.find("drop_newest") != std::string::npos);
  BOOST_CHECK_EQUAL(pactor::decode_payload<add>(letters[0].payload).n, 100);
  // A request is a message too: while the mailbox is full it is dropped
  // (and times out); once the slow message is done, it is answered.
  std::optional<int> sum;
  for (int i = 0; i < 20 && !sum; ++i) {
    try {
      sum = sys.request<int>(d, total{}, 1s);
    } catch (const pactor::timeout_error&) {
    }
  }
  BOOST_REQUIRE(sum);
  BOOST_CHECK_EQUAL(*sum, 1 + 1);
}

BOOST_AUTO_TEST_CASE(bad_spawn_options_are_refused) {
  pactor::actor_system sys;
  BOOST_CHECK_THROW(sys.spawn_with<counter>({.mailbox_bytes = 10}, 0),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(an_asynchronous_request_does_not_block_the_actor) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>(7);
  auto asker = sys.spawn<async_asker>();
  sys.send(c, slow_add{0, 300, sys.self()}); // the counter is busy a while
  BOOST_REQUIRE(sys.receive<started>(10s));
  sys.send(asker, ask_async{c, 10000});
  // The asker answers while its own request waits.
  auto r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(0), -1);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (r.at(0) == -1 && std::chrono::steady_clock::now() < deadline)
    r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(0), 7);
  BOOST_CHECK_EQUAL(r.at(1), 0);

  // Too short a timeout: on_error gets timeout_error; the late reply is
  // dropped (last stays 7 although the counter now holds 8).
  sys.send(c, add{1});
  sys.send(c, slow_add{0, 300, sys.self()});
  BOOST_REQUIRE(sys.receive<started>(10s));
  sys.send(asker, ask_async{c, 20});
  deadline = std::chrono::steady_clock::now() + 10s;
  while (r.at(1) == 0 && std::chrono::steady_clock::now() < deadline)
    r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(1), 1);
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 8); // after the slow one
  r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(0), 7);
  BOOST_CHECK_EQUAL(r.at(2), 0);
}

BOOST_AUTO_TEST_CASE(
  a_request_to_an_actor_that_dies_fails_at_once_not_at_its_timeout) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  auto t0 = std::chrono::steady_clock::now();
  try {
    (void)sys.request<int>(c, die_with{0}, 60s);
    BOOST_ERROR("a reply from a dead actor");
  } catch (const pactor::actor_exited& e) {
    BOOST_CHECK(e.who() == c);
    BOOST_CHECK(std::string(e.what()).find("exit code 7") != std::string::npos);
  }
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 10s);
}

BOOST_AUTO_TEST_CASE(an_asynchronous_request_to_an_actor_that_dies_reports_it) {
  pactor::actor_system sys;
  auto c = sys.spawn<counter>();
  auto asker = sys.spawn<async_asker>();
  sys.send(c, slow_add{0, 5000, sys.self()});
  BOOST_REQUIRE(sys.receive<started>(10s));
  sys.send(asker, ask_async{c, 60000});
  // The report comes after the asker has sent its request (in order).
  auto r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(2), 0);
  sys.kill(c); // busy: it never gets to the request
  BOOST_REQUIRE(sys.join(c, 10s));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (r.at(2) == 0 && std::chrono::steady_clock::now() < deadline)
    r = sys.request<std::vector<int>>(asker, report{}, 5s);
  BOOST_CHECK_EQUAL(r.at(2), 1); // on_error with actor_exited
  BOOST_CHECK_EQUAL(r.at(1), 0); // not a timeout
}

BOOST_AUTO_TEST_CASE(one_actor_system_per_program) {
  pactor::actor_system sys;
  BOOST_CHECK_THROW(pactor::actor_system second, std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()

// --- the node and the root ------------------------------------------------

namespace {

int stat_ppid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream rest(line.substr(close + 2));
  char state = '?';
  int ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

// A program with an actor system: reports the pids of its node and of two
// busy actors (each in a 20 s handler), then waits to be killed.
void root_program(pactor::queue<std::vector<int>> pids, pactor::queue<int> hold,
                  bool busy) {
  pactor::actor_system sys;
  std::vector<int> out;
  for (int i = 0; i < 2; ++i) {
    auto a = sys.spawn<counter>(0);
    (void)sys.request<int>(a, total{}, 10s);
    if (busy)
      sys.send(a, slow_add{1, 20000, sys.self()});
    out.push_back(sys.pid(a));
  }
  if (busy)
    for (int i = 0; i < 2; ++i)
      (void)sys.receive<started>(10s);
  out.insert(out.begin(), stat_ppid(out[0])); // the node
  pids.put(out);
  (void)hold.get(30s); // never comes (the parent kills us) or times out
}

// Waits (bounded) until signal `sig` is no longer pending in process `pid`
// (it was taken), from /proc/PID/status.
bool wait_not_pending(pid_t pid, int sig, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    unsigned long long pending = ~0ULL;
    while (std::getline(in, line))
      if (line.rfind("ShdPnd:", 0) == 0)
        pending = std::stoull(line.substr(7), nullptr, 16);
    if ((pending & (1ULL << (sig - 1))) == 0)
      return true;
    std::this_thread::yield();
  }
  return false;
}

// Waits (bounded) until every pid has exited, reaping the ones that are
// our children (this binary is a subreaper: orphans come to it).
bool all_exit(const std::vector<int>& pids, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (int pid : pids) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0)
      continue; // already gone
    pollfd p{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
    bool exited = ::poll(&p, 1, static_cast<int>(std::max<long>(left, 0))) == 1;
    ::close(fd);
    if (!exited)
      return false;
    ::waitpid(pid, nullptr, WNOHANG);
  }
  return true;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(node_and_root, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(the_node_and_every_actor_die_with_the_root) {
  pactor::queue<std::vector<int>> pids;
  pactor::queue<int> hold;
  pactor::process root(pactor::with_fork, root_program, pids, hold, false);
  root.start();
  auto p = pids.get(20s);
  BOOST_REQUIRE_EQUAL(p.size(), 3U);
  root.kill();
  BOOST_REQUIRE(root.join(10s));
  BOOST_CHECK(all_exit(p, 10s));
}

BOOST_AUTO_TEST_CASE(a_second_interrupt_kills_what_is_still_stopping) {
  pactor::queue<std::vector<int>> pids;
  pactor::queue<int> hold;
  pactor::process root(pactor::with_fork, root_program, pids, hold, true);
  root.start();
  auto p = pids.get(20s);
  BOOST_REQUIRE_EQUAL(p.size(), 3U);
  // Ctrl-C: the node stops the actors in order, each may take its shutdown
  // timeout (5 s) since both are in a 20 s handler; a second one ends it.
  ::kill(p[0], SIGINT);
  // Signals of one kind do not queue: the second one must come after the
  // node took the first (it is no longer pending: bounded wait).
  BOOST_REQUIRE(wait_not_pending(p[0], SIGINT, 5s));
  auto t0 = std::chrono::steady_clock::now();
  ::kill(p[0], SIGINT);
  BOOST_CHECK(all_exit(p, 4s));
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 4s);
  root.kill();
  BOOST_REQUIRE(root.join(10s));
  (void)all_exit(p, 10s); // reap what the root's death passed on to us
}

BOOST_AUTO_TEST_SUITE_END()
