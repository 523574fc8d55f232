// pactor-bench: prints one JSON line per benchmark (../shared/BENCH_SCHEMA.md).
// Progress goes to stderr. Every case checks its results and the program
// exits non-zero if one is wrong.

#include <pactor/pactor.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

struct bench_case {
  std::string name;
  std::string unit;
  std::function<double(bool quick)> run;
  /// "pactor", or "bare" for a floor: the same thing without pactor.
  std::string impl = "pactor";
};

double median(std::vector<double> v) {
  if (v.empty())
    throw std::runtime_error("no samples");
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0)
    .count();
}

// Times `n` round trips after `warmup` untimed ones; `round_trip(i)` sends i
// and checks the answer. Returns {p50, p99} in microseconds.
template <class F>
std::pair<double, double> round_trip_us(int n, int warmup, F round_trip) {
  std::vector<double> samples;
  for (int i = 0; i < n + warmup; ++i) {
    auto t0 = clock_type::now();
    round_trip(i);
    if (i >= warmup)
      samples.push_back(ms_since(t0) * 1000);
  }
  std::sort(samples.begin(), samples.end());
  return {samples[samples.size() / 2], samples[samples.size() * 99 / 100]};
}

void noop() {
}

void check_exit(pactor::process& p) {
  if (!p.join(std::chrono::seconds(30)))
    throw std::runtime_error("a child did not exit within 30 s");
  if (p.exitcode() != 0)
    throw std::runtime_error("a child exited with "
                             + std::to_string(p.exitcode().value_or(-1000)));
}

template <class Tag>
double spawn_join_ms(Tag tag, int iterations) {
  for (int i = 0; i < 3; ++i) { // warm up (and start the forkserver)
    pactor::process p(tag, noop);
    p.start();
    check_exit(p);
  }
  std::vector<double> samples;
  for (int i = 0; i < iterations; ++i) {
    auto t0 = clock_type::now();
    pactor::process p(tag, noop);
    p.start();
    check_exit(p);
    samples.push_back(ms_since(t0));
  }
  return median(samples);
}

double max_processes_per_s(bool quick) {
  auto budget = quick ? 0.1 : 1.0;
  auto t0 = clock_type::now();
  int count = 0;
  while (ms_since(t0) < budget * 1000) {
    pactor::process p(pactor::with_fork, noop);
    p.start();
    check_exit(p);
    ++count;
  }
  return count / (ms_since(t0) / 1000);
}

// The child tells it is ready, then waits for EOF on its pipe.
void idle_child(int ready_fd, int release_fd) {
  char c = 'r';
  [[maybe_unused]] auto n = ::write(ready_fd, &c, 1);
  [[maybe_unused]] auto m = ::read(release_fd, &c, 1);
}

double pss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  double kb = 0;
  while (in >> key) {
    if (key == "Pss:") {
      in >> kb;
      return kb;
    }
    in.ignore(1 << 12, '\n');
  }
  throw std::runtime_error("no Pss in smaps_rollup");
}

// Private_Clean + Private_Dirty: what the process alone holds (its
// marginal memory; PSS adds shares of pages it shares).
double private_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  double kb = 0;
  int found = 0;
  while (in >> key) {
    if (key == "Private_Clean:" || key == "Private_Dirty:") {
      double v = 0;
      in >> v;
      kb += v;
      ++found;
    }
    in.ignore(1 << 12, '\n');
  }
  if (found != 2)
    throw std::runtime_error("no Private_* in smaps_rollup");
  return kb;
}

template <class Tag>
double idle_pss_kb(Tag tag) {
  std::vector<double> samples;
  for (int i = 0; i < 3; ++i) {
    int ready[2];
    int release[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(release, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2 failed");
    pactor::process p(tag, idle_child, ready[1], release[0]);
    p.pass_fds({ready[1], release[0]});
    p.start();
    char c;
    if (::read(ready[0], &c, 1) != 1)
      throw std::runtime_error("the idle child did not start");
    samples.push_back(pss_kb(p.pid()));
    for (int fd : {ready[0], ready[1], release[0], release[1]})
      ::close(fd);
    check_exit(p);
  }
  return median(samples);
}

// --- queues ---------------------------------------------------------

using payload = std::string;

void produce(pactor::queue<payload> q, std::size_t size, long count) {
  payload msg(size, 'x');
  for (long i = 0; i < count; ++i)
    q.put(msg);
  q.put(payload()); // end of stream
}

// One producer process, the parent consumes; returns messages per second,
// timed at the consumer from the first message to the last.
double queue_1p1c_msgs_per_s(std::size_t size, long count,
                             std::size_t capacity) {
  pactor::queue<payload> q(0, {.capacity_bytes = capacity});
  pactor::process p(pactor::with_fork, produce, q, size, count);
  p.start();
  auto first = q.get(std::chrono::seconds(30));
  auto t0 = clock_type::now();
  long got = 1;
  std::size_t bytes = first.size();
  for (;;) {
    auto m = q.get(std::chrono::seconds(30));
    if (m.empty())
      break;
    bytes += m.size();
    ++got;
  }
  double secs = ms_since(t0) / 1000;
  check_exit(p);
  if (got != count || bytes != size * static_cast<std::size_t>(count))
    throw std::runtime_error("the consumer received " + std::to_string(got)
                             + " of " + std::to_string(count) + " messages");
  return static_cast<double>(count - 1) / secs;
}

int consume_until_empty_message(pactor::queue<payload> q, std::size_t size) {
  for (;;) {
    auto m = q.get(std::chrono::seconds(30));
    if (m.empty())
      return 0;
    if (m.size() != size)
      return 1;
  }
}

void produce_no_end(pactor::queue<payload> q, std::size_t size, long count) {
  payload msg(size, 'x');
  for (long i = 0; i < count; ++i)
    q.put(msg);
}

double queue_4p4c_msgs_per_s(bool quick) {
  const long per_producer = quick ? 20000 : 1000000;
  pactor::queue<payload> q;
  std::vector<pactor::process> consumers;
  for (int i = 0; i < 4; ++i) {
    consumers.emplace_back(pactor::with_fork, consume_until_empty_message, q,
                           std::size_t{64});
    consumers.back().start();
  }
  auto t0 = clock_type::now();
  std::vector<pactor::process> producers;
  for (int i = 0; i < 4; ++i) {
    producers.emplace_back(pactor::with_fork, produce_no_end, q,
                           std::size_t{64}, per_producer);
    producers.back().start();
  }
  for (auto& p : producers)
    check_exit(p);
  for (int i = 0; i < 4; ++i)
    q.put(payload());
  for (auto& c : consumers)
    check_exit(c);
  double secs = ms_since(t0) / 1000;
  if (!q.empty())
    throw std::runtime_error("messages left in the queue");
  return 4.0 * static_cast<double>(per_producer) / secs;
}

void echo(pactor::queue<std::int64_t> in, pactor::queue<std::int64_t> out) {
  for (;;) {
    auto v = in.get(std::chrono::seconds(30));
    out.put(v);
    if (v < 0)
      return;
  }
}

// Round trips parent -> child -> parent over two queues; returns {p50, p99}.
std::pair<double, double> queue_pingpong_us(bool quick, bool spin) {
  pactor::queue_options opts;
  if (!spin)
    opts.spin = std::chrono::nanoseconds(0);
  pactor::queue<std::int64_t> there(0, opts);
  pactor::queue<std::int64_t> back(0, opts);
  pactor::process p(pactor::with_fork, echo, there, back);
  p.start();
  auto result = round_trip_us(quick ? 200 : 20000, 100, [&](int i) {
    there.put(i);
    if (back.get(std::chrono::seconds(30)) != i)
      throw std::runtime_error("a round trip returned the wrong value");
  });
  there.put(-1);
  (void)back.get(std::chrono::seconds(30));
  check_exit(p);
  return result;
}

// --- pipes ------------------------------------------------------------

void pipe_echo(pactor::connection<std::int64_t> c) {
  for (;;) {
    auto v = c.recv(std::chrono::seconds(30));
    c.send(v);
    if (v < 0)
      return;
  }
}

std::pair<double, double> pipe_pingpong_us(bool quick) {
  static std::optional<std::pair<double, double>> result;
  if (result)
    return *result;
  auto ends = pactor::pipe<std::int64_t>();
  auto& here = ends.first; // plain names: lambdas below capture them
  auto& there = ends.second;
  pactor::process p(pactor::with_fork, pipe_echo, there);
  p.start();
  there.close();
  result = round_trip_us(quick ? 200 : 20000, 100, [&](int i) {
    here.send(i);
    if (here.recv(std::chrono::seconds(30)) != i)
      throw std::runtime_error("a round trip returned the wrong value");
  });
  here.send(-1);
  (void)here.recv(std::chrono::seconds(30));
  check_exit(p);
  return *result;
}

// --- shared values --------------------------------------------------

void locked_increments(pactor::value<long> v, long n) {
  for (long i = 0; i < n; ++i)
    v.update([](long& x) { ++x; });
}

double shared_value_locked_incr_per_s(bool quick) {
  const long n = quick ? 20000 : 5000000;
  pactor::value<long> v(0);
  auto t0 = clock_type::now();
  pactor::process a(pactor::with_fork, locked_increments, v, n);
  pactor::process b(pactor::with_fork, locked_increments, v, n);
  a.start();
  b.start();
  check_exit(a);
  check_exit(b);
  double secs = ms_since(t0) / 1000;
  if (v.load() != 2 * n)
    throw std::runtime_error("lost increments: " + std::to_string(v.load())
                             + " of " + std::to_string(2 * n));
  return 2.0 * static_cast<double>(n) / secs;
}

// p50 and p99 come from the same run.
std::pair<double, double> spin_pingpong(bool quick) {
  static std::optional<std::pair<double, double>> result;
  if (!result)
    result = queue_pingpong_us(quick, true);
  return *result;
}

// The floor for a blocking round trip: two processes and two futex words,
// nothing else.
void futex_echo(std::atomic<std::uint32_t>* w, int n) {
  for (std::uint32_t i = 1; i <= static_cast<std::uint32_t>(n); ++i) {
    while (w[0].load() != i)
      pactor::detail::futex_wait(&w[0], i - 1, std::nullopt);
    w[1].store(i);
    pactor::detail::futex_wake_all(&w[1]);
  }
}

std::pair<double, double> futex_pingpong_us(bool quick) {
  auto seg = pactor::detail::segment::create(4096, "bench-futex");
  auto* w = static_cast<std::atomic<std::uint32_t>*>(seg.data());
  const int n = quick ? 200 : 20000;
  pactor::process p(pactor::with_fork, futex_echo, w, n);
  p.start();
  auto result = round_trip_us(n, 0, [&](int k) {
    auto i = static_cast<std::uint32_t>(k + 1);
    w[0].store(i);
    pactor::detail::futex_wake_all(&w[0]);
    while (w[1].load() != i)
      pactor::detail::futex_wait(&w[1], i - 1, std::nullopt);
  });
  check_exit(p);
  return result;
}

// --- actors ---------------------------------------------------------

struct count_msg {
  std::string text;
  MSGPACK_DEFINE(text)
};
struct how_many {
  MSGPACK_DEFINE()
};

// Counts messages; replies with the count.
class counting_actor {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const count_msg&) { ++n_; },
      [this](const how_many&) { return n_; },
    };
  }

private:
  long n_ = 0;
};

// The same, its count kept by warm restart: committed with every message
// (or every commit_every messages).
class warm_counting_actor {
public:
  struct state {
    long n = 0;
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const count_msg&) { ++st_.n; },
      [this](const how_many&) { return st_.n; },
    };
  }

private:
  state st_;
};

pactor::behavior echo_actor() {
  return pactor::behavior{[](const int& i) { return i; }};
}

// One actor system for every actor case (one per program).
pactor::actor_system& actor_sys() {
  static pactor::actor_system sys;
  return sys;
}

// commit_every 0: a cold actor; else warm, committing that often.
double actor_1p1c_msgs_per_s(bool quick, std::uint32_t commit_every = 0) {
  auto& sys = actor_sys();
  const long n = quick ? 20000 : 3000000;
  pactor::spawn_options opts;
  if (commit_every > 0) {
    opts.restart = pactor::restart_mode::warm;
    opts.commit_every = commit_every;
  }
  auto a = commit_every > 0 ? sys.spawn_with<warm_counting_actor>(opts)
                            : sys.spawn<counting_actor>();
  (void)sys.request<long>(a, how_many{}, std::chrono::seconds(10)); // ready
  count_msg m{std::string(62, 'x')}; // 64 bytes encoded (fixarray, str8)
  auto t0 = clock_type::now();
  for (long i = 0; i < n; ++i)
    sys.send(a, m);
  auto got = sys.request<long>(a, how_many{}, std::chrono::seconds(60));
  double secs = ms_since(t0) / 1000;
  if (got != n)
    throw std::runtime_error("the actor counted " + std::to_string(got) + " of "
                             + std::to_string(n));
  sys.stop(a);
  (void)sys.join(a, std::chrono::seconds(10));
  return static_cast<double>(n) / secs;
}

std::pair<double, double> actor_pingpong_us(bool quick) {
  static std::optional<std::pair<double, double>> result;
  if (result)
    return *result;
  auto& sys = actor_sys();
  auto a = sys.spawn(echo_actor);
  result = round_trip_us(quick ? 200 : 20000, 100, [&](int i) {
    if (sys.request<int>(a, i, std::chrono::seconds(10)) != i)
      throw std::runtime_error("wrong echo");
  });
  sys.stop(a);
  (void)sys.join(a, std::chrono::seconds(10));
  return *result;
}

// The same round trip with no spinning on either side: every message wakes
// a sleeping process (the VM's wake-up cost decides).
double actor_pingpong_blocking_us(bool quick) {
  auto& sys = actor_sys();
  auto a = sys.spawn_with({.spin = std::chrono::nanoseconds(0)}, echo_actor);
  sys.spin(std::chrono::nanoseconds(0));
  auto r = round_trip_us(quick ? 100 : 5000, 50, [&](int i) {
    if (sys.request<int>(a, i, std::chrono::seconds(10)) != i)
      throw std::runtime_error("wrong echo");
  });
  sys.spin(std::chrono::microseconds(50));
  sys.stop(a);
  (void)sys.join(a, std::chrono::seconds(10));
  return r.first;
}

// From SIGKILL of a supervised child to its restarted incarnation answering
// a request (sent right after the kill: it waits in the child's mailbox,
// which stays open across the restart). {p50, p99} in ms.
std::pair<double, double> supervisor_restart_ms(bool quick) {
  static std::optional<std::pair<double, double>> result;
  if (result)
    return *result;
  auto& sys = actor_sys();
  pactor::supervisor_spec spec;
  spec.intensity = 1000000;
  spec.period = std::chrono::milliseconds(1000);
  spec.children.push_back(pactor::worker("echo", echo_actor));
  auto sup = pactor::spawn_supervisor(sys, spec);
  auto child = sup.which_children().at(0).ref;
  auto us = round_trip_us(quick ? 20 : 500, 5, [&](int i) {
    auto pid = sys.pid(child);
    if (pid <= 0 || ::kill(pid, SIGKILL) != 0)
      throw std::runtime_error("no child to kill");
    if (sys.request<int>(child, i, std::chrono::seconds(10)) != i)
      throw std::runtime_error("wrong echo");
  });
  sys.stop(sup.ref());
  (void)sys.join(sup.ref(), std::chrono::seconds(10));
  result = std::make_pair(us.first / 1000, us.second / 1000);
  return *result;
}

// The main job's throughput (examples/pipeline, next to this program's
// directory): items/s as it reports them.
double pipeline_items_per_s(bool quick, int work, int kill_every_ms) {
  char self[4096] = {};
  auto n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    throw std::runtime_error("cannot find this program's path");
  std::string dir(self, static_cast<std::size_t>(n));
  dir = dir.substr(0, dir.rfind('/'));
  auto cmd = dir + "/../examples/pipeline --items "
             + std::to_string(quick ? 20000 : 200000) + " --work "
             + std::to_string(work) + " --kill-every "
             + std::to_string(kill_every_ms) + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> out(::popen(cmd.c_str(), "r"),
                                            ::pclose);
  if (!out)
    throw std::runtime_error("cannot run " + cmd);
  char line[512];
  double rate = -1;
  bool lost_none = false;
  while (std::fgets(line, sizeof line, out.get()) != nullptr) {
    std::string l(line);
    if (l.rfind("lost:", 0) == 0)
      lost_none = l.find(" 0\n") != std::string::npos;
    if (l.rfind("throughput:", 0) == 0) {
      std::string digits;
      for (char c : l.substr(11)) {
        if (c == ',' || (c == ' ' && digits.empty()))
          continue;
        if (c < '0' || c > '9')
          break;
        digits += c;
      }
      rate = std::stod(digits.empty() ? "-1" : digits);
    }
  }
  if (rate < 0 || !lost_none)
    throw std::runtime_error("the pipeline did not report a clean run: " + cmd);
  return rate;
}

// Spawn to first answer, one actor at a time.
double actor_spawn_ms(bool quick) {
  auto& sys = actor_sys();
  std::vector<double> samples;
  for (int i = 0; i < (quick ? 5 : 200); ++i) {
    auto t0 = clock_type::now();
    auto a = sys.spawn(echo_actor);
    (void)sys.request<int>(a, 1, std::chrono::seconds(10));
    samples.push_back(ms_since(t0));
    sys.kill(a);
    (void)sys.join(a, std::chrono::seconds(10));
  }
  return median(samples);
}

// 1,000 actors spawned, then every one answers; seconds for all of it.
double actors_1000_spawn_s(bool quick) {
  auto& sys = actor_sys();
  const int n = quick ? 50 : 1000;
  auto t0 = clock_type::now();
  std::vector<pactor::actor_ref> refs;
  refs.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    refs.push_back(sys.spawn(echo_actor));
  for (int i = 0; i < n; ++i)
    if (sys.request<int>(refs[static_cast<std::size_t>(i)], i,
                         std::chrono::seconds(30))
        != i)
      throw std::runtime_error("wrong echo");
  double secs = ms_since(t0) / 1000;
  if (sys.live_actors() < static_cast<std::uint64_t>(n))
    throw std::runtime_error("not every actor is alive");
  for (auto& r : refs)
    sys.kill(r);
  for (auto& r : refs)
    (void)sys.join(r, std::chrono::seconds(10));
  return secs;
}

double idle_actor_kb(bool priv) {
  auto& sys = actor_sys();
  std::vector<double> samples;
  for (int i = 0; i < 3; ++i) {
    auto a = sys.spawn(echo_actor);
    (void)sys.request<int>(a, 1, std::chrono::seconds(10));
    samples.push_back(priv ? private_kb(sys.pid(a)) : pss_kb(sys.pid(a)));
    sys.kill(a);
    (void)sys.join(a, std::chrono::seconds(10));
  }
  return median(samples);
}

// ---- manager ----------------------------------------------------------------

struct mgr_probe {
  int n = 0;
  bool set = false;
  MSGPACK_DEFINE(n, set)
};
struct mgr_count {
  int n = 0;
  bool pipelined = false; // add_later, then one confirm
  MSGPACK_DEFINE(n, pipelined)
};

// A client actor (its own process): on mgr_probe, n timed gets or sets
// through a dict proxy; replies with the median in microseconds.
pactor::behavior dict_client(pactor::dict_proxy<std::string, long> d) {
  return pactor::behavior{[d](const mgr_probe& p) {
    std::vector<double> us;
    us.reserve(static_cast<std::size_t>(p.n));
    long sum = 0;
    for (int i = 0; i < p.n; ++i) {
      auto key = "k" + std::to_string(i % 64);
      auto t0 = clock_type::now();
      if (p.set)
        d.set(key, i);
      else
        sum += d.get(key).value_or(0);
      us.push_back(ms_since(t0) * 1000.0);
    }
    (void)sum;
    return median(us);
  }};
}

// On mgr_count: n synchronous atomic increments; replies with n.
pactor::behavior counter_client(pactor::counter_proxy c) {
  return pactor::behavior{[c](const mgr_count& m) {
    if (m.pipelined) {
      for (int i = 0; i < m.n; ++i)
        c.add_later(1);
      c.confirm();
      return m.n;
    }
    for (int i = 0; i < m.n; ++i)
      c.add(1);
    return m.n;
  }};
}

std::string bench_data_dir(const char* leaf) {
  auto d = std::filesystem::temp_directory_path()
           / ("pactor-bench-" + std::to_string(::getpid()) + "-" + leaf);
  std::filesystem::remove_all(d);
  return d.string();
}

/// Median us of a dict get (set) from a client actor.
double manager_dict_us(bool quick, bool set, bool persist, bool spin) {
  auto& sys = actor_sys();
  auto dir = persist ? bench_data_dir("dict") : std::string();
  pactor::manager_options mo;
  mo.data_dir = dir;
  if (!spin)
    mo.spin = std::chrono::nanoseconds(0);
  double result = 0;
  {
    pactor::manager mgr(sys, mo);
    auto d = mgr.dict<std::string, long>("d");
    for (int i = 0; i < 64; ++i)
      d.set("k" + std::to_string(i), i);
    pactor::spawn_options so;
    if (!spin)
      so.spin = std::chrono::nanoseconds(0);
    auto client = sys.spawn_with(so, dict_client, d);
    (void)sys.request<double>(client, mgr_probe{200, set},
                              std::chrono::seconds(60));
    result = sys.request<double>(client, mgr_probe{quick ? 500 : 20000, set},
                                 std::chrono::seconds(120));
    sys.stop(client);
    (void)sys.join(client, std::chrono::seconds(10));
    if (!set && d.at("k63") != 63)
      throw std::runtime_error("manager dict holds the wrong value");
  }
  if (persist)
    std::filesystem::remove_all(dir);
  return result;
}

/// Increments per second: 2 client actors, n synchronous increments each.
double manager_counter_per_s(bool quick, bool persist, bool pipelined = false) {
  auto& sys = actor_sys();
  auto dir = persist ? bench_data_dir("counter") : std::string();
  double rate = 0;
  {
    pactor::manager mgr(sys, {.data_dir = dir});
    auto c = mgr.counter("c");
    const int n = quick ? 2000 : 200000;
    auto a = sys.spawn(counter_client, c);
    auto b = sys.spawn(counter_client, c);
    (void)sys.request<int>(a, mgr_count{100}, std::chrono::seconds(60));
    c.set(0);
    auto t0 = clock_type::now();
    // One client asked from this thread, the other from a helper actor's
    // request: both run at once.
    auto asker = sys.spawn(
      +[](pactor::actor_ref other, int count, bool pipe) {
        return pactor::behavior{[other, count, pipe](const mgr_count&) {
          int done = pactor::this_actor::request<int>(
            other, mgr_count{count, pipe}, std::chrono::seconds(600));
          pactor::this_actor::send(pactor::this_actor::sender(),
                                   mgr_count{done});
        }};
      },
      b, n, pipelined);
    sys.send(asker, mgr_count{0});
    (void)sys.request<int>(a, mgr_count{n, pipelined},
                           std::chrono::seconds(600));
    if (sys.receive<mgr_count>(std::chrono::seconds(600))
          .value_or(mgr_count{})
          .n
        != n)
      throw std::runtime_error("the second counter client did not finish");
    rate = 2.0 * n / (ms_since(t0) / 1000.0);
    for (auto r : {a, b, asker}) {
      sys.stop(r);
      (void)sys.join(r, std::chrono::seconds(10));
    }
    if (c.get() != 2L * n)
      throw std::runtime_error("manager counter lost or doubled increments");
  }
  if (persist)
    std::filesystem::remove_all(dir);
  return rate;
}

// ---- pool and executor ----------------------------------------------------

/// 0, 1, ..., n - 1, computed as the pool reads them (hand-written: clang
/// 14, which `make tidy` uses, cannot parse std::views::iota from
/// libstdc++ 12).
class counting {
public:
  explicit counting(long n) : n_(n) {
  }
  class iterator {
  public:
    using value_type = long;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(long i) : i_(i) {
    }
    long operator*() const {
      return i_;
    }
    iterator& operator++() {
      ++i_;
      return *this;
    }
    iterator operator++(int) {
      return iterator(i_++);
    }
    bool operator==(const iterator& o) const {
      return i_ == o.i_;
    }

  private:
    long i_ = 0;
  };
  [[nodiscard]] iterator begin() const {
    return iterator(0);
  }
  [[nodiscard]] iterator end() const {
    return iterator(n_);
  }
  [[nodiscard]] std::size_t size() const {
    return static_cast<std::size_t>(n_);
  }

private:
  long n_;
};

long tiny_square(long x) {
  return x * x;
}

void check_squares(const std::vector<long>& got, long n) {
  if (static_cast<long>(got.size()) != n || got[n / 2] != (n / 2) * (n / 2)
      || got.back() != (n - 1) * (n - 1))
    throw std::runtime_error("pool results are wrong");
}

/// Median tasks/s of `runs` calls of `call(n)` (each timed alone) on a pool
/// of 2 made (and warmed up) before.
template <class Call>
double pool_rate(long n, int runs, Call call) {
  std::vector<double> rates;
  for (int r = 0; r < runs; ++r) {
    auto t0 = clock_type::now();
    call(n);
    rates.push_back(static_cast<double>(n) / (ms_since(t0) / 1000.0));
  }
  return median(rates);
}

pactor::pool& bench_pool() {
  static pactor::pool p(2);
  static bool warm = [] {
    (void)p.map(tiny_square, counting(1000));
    return true;
  }();
  (void)warm;
  return p;
}

double pool_map_tiny_per_s(bool quick) {
  auto& p = bench_pool();
  return pool_rate(quick ? 200000 : 2000000, quick ? 1 : 5, [&p](long n) {
    check_squares(p.map(tiny_square, counting(n)), n);
  });
}

double pool_map_chunk1_per_s(bool quick) {
  auto& p = bench_pool();
  return pool_rate(quick ? 2000 : 20000, quick ? 1 : 7, [&p](long n) {
    check_squares(p.map(tiny_square, counting(n), 1), n);
  });
}

double pool_imap_unordered_per_s(bool quick) {
  auto& p = bench_pool();
  return pool_rate(quick ? 2000 : 20000, quick ? 1 : 7, [&p](long n) {
    long sum = 0;
    for (long v : p.imap_unordered(tiny_square, counting(n)))
      sum += v;
    if (sum != (n - 1) * n * (2 * n - 1) / 6)
      throw std::runtime_error("imap_unordered results are wrong");
  });
}

double executor_submit_per_s(bool quick) {
  pactor::executor ex(2);
  (void)ex.submit(tiny_square, 1L).get();
  std::vector<pactor::future<long>> fs;
  return pool_rate(quick ? 2000 : 20000, quick ? 1 : 7, [&](long n) {
    fs.clear();
    fs.reserve(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i)
      fs.push_back(ex.submit(tiny_square, i));
    long sum = 0;
    for (auto& f : fs)
      sum += f.get();
    if (sum != (n - 1) * n * (2 * n - 1) / 6)
      throw std::runtime_error("executor results are wrong");
  });
}

std::vector<bench_case> all_cases() {
  return {
    {"spawn_join_ms_fork", "ms",
     [](bool quick) {
       return spawn_join_ms(pactor::with_fork, quick ? 5 : 500);
     }},
    {"spawn_join_ms_spawn", "ms",
     [](bool quick) {
       return spawn_join_ms(pactor::with_spawn, quick ? 5 : 200);
     }},
    {"spawn_join_ms_forkserver", "ms",
     [](bool quick) {
       return spawn_join_ms(pactor::with_forkserver, quick ? 5 : 500);
     }},
    {"max_processes_spawned_1s", "processes", max_processes_per_s},
    // Before the queue cases: PSS is measured for a child of a small parent.
    {"idle_process_pss_kb", "kB",
     [](bool) { return idle_pss_kb(pactor::with_fork); }},
    {"idle_process_pss_kb_spawn", "kB",
     [](bool) { return idle_pss_kb(pactor::with_spawn); }},
    {"queue_1p1c_64B_msgs_per_s", "msgs/s",
     [](bool quick) {
       return queue_1p1c_msgs_per_s(64, quick ? 20000 : 5000000, 1 << 20);
     }},
    {"queue_1p1c_4KB_msgs_per_s", "msgs/s",
     [](bool quick) {
       return queue_1p1c_msgs_per_s(4096, quick ? 5000 : 1000000, 1 << 20);
     }},
    {"queue_1p1c_1MB_MB_per_s", "MB/s",
     [](bool quick) {
       auto per_s = queue_1p1c_msgs_per_s(1 << 20, quick ? 20 : 3000, 8 << 20);
       return per_s * 1.048576; // 1 MiB messages, MB = 10^6 bytes
     }},
    {"queue_4p4c_64B_msgs_per_s", "msgs/s", queue_4p4c_msgs_per_s},
    {"queue_pingpong_rtt_us_p50", "us",
     [](bool quick) { return spin_pingpong(quick).first; }},
    {"queue_pingpong_rtt_us_p99", "us",
     [](bool quick) { return spin_pingpong(quick).second; }},
    {"queue_pingpong_blocking_rtt_us_p50", "us",
     [](bool quick) { return queue_pingpong_us(quick, false).first; }},
    {"queue_pingpong_blocking_rtt_us_p50", "us",
     [](bool quick) { return futex_pingpong_us(quick).first; }, "bare"},
    {"shared_value_locked_incr_per_s", "incr/s",
     shared_value_locked_incr_per_s},
    {"pipe_pingpong_rtt_us_p50", "us",
     [](bool quick) { return pipe_pingpong_us(quick).first; }},
    {"pipe_pingpong_rtt_us_p99", "us",
     [](bool quick) { return pipe_pingpong_us(quick).second; }},
    {"actor_1p1c_64B_msgs_per_s", "msgs/s",
     [](bool quick) { return actor_1p1c_msgs_per_s(quick); }},
    {"actor_1p1c_64B_msgs_per_s_warm", "msgs/s",
     [](bool quick) { return actor_1p1c_msgs_per_s(quick, 1); }},
    {"actor_1p1c_64B_msgs_per_s_warm_batch64", "msgs/s",
     [](bool quick) { return actor_1p1c_msgs_per_s(quick, 64); }},
    {"actor_pingpong_rtt_us_p50", "us",
     [](bool quick) { return actor_pingpong_us(quick).first; }},
    {"actor_pingpong_rtt_us_p99", "us",
     [](bool quick) { return actor_pingpong_us(quick).second; }},
    {"actor_pingpong_blocking_rtt_us_p50", "us", actor_pingpong_blocking_us},
    {"actor_spawn_ms", "ms", actor_spawn_ms},
    {"actors_1000_spawn_s", "s", actors_1000_spawn_s},
    {"idle_actor_pss_kb", "kB", [](bool) { return idle_actor_kb(false); }},
    {"idle_actor_private_kb", "kB", [](bool) { return idle_actor_kb(true); }},
    {"pipeline_items_per_s", "items/s",
     [](bool quick) { return pipeline_items_per_s(quick, 0, 0); }},
    {"pipeline_items_per_s_work5000", "items/s",
     [](bool quick) { return pipeline_items_per_s(quick, 5000, 0); }},
    {"pipeline_items_per_s_work5000_chaos20ms", "items/s",
     [](bool quick) { return pipeline_items_per_s(quick, 5000, 20); }},
    {"manager_dict_get_us", "us",
     [](bool quick) { return manager_dict_us(quick, false, false, true); }},
    {"manager_dict_set_us", "us",
     [](bool quick) { return manager_dict_us(quick, true, false, true); }},
    {"manager_dict_get_us_nospin", "us",
     [](bool quick) { return manager_dict_us(quick, false, false, false); }},
    {"manager_dict_set_us_nospin", "us",
     [](bool quick) { return manager_dict_us(quick, true, false, false); }},
    {"manager_dict_set_us_persist", "us",
     [](bool quick) { return manager_dict_us(quick, true, true, true); }},
    {"manager_counter_incr_per_s", "incr/s",
     [](bool quick) { return manager_counter_per_s(quick, false); }},
    {"manager_counter_incr_per_s_persist", "incr/s",
     [](bool quick) { return manager_counter_per_s(quick, true); }},
    {"manager_counter_incr_per_s_pipelined", "incr/s",
     [](bool quick) { return manager_counter_per_s(quick, false, true); }},
    {"pool_map_tiny_tasks_per_s", "tasks/s", pool_map_tiny_per_s},
    {"pool_map_tiny_tasks_per_s_chunk1", "tasks/s", pool_map_chunk1_per_s},
    {"pool_imap_unordered_tasks_per_s", "tasks/s", pool_imap_unordered_per_s},
    {"executor_submit_tasks_per_s", "tasks/s", executor_submit_per_s},
    {"supervisor_restart_ms_p50", "ms",
     [](bool quick) { return supervisor_restart_ms(quick).first; }},
    {"supervisor_restart_ms_p99", "ms",
     [](bool quick) { return supervisor_restart_ms(quick).second; }},
  };
}

int run_benchmarks(int argc, char** argv) {
  CLI::App app{"pactor-bench: pactor's benchmarks as JSON lines"};
  bool quick = false;
  bool list = false;
  std::string filter = ".*";
  app.add_flag("--quick", quick, "every case well under a second (CI smoke)");
  app.add_flag("--list", list, "list the benchmark names");
  app.add_option("--filter", filter, "run only names matching this regex");
  CLI11_PARSE(app, argc, argv);

  std::regex re(filter);
  int failures = 0;
  // The actor system starts first, while this program is small: its node
  // forks every actor from its own image (docs/design/actors.md).
  if (!list)
    for (auto& c : all_cases())
      if (c.name.find("actor") != std::string::npos
          && std::regex_search(c.name, re)) {
        (void)actor_sys();
        break;
      }
  for (auto& c : all_cases()) {
    if (!std::regex_search(c.name, re))
      continue;
    if (list) {
      std::printf("%s\n", c.name.c_str());
      continue;
    }
    std::fprintf(stderr, "pactor-bench: %s ...\n", c.name.c_str());
    try {
      double value = c.run(quick);
      std::printf("{\"bench\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", "
                  "\"impl\": \"%s\"}\n",
                  c.name.c_str(), value, c.unit.c_str(), c.impl.c_str());
      std::fflush(stdout);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pactor-bench: %s FAILED: %s\n", c.name.c_str(),
                   e.what());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  try {
    return run_benchmarks(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pactor-bench: %s\n", e.what());
    return 2;
  }
}
