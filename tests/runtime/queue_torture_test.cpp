// The queue torture test: producers and consumers are killed with SIGKILL at
// random moments and at armed crash points, over and over, while the parent
// replaces them; afterwards every invariant is checked:
//  - no hang (every wait is bounded; the test has a deadline),
//  - no corruption (every message decodes and is one that was sent),
//  - every message whose put returned is received exactly once, except at
//    most one per killed consumer (the one it took before dying),
//  - no duplicates; per producer, each consumer sees increasing sequences.
// PACTOR_TORTURE_SECONDS sets the length (default 3; `make torture` runs 60).

#include <pactor/runtime/process.hpp>
#include <pactor/runtime/queue.hpp>

#include "hygiene.hpp"
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <optional>
#include <poll.h>
#include <random>
#include <set>
#include <string>
#include <sys/mman.h>
#include <vector>

namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;

namespace {

constexpr int max_instances = 1 << 17; // producer instances (long runs)
constexpr int max_log = 1 << 23;
// Producers stop once this many messages were received (bounds memory).
constexpr std::uint64_t message_budget = max_log / 2;

// Shared with the (forked) children through an anonymous shared mapping.
struct shared_state {
  std::atomic<std::int64_t> last_returned[max_instances]; // per producer
  std::atomic<std::uint64_t> log_len;
  // message id + 1, written last: 0 = a consumer died before writing it
  std::atomic<std::uint64_t> log_id[max_log];
  std::uint32_t log_consumer[max_log]; // consumer instance that received it
};

struct shape {
  const char* name;
  int producers;
  int consumers;
  std::size_t capacity;
  std::size_t min_size;
  std::size_t max_size;
};

std::ostream& operator<<(std::ostream& os, const shape& s) {
  return os << s.name;
}

const shape shapes[] = {
  {"1p1c_tiny", 1, 1, 4096, 0, 16},
  {"4p4c_tiny", 4, 4, 4096, 0, 16},
  {"2p2c_large", 2, 2, 1 << 16, 1000, 12000},
  {"3p1c_nearly_full", 3, 1, 4096, 100, 1500},
  // Records up to twice the ring: about half travel in side blocks.
  {"2p2c_side_blocks", 2, 2, 4096, 10, 8000},
};

// A message: id = (producer instance << 32) | sequence, plus filler whose
// bytes are derived from the id (so corruption is visible).
struct message {
  std::uint64_t id = 0;
  std::string filler;
  MSGPACK_DEFINE(id, filler)
};

std::string filler_for(std::uint64_t id, std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    s[i] = static_cast<char>('a' + (id + i) % 26);
  return s;
}

// A crash point to arm in a child (0 = none), with a countdown.
void maybe_arm(std::mt19937_64& rng, bool producer) {
  // 131/132: the side-block windows (reached only by records larger than
  // the ring).
  static const int put_points[] = {101, 102, 103, 131};
  static const int get_points[] = {111, 112, 113, 132};
  if (rng() % 2 == 0)
    return;
  int point = producer ? put_points[rng() % 4] : get_points[rng() % 4];
  pactor::detail::crash_point_arm(point, 1 + static_cast<long>(rng() % 200));
}

void producer_main(pactor::queue<message> q, shared_state* st, int instance,
                   std::size_t min_size, std::size_t max_size,
                   std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  maybe_arm(rng, true);
  for (std::int64_t seq = 0;; ++seq) {
    if (st->log_len.load(std::memory_order_relaxed) >= message_budget)
      return;
    auto id = (static_cast<std::uint64_t>(instance) << 32)
              | static_cast<std::uint64_t>(seq);
    auto size = min_size + rng() % (max_size - min_size + 1);
    try {
      q.put(message{id, filler_for(id, size)}, 5s);
    } catch (const pactor::queue_closed&) {
      return;
    }
    st->last_returned[instance].store(seq, std::memory_order_release);
  }
}

int consumer_main(pactor::queue<message> q, shared_state* st, int instance,
                  std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  maybe_arm(rng, false);
  for (;;) {
    message m;
    try {
      m = q.get(5s);
    } catch (const pactor::queue_closed&) {
      return 0;
    } catch (const pactor::queue_empty&) {
      continue; // producers may have used up their budget
    }
    if (m.filler != filler_for(m.id, m.filler.size()))
      return 3; // corruption
    auto at = st->log_len.fetch_add(1, std::memory_order_acq_rel);
    if (at >= max_log)
      return 4;
    st->log_consumer[at] = static_cast<std::uint32_t>(instance);
    st->log_id[at].store(m.id + 1, std::memory_order_release);
  }
}

int torture_seconds() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, single-threaded
  if (const char* s = std::getenv("PACTOR_TORTURE_SECONDS"))
    return std::max(1, std::atoi(s));
  return 3;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(queue_torture, pactor_test::no_leftovers)

BOOST_DATA_TEST_CASE(killing_producers_and_consumers_loses_nothing_returned,
                     bdata::make(shapes), sh) {
  auto* st = static_cast<shared_state*>(
    ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  BOOST_REQUIRE(st != MAP_FAILED);
  for (auto& r : st->last_returned)
    r.store(-1);
  pactor::queue<message> q(0, {.capacity_bytes = sh.capacity});
  std::mt19937_64 rng(0x5eed + sh.producers * 7 + sh.consumers);

  struct child {
    pactor::process p;
    int instance;
    bool producer;
  };
  std::vector<child> kids;
  kids.reserve(64);
  int next_instance = 0;
  int consumer_instances = 0;
  auto start_producer = [&] {
    int inst = next_instance++;
    BOOST_REQUIRE(inst < max_instances);
    pactor::process p(pactor::with_fork, producer_main, q, st, inst,
                      sh.min_size, sh.max_size, rng());
    p.start();
    kids.push_back({p, inst, true});
  };
  auto start_consumer = [&] {
    int inst = consumer_instances++;
    pactor::process p(pactor::with_fork, consumer_main, q, st, inst, rng());
    p.start();
    kids.push_back({p, inst, false});
  };
  for (int i = 0; i < sh.producers; ++i)
    start_producer();
  for (int i = 0; i < sh.consumers; ++i)
    start_consumer();

  int killed_consumers = 0;
  int kills = 0;
  auto end = std::chrono::steady_clock::now()
             + std::chrono::seconds(torture_seconds());
  while (std::chrono::steady_clock::now() < end) {
    // Wait a random short while on the first child's sentinel (bounded).
    pollfd pfd{kids[rng() % kids.size()].p.sentinel(), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(rng() % 4));
    auto& victim = kids[rng() % kids.size()];
    if (victim.p.is_alive()) {
      victim.p.kill();
      ++kills;
    }
    // Replace every child that died (killed, or at its crash point).
    for (std::size_t i = 0; i < kids.size(); ++i) {
      if (kids[i].p.is_alive())
        continue;
      BOOST_REQUIRE(kids[i].p.join(5s));
      auto code = kids[i].p.exitcode().value();
      BOOST_REQUIRE_MESSAGE(code == -SIGKILL || code == 0,
                            "child exited with " << code);
      bool producer = kids[i].producer;
      if (!producer && code != 0)
        ++killed_consumers;
      kids.erase(kids.begin() + static_cast<long>(i));
      --i;
      if (!producer)
        start_consumer();
      else if (st->log_len.load() < message_budget)
        start_producer();
    }
  }
  // Stop: producers end with queue_closed, consumers drain and end.
  q.close();
  for (auto& k : kids) {
    BOOST_REQUIRE_MESSAGE(k.p.join(20s), "a child hung after close");
    auto code = k.p.exitcode().value();
    BOOST_CHECK_MESSAGE(code == 0 || code == -SIGKILL,
                        "child exited with " << code);
    if (!k.producer && code == -SIGKILL)
      ++killed_consumers; // died at an armed crash point while draining
  }
  // Consumers armed with a crash point may have died while draining: the
  // parent drains the rest as one more (surviving) consumer.
  for (;;) {
    std::optional<message> m;
    try {
      m = q.try_get();
    } catch (const pactor::queue_closed&) {
      break; // closed and drained
    }
    if (!m)
      break;
    BOOST_REQUIRE(m->filler == filler_for(m->id, m->filler.size()));
    auto at = st->log_len.fetch_add(1);
    BOOST_REQUIRE(at < max_log);
    st->log_consumer[at] = static_cast<std::uint32_t>(consumer_instances);
    st->log_id[at].store(m->id + 1);
  }
  BOOST_CHECK(q.empty());

  // Invariants.
  std::vector<std::uint64_t> seen;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::int64_t> last_seq;
  std::uint64_t duplicates = 0;
  std::uint64_t reordered = 0;
  std::uint64_t beyond = 0;
  auto n = std::min<std::uint64_t>(st->log_len.load(), max_log);
  for (std::uint64_t i = 0; i < n; ++i) {
    if (st->log_id[i].load() == 0)
      continue; // its consumer died between taking a slot and writing it
    std::uint64_t consumer = st->log_consumer[i];
    auto id = st->log_id[i].load() - 1;
    auto producer = id >> 32;
    auto seq = static_cast<std::int64_t>(id & 0xffffffffU);
    seen.push_back(id);
    auto key = std::make_pair(consumer, producer);
    auto it = last_seq.find(key);
    if (it != last_seq.end() && it->second >= seq)
      ++reordered;
    last_seq[key] = seq;
    if (seq > st->last_returned[producer].load() + 1)
      ++beyond; // a message no put could have sent yet
  }
  std::sort(seen.begin(), seen.end());
  for (std::size_t i = 1; i < seen.size(); ++i)
    if (seen[i] == seen[i - 1])
      ++duplicates;
  std::uint64_t missing = 0;
  std::uint64_t returned = 0;
  for (int inst = 0; inst < next_instance; ++inst) {
    auto last = st->last_returned[inst].load();
    for (std::int64_t seq = 0; seq <= last; ++seq) {
      ++returned;
      auto id = (static_cast<std::uint64_t>(inst) << 32)
                | static_cast<std::uint64_t>(seq);
      if (!std::binary_search(seen.begin(), seen.end(), id))
        ++missing;
    }
  }
  BOOST_TEST_MESSAGE(sh.name << ": " << kills << " kills, " << next_instance
                             << " producer instances, " << consumer_instances
                             << " consumer instances, " << returned
                             << " returned puts, " << n << " received, "
                             << missing << " missing");
  BOOST_CHECK_EQUAL(duplicates, 0U);
  BOOST_CHECK_EQUAL(reordered, 0U);
  BOOST_CHECK_EQUAL(beyond, 0U);
  BOOST_CHECK_MESSAGE(missing <= static_cast<std::uint64_t>(killed_consumers),
                      missing << " messages missing, but only "
                              << killed_consumers << " consumers died");
  BOOST_CHECK(returned > 1000);
  BOOST_CHECK(kills > 10);
  ::munmap(st, sizeof(shared_state));
}

BOOST_AUTO_TEST_SUITE_END()
