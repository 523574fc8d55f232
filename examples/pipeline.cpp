// The main job (`make run`): a supervised pipeline, source -> a pool of
// worker actors -> sink, hashing a stream of items while a chaos monkey
// SIGKILLs random actors of it (workers, the source, the sink and the
// workers' supervisor). The source and the sink keep their progress with
// warm restart, so a kill costs a redelivery; the sink drops the repeats
// by item id. It ends with a summary: items in, items out, lost, the
// repeats dropped, restarts per child, throughput.
//
//     pipeline [--items N] [--workers W] [--kill-every MS] [--work ROUNDS]
//
// Supervision tree (the OS tree is flat: every actor is a child of the node):
//
//     main's embedded supervisor (one_for_one)
//       ├─ sink                 warm, dedups by item id
//       ├─ workers (supervisor, one_for_one)
//       │    ├─ worker-1 .. worker-W   cold: hash and forward
//       └─ source               warm: its cursor survives

#include <pactor/pactor.hpp>

#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using pactor::actor_ref;

namespace {

struct item {
  std::uint64_t id = 0;
  MSGPACK_DEFINE(id)
};
struct result {
  std::uint64_t id = 0;
  std::uint64_t hash = 0;
  MSGPACK_DEFINE(id, hash)
};
// The source's self-sent "go on": numbered, so that a copy a redelivery
// sends again is recognised and dropped.
struct pump {
  std::uint64_t seq = 0;
  MSGPACK_DEFINE(seq)
};
struct progress {
  MSGPACK_DEFINE()
};

// The work per item: `rounds` of a 64-bit mix (splitmix64).
std::uint64_t hash_item(std::uint64_t id, int rounds) {
  std::uint64_t x = id;
  for (int i = 0; i < rounds; ++i) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
  }
  return x;
}

// Emits items 1..n round-robin to the workers, `chunk` per pump message.
class source {
public:
  struct state {
    std::uint64_t next = 1;     // the next item id to emit
    std::uint64_t pump_seq = 0; // the pump it expects
  };
  source(std::uint64_t n, std::vector<actor_ref> workers)
      : n_(n), workers_(std::move(workers)) {
  }
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{[this](const pump& p) {
      if (p.seq != st_.pump_seq) // a repeat of a pump already handled
        return;
      auto end = std::min(n_ + 1, st_.next + chunk);
      for (auto id = st_.next; id < end; ++id)
        pactor::this_actor::send(workers_[id % workers_.size()], item{id});
      st_.next = end;
      ++st_.pump_seq;
      if (st_.next <= n_)
        pactor::this_actor::send(pactor::this_actor::self(),
                                 pump{st_.pump_seq});
    }};
  }

private:
  static constexpr std::uint64_t chunk = 256;
  std::uint64_t n_;
  std::vector<actor_ref> workers_;
  state st_;
};

// Hashes an item and hands the result to the sink (cold: nothing to keep;
// an item it was handling when killed comes again).
class worker {
public:
  worker(actor_ref sink, int rounds) : sink_(sink), rounds_(rounds) {
  }
  pactor::behavior behavior() {
    return pactor::behavior{[this](const item& i) {
      pactor::this_actor::send(sink_, result{i.id, hash_item(i.id, rounds_)});
    }};
  }

private:
  actor_ref sink_;
  int rounds_;
};

// Takes each result once, in its warm state with the checksum. Each worker
// gets increasing ids and sends its results in order, and a redelivery
// (of an item to a worker, or of a pump to the source) repeats ids the
// worker has passed: so a result is new iff its id is above the last one
// taken from that worker. (Message origins, pactor::dedup, would catch the
// worker's repeats but not the source's: those are new messages to the
// worker.)
class sink {
public:
  struct state {
    std::uint64_t taken = 0;
    std::uint64_t repeats = 0;
    std::uint64_t checksum = 0; // xor of the hashes taken
    std::uint64_t highest = 0;
    std::map<std::uint64_t, std::uint64_t> last; // worker id -> last item id
    MSGPACK_DEFINE(taken, repeats, checksum, highest, last)
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const result& r) {
        auto& last = st_.last[pactor::this_actor::sender().id()];
        if (r.id <= last) {
          ++st_.repeats;
          return;
        }
        last = r.id;
        ++st_.taken;
        st_.checksum ^= r.hash;
        st_.highest = std::max(st_.highest, r.id);
      },
      [this](const progress&) { return st_; },
    };
  }

private:
  state st_;
};

std::string with_commas(std::uint64_t v) {
  auto s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  CLI::App app{"pactor pipeline: source -> workers -> sink under supervision, "
               "with a chaos monkey"};
  std::uint64_t items = 200000;
  int workers = 4;
  int kill_every_ms = 20;
  int rounds = 5000; // about 25 us of work per item
  app.add_option("--items", items, "items to process")
    ->check(CLI::Range(1, 1 << 30));
  app.add_option("--workers", workers, "worker actors")
    ->check(CLI::Range(1, 64));
  app
    .add_option("--kill-every", kill_every_ms,
                "ms between SIGKILLs of a random actor (0: no chaos)")
    ->check(CLI::Range(0, 100000));
  app.add_option("--work", rounds, "hash rounds per item")
    ->check(CLI::Range(0, 1000000));
  CLI11_PARSE(app, argc, argv);

  // A message that was being handled at several kills in a row is not
  // poison here: chaos is the point.
  pactor::actor_system_options sys_opts;
  sys_opts.max_deliveries = 1000000;
  pactor::actor_system sys(sys_opts);

  pactor::supervisor_spec top;
  top.intensity = 100000; // the monkey kills often: never give up here
  top.period = 1s;
  auto sink_spec = pactor::worker<sink>("sink");
  sink_spec.options.commit_every = 32;
  top.children.push_back(sink_spec);
  pactor::supervisor root(sys, top);
  auto sink_ref = root.child("sink");

  pactor::supervisor_spec pool;
  pool.intensity = 100000;
  pool.period = 1s;
  pool.name = "workers";
  for (int w = 1; w <= workers; ++w)
    pool.children.push_back(
      pactor::worker<worker>("worker-" + std::to_string(w), sink_ref, rounds));
  pactor::supervisor_ref pool_sup(
    root.start_child(pactor::supervisor_child("workers", pool)));
  std::vector<actor_ref> worker_refs;
  for (const auto& c : pool_sup.which_children())
    worker_refs.push_back(c.ref);
  auto source_ref
    = root.start_child(pactor::worker<source>("source", items, worker_refs));

  // The expected checksum, computed here.
  std::uint64_t expected = 0;
  for (std::uint64_t id = 1; id <= items; ++id)
    expected ^= hash_item(id, rounds);

  // The chaos monkey: SIGKILL to a random actor of the pipeline.
  std::vector<actor_ref> targets{sink_ref, pool_sup.ref(), source_ref};
  targets.insert(targets.end(), worker_refs.begin(), worker_refs.end());
  std::map<std::uint64_t, int> kills;
  std::atomic<bool> done{false};
  std::thread monkey([&] {
    if (kill_every_ms == 0)
      return;
    std::mt19937 rng(std::random_device{}());
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kill_every_ms));
      auto who = targets[rng() % targets.size()];
      try {
        if (auto pid = sys.pid(who); pid > 0 && ::kill(pid, SIGKILL) == 0)
          ++kills[who.id()];
      } catch (const std::exception&) {
      }
    }
  });

  const bool tty = ::isatty(STDOUT_FILENO) != 0;
  auto t0 = std::chrono::steady_clock::now();
  auto last_line = t0;
  sys.send(source_ref, pump{0});
  sink::state s;
  int failures = 0;
  while (s.taken < items) {
    std::this_thread::sleep_for(tty ? 100ms : 20ms); // a progress display
    try {
      s = sys.request<sink::state>(sink_ref, progress{}, 10s);
    } catch (const std::exception& e) {
      if (++failures > 20) {
        std::fprintf(stderr, "pipeline: the sink does not answer: %s\n",
                     e.what());
        break;
      }
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    double secs = std::chrono::duration<double>(now - t0).count();
    int total_kills = 0;
    for (auto& [id, k] : kills)
      total_kills += k;
    if (tty) {
      int width = 30;
      auto filled = static_cast<int>(width * s.taken / items);
      std::printf(
        "\r[%s%s] %3d%% %s/%s items  %s items/s  %d kills ",
        std::string(static_cast<std::size_t>(filled), '#').c_str(),
        std::string(static_cast<std::size_t>(width - filled), ' ').c_str(),
        static_cast<int>(100 * s.taken / items), with_commas(s.taken).c_str(),
        with_commas(items).c_str(),
        with_commas(
          static_cast<std::uint64_t>(static_cast<double>(s.taken) / secs))
          .c_str(),
        total_kills);
      std::fflush(stdout);
    } else if (now - last_line >= 1s || s.taken >= items) {
      last_line = now;
      std::printf("progress: %s/%s items, %d kills\n",
                  with_commas(s.taken).c_str(), with_commas(items).c_str(),
                  total_kills);
      std::fflush(stdout);
    }
  }
  auto secs
    = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
        .count();
  done.store(true);
  monkey.join();
  if (tty)
    std::printf("\n");

  // Restarts per child, from both supervisors.
  std::map<std::string, std::uint32_t> restarts;
  for (const auto& c : root.which_children())
    restarts[c.id] = c.restarts;
  for (const auto& c : pool_sup.which_children())
    restarts[c.id] = c.restarts;
  int total_kills = 0;
  for (auto& [id, k] : kills)
    total_kills += k;
  const auto lost = items - std::min(items, s.taken);
  const bool checksum_ok = s.checksum == expected && s.highest == items;
  std::printf("items in:   %s\n", with_commas(items).c_str());
  std::printf("items out:  %s (each once; checksum %s)\n",
              with_commas(s.taken).c_str(), checksum_ok ? "ok" : "WRONG");
  std::printf("lost:       %s\n", with_commas(lost).c_str());
  std::printf("duplicates: 0 in the output (%s redelivered copies dropped by "
              "the sink)\n",
              with_commas(s.repeats).c_str());
  std::printf("kills:      %d (every %d ms)\n", total_kills, kill_every_ms);
  std::printf("restarts:  ");
  for (auto& [id, n] : restarts)
    std::printf(" %s %u", id.c_str(), n);
  std::printf("\n");
  std::printf(
    "throughput: %s items/s (%.2f s)\n",
    with_commas(static_cast<std::uint64_t>(static_cast<double>(s.taken) / secs))
      .c_str(),
    secs);
  root.stop();
  return lost == 0 && checksum_ok ? 0 : 1;
}
