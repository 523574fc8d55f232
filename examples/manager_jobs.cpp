// A shared job list: the program fills a manager list with jobs; three
// worker actors pop jobs until the list is empty and append results to
// another list. Each pop is atomic, so no job is taken twice.

#include <pactor/pactor.hpp>

#include <cstdio>
#include <numeric>
#include <vector>

namespace {

struct work {
  MSGPACK_DEFINE()
};

pactor::behavior worker(pactor::list_proxy<int> jobs,
                        pactor::list_proxy<int> results) {
  return pactor::behavior{[jobs, results](const work&) {
    int taken = 0;
    for (;;) {
      int job = 0;
      try {
        job = jobs.pop(0); // the oldest job; index_error when none is left
      } catch (const pactor::index_error&) {
        pactor::this_actor::send(pactor::this_actor::sender(), taken);
        return;
      }
      results.append(job * job);
      ++taken;
    }
  }};
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  pactor::manager mgr(sys);
  auto jobs = mgr.list<int>("jobs");
  auto results = mgr.list<int>("results");
  for (int i = 1; i <= 300; ++i)
    jobs.append(i);

  std::vector<pactor::actor_ref> workers;
  for (int w = 0; w < 3; ++w)
    workers.push_back(sys.spawn(worker, jobs, results));
  for (auto& w : workers)
    sys.send(w, work{}); // all three at once; each answers when done
  int taken = 0;
  for (std::size_t i = 0; i < workers.size(); ++i)
    taken += sys.receive<int>(std::chrono::seconds(60)).value_or(0);

  auto done = results.items();
  long sum = std::accumulate(done.begin(), done.end(), 0L);
  std::printf("jobs left: %zu\n", jobs.size());
  std::printf("results: %zu, sum of squares %ld (expected %ld)\n", done.size(),
              sum, 300L * 301 * 601 / 6);
  std::printf("jobs taken by the workers: %d (each once)\n", taken);
}
