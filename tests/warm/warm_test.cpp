// Warm restart: an actor's state committed with the acknowledgement of the
// message that changed it. Crash points (compiled into this suite's build of
// the runtime and the actor layer) kill an actor inside each window of the
// commit; random SIGKILLs from outside hit it anywhere else.

#include <pactor/actors/actors.hpp>
#include <pactor/runtime/detail/ring.hpp>
#include <pactor/runtime/detail/sync.hpp>

#include "hygiene.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using pactor::actor_ref;

namespace {

struct incr {
  MSGPACK_DEFINE()
};
struct total {
  MSGPACK_DEFINE()
};
// Arms a crash point in the actor: it SIGKILLs itself the k-th time it
// reaches `point` (only on the arm message's first delivery).
struct arm {
  int point = 0;
  long countdown = 0;
  MSGPACK_DEFINE(point, countdown)
};

void arm_here(const arm& a) {
  if (pactor::this_actor::delivery() == 1)
    pactor::detail::crash_point_arm(a.point, a.countdown);
}

// A counter whose count survives restarts: a trivially copyable state,
// committed as its bytes.
class warm_counter {
public:
  struct state {
    std::uint64_t count = 0;
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const incr&) { ++st_.count; },
      [this](const total&) { return st_.count; },
      [](const arm& a) { arm_here(a); },
    };
  }

private:
  state st_;
};

pactor::spawn_options warm_opts(std::uint32_t commit_every = 1) {
  pactor::spawn_options o;
  o.restart = pactor::restart_mode::warm;
  o.commit_every = commit_every;
  return o;
}

pactor::actor_system_options patient() {
  pactor::actor_system_options o;
  // Random kills can hit one message more than three times: no poison here.
  o.max_deliveries = 1000000;
  return o;
}

// Deaths seen, by cause.
struct deaths {
  int killed = 0;      // by the test (actor_system::kill)
  int crash_point = 0; // the actor's own SIGKILL at an armed crash point
  int peer_gone = 0;   // ended by actor_exited (it sent to a dead actor)
  int other = 0;
  int armed = -1;               // the crash point armed in the running one
  std::map<int, int> per_point; // crash-point deaths by point
  [[nodiscard]] int total() const {
    return killed + crash_point + peer_gone + other;
  }
};

void count_death(deaths& d, const pactor::exit_reason& why) {
  if (why.kind == pactor::exit_kind::killed) {
    ++d.killed;
  } else if (why.kind == pactor::exit_kind::signal && why.code == SIGKILL) {
    ++d.crash_point;
    ++d.per_point[d.armed];
  } else if (why.kind == pactor::exit_kind::exception
             && why.type == "pactor::actor_exited") {
    ++d.peer_gone;
  } else {
    BOOST_TEST_MESSAGE("unexpected death: " << why.to_string());
    ++d.other;
  }
}

// Restarts each of `refs` that has ended.
void revive(pactor::actor_system& sys, const std::vector<actor_ref>& refs,
            deaths& d) {
  for (auto r : refs) {
    if (sys.pid(r) != 0)
      continue;
    auto why = sys.join(r, 10s);
    BOOST_REQUIRE_MESSAGE(why.has_value(), "an actor neither runs nor ended");
    count_death(d, *why);
    sys.restart(r);
  }
}

// Kills `r` (SIGKILL from the node) if it is running, and restarts it.
void kill_and_revive(pactor::actor_system& sys, actor_ref r, deaths& d) {
  if (sys.pid(r) != 0)
    sys.kill(r);
  auto why = sys.join(r, 10s);
  BOOST_REQUIRE_MESSAGE(why.has_value(), "a killed actor did not end");
  count_death(d, *why);
  sys.restart(r);
}

// Runs `f` until it returns without actor_exited, reviving `refs` between
// tries (bounded).
template <class F>
auto with_revival(pactor::actor_system& sys, const std::vector<actor_ref>& refs,
                  deaths& d, F f) {
  for (int attempt = 0;; ++attempt) {
    BOOST_REQUIRE_MESSAGE(attempt < 10000, "no progress through restarts");
    try {
      return f();
    } catch (const pactor::actor_exited&) {
      revive(sys, refs, d);
    }
  }
}

struct item {
  std::uint64_t n = 0;
  MSGPACK_DEFINE(n)
};
struct sink_report {
  std::uint64_t taken = 0;
  std::uint64_t repeats = 0;
  std::uint64_t sum = 0;
  std::uint64_t highest = 0;
  MSGPACK_DEFINE(taken, repeats, sum, highest)
};

// Forwards each item to the sink, once per handling: a redelivered item is
// sent again, with the same origin.
class forwarder {
public:
  struct state {
    std::uint64_t forwarded = 0;
  };
  explicit forwarder(actor_ref sink) : sink_(sink) {
  }
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const item& i) {
        pactor::this_actor::send(sink_, i);
        ++st_.forwarded;
      },
      [this](const total&) { return st_.forwarded; },
      [](const arm& a) { arm_here(a); },
    };
  }

private:
  actor_ref sink_;
  state st_;
};

// Takes each item once: a dedup filter in its warm state, committed with
// the message it accepted.
class dedup_sink {
public:
  struct state {
    sink_report report;
    pactor::dedup seen;
    MSGPACK_DEFINE(report, seen)
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const item& i) {
        if (!st_.seen.first_time()) {
          ++st_.report.repeats;
          return;
        }
        ++st_.report.taken;
        st_.report.sum += i.n;
        st_.report.highest = std::max(st_.report.highest, i.n);
      },
      [this](const total&) { return st_.report; },
      [](const arm& a) { arm_here(a); },
    };
  }

private:
  state st_;
};

struct add {
  int n = 0;
  MSGPACK_DEFINE(n)
};

// A state that refuses to load when it holds 13 (as a changed state type
// would): msgpack-encoded, since it is not trivially copyable.
struct fragile {
  int n = 0;
  std::string note;
  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    pk.pack_array(2);
    pk.pack(n);
    pk.pack(note);
  }
  void msgpack_unpack(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 2)
      throw msgpack::type_error();
    auto v = o.via.array.ptr[0].as<int>();
    if (v == 13)
      throw std::runtime_error("13 does not load");
    n = v;
    note = o.via.array.ptr[1].as<std::string>();
  }
};

class fragile_counter {
public:
  fragile& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const add& a) { st_.n += a.n; },
      [this](const total&) { return st_.n; },
    };
  }

private:
  fragile st_;
};

// Keeps a list that may outgrow spawn_options::state_bytes.
class hoarder {
public:
  std::vector<int>& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const add& a) { st_.insert(st_.end(), a.n, 7); },
      [this](const total&) { return st_.size(); },
    };
  }

private:
  std::vector<int> st_;
};

// No warm_state(): cannot be warm.
class stateless {
public:
  pactor::behavior behavior() {
    return pactor::behavior{[](const add&) {}};
  }
};

pactor::behavior fn_actor() {
  return pactor::behavior{[](const add&) {}};
}

const int crash_points[] = {
  pactor::detail::crash_peek_delivered,   // handled, nothing committed
  141,                                    // state written, not published
  142,                                    // published, mailbox not acked
  pactor::detail::crash_ack_after_commit, // acked
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(warm_restart, pactor_test::no_leftovers)

BOOST_AUTO_TEST_CASE(a_warm_actor_restarts_from_its_last_committed_state,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  auto warm = sys.spawn_with<warm_counter>(warm_opts());
  auto cold = sys.spawn<warm_counter>();
  for (int i = 0; i < 10; ++i) {
    sys.send(warm, incr{});
    sys.send(cold, incr{});
  }
  BOOST_REQUIRE_EQUAL(sys.request<std::uint64_t>(warm, total{}, 5s), 10U);
  BOOST_REQUIRE_EQUAL(sys.request<std::uint64_t>(cold, total{}, 5s), 10U);
  for (auto r : {warm, cold}) {
    sys.kill(r);
    BOOST_REQUIRE(sys.join(r, 5s));
    sys.restart(r);
  }
  BOOST_CHECK_EQUAL(sys.request<std::uint64_t>(warm, total{}, 5s), 10U);
  BOOST_CHECK_EQUAL(sys.request<std::uint64_t>(cold, total{}, 5s), 0U);
}

BOOST_DATA_TEST_CASE(
  a_warm_counter_killed_at_every_crash_point_and_at_random_counts_exactly_once,
  boost::unit_test::data::make({1U, 32U}), commit_every) {
  constexpr std::uint64_t increments = 100000;
  constexpr int random_kills = 1000;
  pactor::actor_system sys(patient());
  auto c = sys.spawn_with<warm_counter>(warm_opts(commit_every));
  std::vector<actor_ref> refs{c};
  std::mt19937 rng(20261122U + commit_every);
  deaths d;
  int arms = 0;
  int armed_for = -1;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  for (std::uint64_t sent = 0; sent < increments;) {
    BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                          "too slow: " << sent << " sent");
    // First half: each new incarnation gets a crash point, in turn, k
    // passes ahead. Second half: kills at random moments.
    if (sent < increments / 2 && d.total() != armed_for) {
      armed_for = d.total();
      int point = crash_points[arms % 4];
      long k = 1 + static_cast<long>(rng() % 8);
      with_revival(sys, refs, d, [&] { sys.send(c, arm{point, k}); });
      d.armed = point;
      ++arms;
    }
    with_revival(sys, refs, d, [&] { sys.send(c, incr{}); });
    ++sent;
    if (sent < increments / 2 && sent % 64 == 0) // find the death soon
      with_revival(sys, refs, d,
                   [&] { return sys.request<std::uint64_t>(c, total{}, 10s); });
    if (sent > increments / 2 && d.killed < random_kills && rng() % 50 == 0)
      kill_and_revive(sys, c, d);
  }
  while (d.killed < random_kills) // the rest of the random kills
    kill_and_revive(sys, c, d);
  auto count = with_revival(
    sys, refs, d, [&] { return sys.request<std::uint64_t>(c, total{}, 10s); });
  BOOST_TEST_MESSAGE("commit_every " << commit_every << ": " << d.killed
                                     << " kills, " << d.crash_point
                                     << " crash-point deaths of " << arms
                                     << " armed, " << d.other << " other");
  BOOST_CHECK_EQUAL(count, increments);
  BOOST_CHECK_EQUAL(d.killed, random_kills);
  for (int p : crash_points) {
    BOOST_TEST_MESSAGE("  crash point " << p << ": " << d.per_point[p]
                                        << " deaths");
    BOOST_CHECK_GE(d.per_point[p], 20);
  }
  BOOST_CHECK_EQUAL(d.other, 0);
}

BOOST_AUTO_TEST_CASE(
  a_forwarder_killed_at_every_crash_point_and_at_random_delivers_each_item_once_to_a_deduplicating_sink,
  *boost::unit_test::timeout(180)) {
  constexpr std::uint64_t items = 100000;
  constexpr int random_kills = 1000;
  pactor::actor_system sys(patient());
  auto sink = sys.spawn_with<dedup_sink>(warm_opts(8));
  auto fwd = sys.spawn_with<forwarder>(warm_opts(16), sink);
  std::vector<actor_ref> refs{sink, fwd};
  std::mt19937 rng(77U);
  deaths d;
  int arms = 0;
  int armed_for = -1;
  auto deadline = std::chrono::steady_clock::now() + 150s;
  auto report = [&] {
    return with_revival(sys, refs, d, [&] {
      return sys.request<sink_report>(sink, total{}, 10s);
    });
  };
  for (std::uint64_t n = 1; n <= items; ++n) {
    BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                          "too slow: " << n << " sent");
    if (n < items / 2 && d.total() != armed_for) {
      armed_for = d.total();
      int point = crash_points[arms % 4];
      long k = 1 + static_cast<long>(rng() % 8);
      with_revival(sys, refs, d, [&] { sys.send(fwd, arm{point, k}); });
      d.armed = point;
      ++arms;
    }
    with_revival(sys, refs, d, [&] { sys.send(fwd, item{n}); });
    if (n < items / 2 && n % 64 == 0) // find the forwarder's death soon
      (void)with_revival(sys, refs, d, [&] {
        return sys.request<std::uint64_t>(fwd, total{}, 10s);
      });
    if (n > items / 2 && d.killed < random_kills && rng() % 50 == 0)
      kill_and_revive(sys, rng() % 4 == 0 ? sink : fwd, d);
  }
  while (d.killed < random_kills)
    kill_and_revive(sys, d.killed % 4 == 0 ? sink : fwd, d);
  // Everything sent reaches the sink: wait (bounded) until it has the last.
  sink_report r;
  for (;;) {
    r = report();
    if (r.taken >= items || std::chrono::steady_clock::now() > deadline + 20s)
      break;
    revive(sys, refs, d);
  }
  BOOST_TEST_MESSAGE("forwarder and sink: "
                     << d.killed << " kills, " << d.crash_point
                     << " crash-point deaths, " << d.peer_gone
                     << " ends sending to a dead sink; the sink dropped "
                     << r.repeats << " repeats");
  for (int p : crash_points)
    BOOST_CHECK_GE(d.per_point[p], 20);
  BOOST_CHECK_EQUAL(r.taken, items);
  BOOST_CHECK_EQUAL(r.sum, items * (items + 1) / 2);
  BOOST_CHECK_EQUAL(r.highest, items);
  BOOST_CHECK_GT(r.repeats, 0U); // redeliveries happened, and were dropped
  BOOST_CHECK_EQUAL(d.other, 0);
}

BOOST_AUTO_TEST_CASE(
  a_state_that_does_not_decode_starts_cold_with_a_dead_letter_saying_so,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  auto c = sys.spawn_with<fragile_counter>(warm_opts());
  sys.send(c, add{13});
  BOOST_REQUIRE_EQUAL(sys.request<int>(c, total{}, 5s), 13);
  sys.kill(c);
  BOOST_REQUIRE(sys.join(c, 5s));
  sys.restart(c);
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 0); // cold
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 1U);
  BOOST_CHECK(letters[0].to == c);
  BOOST_CHECK_MESSAGE(letters[0].why.find("does not decode")
                        != std::string::npos,
                      letters[0].why);
  BOOST_CHECK(!letters[0].payload.empty()); // the state's bytes
  // The messages it had handled stay handled; new ones count from zero.
  sys.send(c, add{2});
  BOOST_CHECK_EQUAL(sys.request<int>(c, total{}, 5s), 2);
}

BOOST_AUTO_TEST_CASE(
  with_bad_state_fail_a_state_that_does_not_decode_ends_the_incarnation,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  auto opts = warm_opts();
  opts.on_bad_state = pactor::bad_state::fail;
  auto c = sys.spawn_with<fragile_counter>(opts);
  sys.send(c, add{13});
  BOOST_REQUIRE_EQUAL(sys.request<int>(c, total{}, 5s), 13);
  sys.kill(c);
  BOOST_REQUIRE(sys.join(c, 5s));
  sys.restart(c);
  auto why = sys.join(c, 5s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::exception);
  BOOST_CHECK_EQUAL(why->type, "pactor::stash_error");
  BOOST_CHECK_MESSAGE(
    why->message.find("13 does not load") != std::string::npos, why->message);
}

BOOST_AUTO_TEST_CASE(
  a_state_that_outgrows_its_stash_ends_the_incarnation_and_its_message_becomes_poison,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  auto opts = warm_opts();
  opts.state_bytes = 64;
  auto h = sys.spawn_with<hoarder>(opts);
  sys.send(h, add{5});
  BOOST_REQUIRE_EQUAL(sys.request<std::size_t>(h, total{}, 5s), 5U);
  sys.send(h, add{100}); // 100 ints do not fit in 64 bytes
  auto why = sys.join(h, 5s);
  BOOST_REQUIRE(why);
  BOOST_CHECK_EQUAL(why->type, "pactor::state_too_large");
  // Redelivered to each next incarnation, it ends each: then it is poison,
  // and the actor goes on from its last state.
  std::optional<std::size_t> size;
  for (int i = 0; i < 10 && !size; ++i) {
    if (sys.pid(h) == 0) {
      BOOST_REQUIRE(sys.join(h, 5s));
      sys.restart(h);
    }
    try {
      size = sys.request<std::size_t>(h, total{}, 5s);
    } catch (const pactor::actor_exited&) {
    }
  }
  BOOST_REQUIRE(size);
  BOOST_CHECK_EQUAL(*size, 5U);
  auto letters = sys.take_dead_letters();
  BOOST_REQUIRE_EQUAL(letters.size(), 1U);
  BOOST_CHECK(letters[0].why.find("poison") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(warm_restart_options_that_cannot_work_are_refused_at_spawn,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  BOOST_CHECK_THROW(sys.spawn_with<stateless>(warm_opts()),
                    std::invalid_argument);
  BOOST_CHECK_THROW(sys.spawn_with(warm_opts(), fn_actor),
                    std::invalid_argument);
  BOOST_CHECK_THROW(sys.spawn_with<warm_counter>(warm_opts(0)),
                    std::invalid_argument);
  auto tiny = warm_opts();
  tiny.state_bytes = 8;
  BOOST_CHECK_THROW(sys.spawn_with<warm_counter>(tiny), std::invalid_argument);
  BOOST_CHECK_EQUAL(sys.live_actors(), 0U);
}

BOOST_AUTO_TEST_SUITE_END()
