// Supervisors: OTP's grid of restart types x exit reasons under each
// strategy, restart intensity (at and past the limit, sliding), escalation
// through two levels, shutdown order and timeouts, the API, resource limits,
// and the embedded supervisor.

#include <pactor/actors/actors.hpp>

#include "hygiene.hpp"
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using pactor::actor_ref;

namespace {

// How a child is made to end.
enum class ending : int { normal, shutdown, exception, signal };

struct end_with {
  int how = 0;
  MSGPACK_DEFINE(how)
};
struct who_are_you {
  MSGPACK_DEFINE()
};
struct identity {
  int pid = 0;
  std::uint32_t incarnation = 0;
  MSGPACK_DEFINE(pid, incarnation)
};
struct spin_forever {
  MSGPACK_DEFINE()
};
struct my_limits {
  MSGPACK_DEFINE()
};
struct limits_seen {
  std::uint64_t nofile_soft = 0;
  std::vector<int> cpus;
  std::vector<std::string> fds; // readlink of /proc/self/fd/*
  MSGPACK_DEFINE(nofile_soft, cpus, fds)
};
struct hog {
  int mib = 0;
  MSGPACK_DEFINE(mib)
};
struct stopped_note {
  std::string id;
  MSGPACK_DEFINE(id)
};

// A child that can be told how to end, says who it is, and tells `observer`
// when it stops.
class child {
public:
  explicit child(std::string id = "", actor_ref observer = {})
      : id_(std::move(id)), observer_(observer) {
  }
  void on_stop() {
    if (observer_)
      pactor::this_actor::send(observer_, stopped_note{id_});
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [](const end_with& e) {
        // Once: the message that ended an incarnation is redelivered to
        // the next (at-least-once), as a poison message would be.
        if (pactor::this_actor::delivery() > 1)
          return;
        switch (static_cast<ending>(e.how)) {
        case ending::normal:
          pactor::this_actor::stop();
          return;
        case ending::exception:
          throw std::runtime_error("told to fail");
        case ending::signal:
          ::kill(::getpid(), SIGKILL);
          return;
        case ending::shutdown:
          return; // (sys.stop from outside)
        }
      },
      [](const who_are_you&) {
        return identity{static_cast<int>(::getpid()),
                        pactor::this_actor::incarnation()};
      },
      [](const spin_forever&) {
        if (pactor::this_actor::delivery() > 1)
          return; // (redelivered to the next incarnation)
        for (;;) {
        }
      },
      [](const hog& h) {
        if (pactor::this_actor::delivery() > 1)
          return 0;
        std::vector<char> big(static_cast<std::size_t>(h.mib) << 20);
        for (std::size_t i = 0; i < big.size(); i += 4096)
          big[i] = 1; // touched: charged to the cgroup
        return static_cast<int>(big[big.size() / 2]);
      },
      [](const my_limits&) {
        limits_seen out;
        rlimit rl{};
        ::getrlimit(RLIMIT_NOFILE, &rl);
        out.nofile_soft = rl.rlim_cur;
        cpu_set_t set;
        CPU_ZERO(&set);
        ::sched_getaffinity(0, sizeof set, &set);
        for (int i = 0; i < CPU_SETSIZE; ++i)
          if (CPU_ISSET(i, &set))
            out.cpus.push_back(i);
        for (const auto& e :
             std::filesystem::directory_iterator("/proc/self/fd"))
          out.fds.push_back(std::filesystem::read_symlink(e.path()).string());
        return out;
      },
    };
  }

private:
  std::string id_;
  actor_ref observer_;
};

identity ask(actor_ref r) {
  return pactor::detail::request<identity>(
    r, who_are_you{}, pactor::detail::wait_limit::after(10s));
}

// Waits (bounded) until `pred` holds; false after `limit`.
template <class P>
bool eventually(P pred, std::chrono::milliseconds limit = 10s) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::yield();
  }
  return pred();
}

std::optional<pactor::child_info> info(pactor::supervisor_ref& s,
                                       const std::string& id) {
  for (auto& c : s.which_children())
    if (c.id == id)
      return c;
  return std::nullopt;
}

pactor::supervisor_spec three_children(pactor::strategy how,
                                       pactor::restart_type middle,
                                       int intensity = 100) {
  pactor::supervisor_spec spec;
  spec.how = how;
  spec.intensity = intensity;
  spec.period = 5s;
  if (how == pactor::strategy::simple_one_for_one) {
    auto t = pactor::worker<child>("kid", std::string("kid"), actor_ref{});
    t.restart = middle;
    spec.children.push_back(t);
    return spec;
  }
  for (const char* id : {"a", "b", "c"}) {
    auto c = pactor::worker<child>(id, std::string(id), actor_ref{});
    if (std::string(id) == "b")
      c.restart = middle;
    spec.children.push_back(c);
  }
  return spec;
}

const pactor::strategy strategies[]
  = {pactor::strategy::one_for_one, pactor::strategy::one_for_all,
     pactor::strategy::rest_for_one, pactor::strategy::simple_one_for_one};
const pactor::restart_type types[]
  = {pactor::restart_type::permanent, pactor::restart_type::transient,
     pactor::restart_type::temporary};
const ending endings[]
  = {ending::normal, ending::shutdown, ending::exception, ending::signal};

struct grid_row {
  int strategy_index;
  int type_index;
  int ending_index;
};
std::ostream& operator<<(std::ostream& os, const grid_row& r) {
  static const char* sn[]
    = {"one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"};
  static const char* tn[] = {"permanent", "transient", "temporary"};
  static const char* en[] = {"normal", "shutdown", "exception", "signal"};
  return os << sn[r.strategy_index] << "/" << tn[r.type_index] << "/"
            << en[r.ending_index];
}

std::vector<grid_row> all_rows() {
  std::vector<grid_row> rows;
  for (int s = 0; s < 4; ++s)
    for (int t = 0; t < 3; ++t)
      for (int e = 0; e < 4; ++e)
        rows.push_back({s, t, e});
  return rows;
}

} // namespace

BOOST_TEST_DONT_PRINT_LOG_VALUE(std::vector<grid_row>)

BOOST_FIXTURE_TEST_SUITE(supervisors, pactor_test::no_leftovers)

// OTP: permanent always restarted; transient only after an abnormal exit;
// temporary never. one_for_all restarts the siblings too, rest_for_one the
// ones started after it.
BOOST_DATA_TEST_CASE(
  each_restart_type_and_exit_reason_is_treated_as_in_otp_under_each_strategy,
  boost::unit_test::data::make(all_rows()), row) {
  const auto how = strategies[row.strategy_index];
  const auto type = types[row.type_index];
  const auto end = endings[row.ending_index];
  pactor::actor_system sys;
  auto sup = pactor::spawn_supervisor(sys, three_children(how, type));
  if (how == pactor::strategy::simple_one_for_one)
    for (int i = 0; i < 3; ++i)
      sup.start_dynamic(10s, std::string("kid"), actor_ref{});
  auto kids = sup.which_children();
  BOOST_REQUIRE_EQUAL(kids.size(), 3U);
  std::vector<identity> before;
  before.reserve(kids.size());
  for (auto& k : kids)
    before.push_back(ask(k.ref));
  auto victim = kids[1];
  if (end == ending::shutdown)
    sys.stop(victim.ref);
  else
    sys.send(victim.ref, end_with{static_cast<int>(end)});

  bool restarted = type == pactor::restart_type::permanent
                   || (type == pactor::restart_type::transient
                       && (end == ending::exception || end == ending::signal));
  if (restarted) {
    auto now = ask(victim.ref); // waits in its mailbox for the restart
    BOOST_CHECK_NE(now.pid, before[1].pid);
    BOOST_CHECK_EQUAL(now.incarnation, before[1].incarnation + 1);
    bool group_first = how == pactor::strategy::one_for_all;
    bool group_last = group_first || how == pactor::strategy::rest_for_one;
    auto first = ask(kids[0].ref);
    auto last = ask(kids[2].ref);
    BOOST_CHECK_EQUAL(first.pid != before[0].pid, group_first);
    BOOST_CHECK_EQUAL(last.pid != before[2].pid, group_last);
  } else {
    bool gone = eventually([&] {
      auto i = info(sup, victim.id);
      return type == pactor::restart_type::temporary
               ? !i.has_value()
               : (i && i->status == "terminated" && i->pid == 0);
    });
    BOOST_CHECK_MESSAGE(gone, "the child was restarted or is still listed");
    // The others were not touched.
    BOOST_CHECK_EQUAL(ask(kids[0].ref).pid, before[0].pid);
    BOOST_CHECK_EQUAL(ask(kids[2].ref).pid, before[2].pid);
  }
  BOOST_CHECK(sys.pid(sup.ref()) != 0); // the supervisor goes on
}

BOOST_AUTO_TEST_CASE(
  a_temporary_child_caught_in_a_group_restart_is_not_restarted) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.how = pactor::strategy::one_for_all;
  spec.intensity = 10;
  spec.children.push_back(pactor::worker<child>("a"));
  auto temp = pactor::worker<child>("temp");
  temp.restart = pactor::restart_type::temporary;
  spec.children.push_back(temp);
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto a = info(sup, "a")->ref;
  auto before = ask(a);
  sys.send(a, end_with{static_cast<int>(ending::signal)});
  BOOST_CHECK_NE(ask(a).pid, before.pid);
  BOOST_CHECK(eventually([&] { return !info(sup, "temp").has_value(); }));
  BOOST_CHECK_EQUAL(sup.count_children().specs, 1U);
}

BOOST_AUTO_TEST_CASE(
  restarts_up_to_the_intensity_are_made_and_one_more_gives_up,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.intensity = 3;
  spec.period = 10s;
  spec.children.push_back(pactor::worker<child>("w"));
  spec.children.push_back(pactor::worker<child>("x"));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto w = info(sup, "w")->ref;
  for (int i = 0; i < 3; ++i) { // exactly at the limit: restarted each time
    auto before = ask(w);
    sys.send(w, end_with{static_cast<int>(ending::exception)});
    BOOST_REQUIRE_EQUAL(ask(w).incarnation, before.incarnation + 1);
  }
  auto x = info(sup, "x")->ref;
  sys.send(w, end_with{static_cast<int>(ending::exception)}); // one more
  auto why = sys.join(sup.ref(), 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK_EQUAL(why->type, "pactor::supervisor_gave_up");
  // It stopped its children first, and they are not restarted.
  BOOST_CHECK(sys.join(w, 10s));
  BOOST_CHECK(sys.join(x, 10s));
  BOOST_CHECK_THROW(sys.send(x, who_are_you{}), pactor::actor_exited);
}

BOOST_AUTO_TEST_CASE(restarts_older_than_the_period_leave_the_sliding_window,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.intensity = 2;
  spec.period = 400ms;
  spec.children.push_back(pactor::worker<child>("w"));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto w = info(sup, "w")->ref;
  auto crash = [&] {
    auto before = ask(w);
    sys.send(w, end_with{static_cast<int>(ending::exception)});
    return ask(w).incarnation == before.incarnation + 1;
  };
  for (int round = 0; round < 3; ++round) {
    BOOST_REQUIRE(crash());
    BOOST_REQUIRE(crash()); // two in the window: at the limit
    // The window moves on (time passing is what is tested here).
    std::this_thread::sleep_for(450ms);
  }
  BOOST_CHECK(sys.pid(sup.ref()) != 0); // six restarts, never three in 400 ms
  BOOST_REQUIRE(crash());
  BOOST_REQUIRE(crash());
  sys.send(w, end_with{static_cast<int>(ending::exception)});
  auto why = sys.join(sup.ref(), 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK_EQUAL(why->type, "pactor::supervisor_gave_up");
}

BOOST_AUTO_TEST_CASE(a_supervisor_that_gives_up_escalates_to_its_own_supervisor,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec mid;
  mid.intensity = 1;
  mid.children.push_back(pactor::worker<child>("w"));
  pactor::supervisor_spec top;
  top.intensity = 1;
  top.children.push_back(pactor::supervisor_child("mid", mid));
  top.children.push_back(pactor::worker<child>("sibling"));
  auto t = pactor::spawn_supervisor(sys, top);
  pactor::supervisor_ref m(info(t, "mid")->ref);
  auto w = info(m, "w")->ref;
  auto mid_pid = sys.pid(m.ref());
  // Level 1: two crashes of w within the period: mid gives up, and top
  // restarts mid (one restart of top), which starts w again.
  for (int i = 0; i < 2; ++i) {
    auto before = ask(w);
    sys.send(w, end_with{static_cast<int>(ending::exception)});
    if (i == 0)
      BOOST_REQUIRE_EQUAL(ask(w).incarnation, before.incarnation + 1);
  }
  BOOST_REQUIRE(eventually([&] {
    auto p = sys.pid(m.ref());
    return p != 0 && p != mid_pid;
  }));
  // mid takes w back (same ref) once it has started again; meanwhile w's
  // mailbox is closed (mid closed it when it gave up).
  BOOST_CHECK(eventually([&] {
    try {
      return ask(w).pid != 0;
    } catch (const pactor::actor_exited&) {
      return false;
    }
  }));
  // Level 2: mid gives up again within top's period: top gives up too.
  for (int i = 0; i < 2; ++i)
    try {
      sys.send(w, end_with{static_cast<int>(ending::exception)});
      if (i == 0)
        (void)ask(w);
    } catch (const pactor::actor_exited&) {
    }
  auto why = sys.join(t.ref(), 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK_EQUAL(why->type, "pactor::supervisor_gave_up");
  BOOST_CHECK(eventually([&] { return sys.live_actors() == 0; }));
}

BOOST_AUTO_TEST_CASE(a_killed_supervisor_takes_its_whole_subtree_with_it,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec mid;
  mid.children.push_back(pactor::worker<child>("leaf"));
  pactor::supervisor_spec top;
  top.children.push_back(pactor::supervisor_child("mid", mid));
  top.children.push_back(pactor::worker<child>("sibling"));
  auto t = pactor::spawn_supervisor(sys, top);
  pactor::supervisor_ref m(info(t, "mid")->ref);
  (void)ask(info(m, "leaf")->ref);
  BOOST_REQUIRE_EQUAL(sys.live_actors(), 4U);
  sys.kill(t.ref()); // nobody restarts the top one
  BOOST_CHECK(eventually([&] { return sys.live_actors() == 0; }));
}

BOOST_AUTO_TEST_CASE(children_start_in_order_and_stop_in_reverse_order,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  for (const char* id : {"first", "second", "third"})
    spec.children.push_back(
      pactor::worker<child>(id, std::string(id), sys.self()));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto kids = sup.which_children();
  BOOST_REQUIRE_EQUAL(kids.size(), 3U);
  BOOST_CHECK(kids[0].id == "first" && kids[1].id == "second"
              && kids[2].id == "third");
  BOOST_CHECK(kids[0].ref.id() < kids[1].ref.id()
              && kids[1].ref.id() < kids[2].ref.id()); // spawned in order
  sys.stop(sup.ref());
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto n = sys.receive<stopped_note>(10s);
    BOOST_REQUIRE(n);
    order.push_back(n->id);
  }
  BOOST_CHECK((order == std::vector<std::string>{"third", "second", "first"}));
  auto why = sys.join(sup.ref(), 10s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::shutdown);
}

BOOST_AUTO_TEST_CASE(
  a_child_that_does_not_stop_is_killed_after_its_shutdown_timeout,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  auto stubborn = pactor::worker<child>("stubborn");
  stubborn.shutdown = pactor::shutdown_policy::after(300ms);
  spec.children.push_back(stubborn);
  auto brutal = pactor::worker<child>("brutal");
  brutal.shutdown = pactor::shutdown_policy::brutal_kill();
  spec.children.push_back(brutal);
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto s = info(sup, "stubborn")->ref;
  sys.send(s, spin_forever{}); // never reads its shutdown message
  (void)ask(info(sup, "brutal")->ref);
  auto t0 = std::chrono::steady_clock::now();
  sup.terminate_child("stubborn", 20s);
  auto took = std::chrono::steady_clock::now() - t0;
  BOOST_CHECK(took >= 290ms);
  BOOST_CHECK(took < 5s);
  auto why = sys.join(s, 1s);
  BOOST_REQUIRE(why);
  BOOST_CHECK(why->kind == pactor::exit_kind::killed);
  BOOST_CHECK_EQUAL(info(sup, "stubborn")->status, "terminated");
  // Its unread shutdown message is still in its mailbox: the next
  // incarnation is not stopped by it.
  sup.restart_child("stubborn");
  auto first = ask(s);
  BOOST_CHECK_EQUAL(ask(s).pid, first.pid);
  BOOST_CHECK_EQUAL(info(sup, "stubborn")->status, "running");
  t0 = std::chrono::steady_clock::now();
  sup.terminate_child("brutal", 20s);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  BOOST_CHECK(sys.join(info(sup, "brutal")->ref, 1s)->kind
              == pactor::exit_kind::killed);
}

BOOST_AUTO_TEST_CASE(
  the_supervisor_api_starts_terminates_restarts_deletes_and_counts,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.children.push_back(pactor::worker<child>("a"));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto b = sup.start_child(pactor::worker<child>("b"));
  BOOST_CHECK(ask(b).pid != 0);
  BOOST_CHECK_THROW(sup.start_child(pactor::worker<child>("b")),
                    pactor::remote_error); // the id is taken
  auto counts = sup.count_children();
  BOOST_CHECK_EQUAL(counts.specs, 2U);
  BOOST_CHECK_EQUAL(counts.active, 2U);
  BOOST_CHECK_EQUAL(counts.workers, 2U);
  BOOST_CHECK_EQUAL(counts.supervisors, 0U);
  sup.terminate_child("b");
  BOOST_CHECK_EQUAL(info(sup, "b")->status, "terminated");
  BOOST_CHECK_EQUAL(sup.count_children().active, 1U);
  BOOST_CHECK_THROW(sys.send(b, who_are_you{}), pactor::actor_exited);
  BOOST_CHECK(sup.restart_child("b") == b); // same ref
  BOOST_CHECK(ask(b).pid != 0);
  BOOST_CHECK_THROW(sup.delete_child("b"), pactor::remote_error); // running
  sup.terminate_child("b");
  sup.delete_child("b");
  BOOST_CHECK(!info(sup, "b"));
  BOOST_CHECK_THROW(sup.restart_child("b"), pactor::remote_error);
  auto kids = sup.which_children();
  BOOST_REQUIRE_EQUAL(kids.size(), 1U);
  BOOST_CHECK_EQUAL(kids[0].id, "a");
  BOOST_CHECK(kids[0].type == pactor::child_type::worker);
  BOOST_CHECK_EQUAL(kids[0].status, "running");
  BOOST_CHECK_EQUAL(kids[0].pid, ask(kids[0].ref).pid);
}

BOOST_AUTO_TEST_CASE(invalid_specs_are_refused_naming_the_field) {
  pactor::actor_system sys;
  auto message = [&](const pactor::supervisor_spec& s) -> std::string {
    try {
      (void)pactor::spawn_supervisor(sys, s);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  };
  pactor::supervisor_spec s;
  s.children.push_back(pactor::worker<child>(""));
  BOOST_CHECK_NE(message(s).find("id is empty"), std::string::npos);
  s.children = {pactor::worker<child>("x"), pactor::worker<child>("x")};
  BOOST_CHECK_NE(message(s).find("'x': id is used twice"), std::string::npos);
  s.children = {pactor::worker<child>("x")};
  s.intensity = -1;
  BOOST_CHECK_NE(message(s).find("intensity"), std::string::npos);
  s.intensity = 1;
  s.period = 0ms;
  BOOST_CHECK_NE(message(s).find("period"), std::string::npos);
  s.period = 1s;
  s.how = pactor::strategy::simple_one_for_one;
  s.children = {pactor::worker<child>("x"), pactor::worker<child>("y")};
  BOOST_CHECK_NE(message(s).find("exactly one child spec"), std::string::npos);
  s.how = pactor::strategy::one_for_one;
  auto limited = pactor::worker<child>("lim");
  limited.options.limits.push_back({RLIMIT_NOFILE, 100, 10});
  s.children = {limited};
  BOOST_CHECK_NE(message(s).find("'lim': options"), std::string::npos);
  auto cpu = pactor::worker<child>("cpu");
  cpu.options.cpus = {4096};
  s.children = {cpu};
  BOOST_CHECK_NE(message(s).find("cpus"), std::string::npos);
  auto slow = pactor::worker<child>("slow");
  slow.backoff.initial = 2s;
  slow.backoff.max = 1s;
  s.children = {slow};
  BOOST_CHECK_NE(message(s).find("'slow': backoff"), std::string::npos);
  BOOST_CHECK_EQUAL(sys.live_actors(), 0U);
}

BOOST_AUTO_TEST_CASE(a_child_runs_under_its_resource_limits_and_cpus,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  auto c = pactor::worker<child>("limited");
  c.options.limits.push_back({RLIMIT_NOFILE, 64, 64});
  c.options.cpus = {0};
  spec.children.push_back(c);
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto seen = pactor::detail::request<limits_seen>(
    info(sup, "limited")->ref, my_limits{},
    pactor::detail::wait_limit::after(10s));
  BOOST_CHECK_EQUAL(seen.nofile_soft, 64U);
  BOOST_CHECK((seen.cpus == std::vector<int>{0}));
}

BOOST_AUTO_TEST_CASE(
  a_child_over_its_memory_cap_is_killed_and_its_reason_says_so,
  *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  auto c = pactor::worker<child>("capped");
  c.restart = pactor::restart_type::temporary;
  c.options.memory_limit = std::uint64_t{64} << 20;
  spec.children.push_back(c);
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto r = info(sup, "capped")->ref;
  try {
    sys.send(r, hog{256});
  } catch (const pactor::actor_exited&) { // it could not even start
  }
  auto why = sys.join(r, 30s);
  BOOST_REQUIRE(why);
  if (why->type == "pactor::resource_limit") { // no memory cgroup here
    BOOST_TEST_MESSAGE("memory cap skipped on this host: " << why->message);
    BOOST_CHECK_NE(why->message.find("memory cap"), std::string::npos);
    return;
  }
  BOOST_CHECK(why->kind == pactor::exit_kind::out_of_memory);
  BOOST_CHECK_EQUAL(why->code, SIGKILL);
  BOOST_CHECK_MESSAGE(why->message.find("memory cap") != std::string::npos,
                      why->to_string());
}

BOOST_AUTO_TEST_CASE(messages_sent_to_a_dead_child_wait_for_its_restart,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  auto slow = pactor::worker<child>("slow");
  slow.backoff.initial = 300ms; // a restart that takes a while
  slow.backoff.max = 300ms;
  slow.backoff.jitter = 0;
  spec.children.push_back(slow);
  spec.intensity = 5;
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto r = info(sup, "slow")->ref;
  auto before = ask(r);
  auto t0 = std::chrono::steady_clock::now();
  sys.send(r, end_with{static_cast<int>(ending::signal)});
  // Sent while it is dead: neither refused nor lost.
  BOOST_CHECK_NO_THROW(sys.send(r, who_are_you{}));
  auto after = ask(r);
  BOOST_CHECK_EQUAL(after.incarnation, before.incarnation + 1);
  BOOST_CHECK(std::chrono::steady_clock::now() - t0 >= 200ms); // backoff
}

BOOST_AUTO_TEST_CASE(
  an_embedded_supervisor_restarts_children_from_a_threaded_program_whose_fds_they_never_see,
  *boost::unit_test::timeout(60)) {
  // The program's own listening socket, opened before the actor system.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(
    ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  BOOST_REQUIRE(::listen(listener, 4) == 0);
  struct stat st {};
  ::fstat(listener, &st);
  auto mine = "socket:[" + std::to_string(st.st_ino) + "]";
  {
    pactor::actor_system sys;
    std::atomic<bool> busy{true};
    std::thread service([&] { // the service's own thread, running
      while (busy.load())
        std::this_thread::yield();
    });
    {
      pactor::supervisor_spec spec;
      spec.intensity = 10;
      spec.children.push_back(pactor::worker<child>("risky"));
      pactor::supervisor sup(sys, spec);
      auto r = sup.child("risky");
      auto seen = pactor::detail::request<limits_seen>(
        r, my_limits{}, pactor::detail::wait_limit::after(10s));
      for (const auto& fd : seen.fds)
        BOOST_CHECK_NE(fd, mine);
      for (int i = 0; i < 3; ++i) {
        auto before = ask(r);
        sys.send(r, end_with{static_cast<int>(ending::signal)});
        BOOST_CHECK_EQUAL(ask(r).incarnation, before.incarnation + 1);
      }
      BOOST_CHECK_EQUAL(sup.which_children().at(0).restarts, 3U);
      BOOST_CHECK(!sup.gave_up());
    } // stops its children
    busy.store(false);
    service.join();
    BOOST_CHECK_EQUAL(sys.live_actors(), 0U);
  }
  ::close(listener);
}

BOOST_AUTO_TEST_CASE(an_embedded_supervisor_runs_on_the_programs_event_loop,
                     *boost::unit_test::timeout(60)) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.intensity = 10;
  spec.children.push_back(pactor::worker<child>("w"));
  pactor::supervisor sup(sys, spec, pactor::supervisor::mode::event_loop);
  auto r = sup.child("w");
  auto before = ask(r);
  sys.send(r, end_with{static_cast<int>(ending::signal)});
  // The program's loop: poll the fd, then let the supervisor decide.
  bool restarted = false;
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!restarted && std::chrono::steady_clock::now() < until) {
    pollfd p{sup.poll_fd(), POLLIN, 0};
    (void)::poll(&p, 1, 100);
    sup.poll();
    restarted = sys.pid(r) != 0 && sys.pid(r) != before.pid;
  }
  BOOST_REQUIRE(restarted);
  BOOST_CHECK_EQUAL(ask(r).incarnation, before.incarnation + 1);
}

BOOST_AUTO_TEST_CASE(
  a_stopped_top_level_supervisor_closes_its_childrens_mailboxes) {
  pactor::actor_system sys;
  pactor::supervisor_spec spec;
  spec.children.push_back(pactor::worker<child>("w"));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto kid = sup.which_children().at(0).ref;
  BOOST_TEST(sys.request<identity>(kid, who_are_you{}, 10s).pid > 0);
  sys.stop(sup.ref());
  BOOST_REQUIRE(sys.join(sup.ref(), 10s));
  // Nobody will restart it: a request fails at once instead of waiting.
  auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(sys.request<identity>(kid, who_are_you{}, 10s),
                    pactor::actor_exited);
  BOOST_CHECK(std::chrono::steady_clock::now() - start < 5s);
}

BOOST_AUTO_TEST_SUITE_END()
