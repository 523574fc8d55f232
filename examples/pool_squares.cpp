// The classic multiprocessing example, in pactor:
//
//     from multiprocessing import Pool
//     def f(x): return x * x
//     with Pool(5) as p:
//         print(p.map(f, [1, 2, 3]))

#include <pactor/pactor.hpp>

#include <cstdio>
#include <ranges>
#include <vector>

int f(int x) {
  return x * x;
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::pool p(5);
  auto squares = p.map(f, std::vector{1, 2, 3});
  std::printf("[%d, %d, %d]\n", squares[0], squares[1], squares[2]);

  // Lazily, in completion order, and one call in a worker.
  int sum = 0;
  for (int v : p.imap_unordered(f, std::views::iota(0, 10)))
    sum += v;
  std::printf("sum of squares below 10: %d\n", sum);
  auto later = p.apply_async(f, 20);
  std::printf("f(20) = %d\n", later.get(std::chrono::seconds(10)));
}
