// pactor-bench: prints one JSON line per benchmark (../shared/BENCH_SCHEMA.md).
// Progress goes to stderr. Every case checks its results and the program
// exits non-zero if one is wrong.

#include <pactor/pactor.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <functional>
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
    {"idle_process_pss_kb", "kB",
     [](bool) { return idle_pss_kb(pactor::with_fork); }},
    {"idle_process_pss_kb_spawn", "kB",
     [](bool) { return idle_pss_kb(pactor::with_spawn); }},
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
                  "\"impl\": \"pactor\"}\n",
                  c.name.c_str(), value, c.unit.c_str());
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
