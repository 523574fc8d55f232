// Five processes compute squares and send them back through a queue: first
// in whatever order they finish, then tagged with their input and sorted.
//
// Python:
//     def square(q, x): q.put(x * x)
//     q = Queue()
//     ps = [Process(target=square, args=(q, x)) for x in range(5)]
//     ...; print(sorted(q.get() for _ in range(5)))

#include <pactor/pactor.hpp>

#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

void square(pactor::queue<int> q, int x) {
  q.put(x * x);
}

void tagged_square(pactor::queue<std::pair<int, int>> q, int x) {
  q.put({x, x * x});
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);

  pactor::queue<int> q;
  std::vector<pactor::process> ps;
  for (int x = 0; x < 5; ++x)
    ps.emplace_back(pactor::with_spawn, square, q, x);
  for (auto& p : ps)
    p.start();
  std::vector<int> results;
  for (int i = 0; i < 5; ++i)
    results.push_back(q.get(std::chrono::seconds(10)));
  for (auto& p : ps)
    p.join();
  std::printf("in arrival order:");
  for (int r : results)
    std::printf(" %d", r);
  std::printf("\n");

  pactor::queue<std::pair<int, int>> tagged;
  ps.clear();
  for (int x = 0; x < 5; ++x)
    ps.emplace_back(pactor::with_spawn, tagged_square, tagged, x);
  for (auto& p : ps)
    p.start();
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 5; ++i)
    pairs.push_back(tagged.get(std::chrono::seconds(10)));
  for (auto& p : ps)
    p.join();
  std::sort(pairs.begin(), pairs.end());
  std::printf("tagged and sorted:");
  for (auto [x, sq] : pairs)
    std::printf(" %d->%d", x, sq);
  std::printf("\n");
}
