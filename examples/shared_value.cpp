// A child writes a shared value and negates a shared array.
//
// Python:
//     def f(n, a):
//         n.value = 3.1415927
//         for i in range(len(a)): a[i] = -a[i]
//     num = Value('d', 0.0); arr = Array('i', range(10))
//     p = Process(target=f, args=(num, arr)); p.start(); p.join()
//     print(num.value); print(arr[:])

#include <pactor/pactor.hpp>

#include <cstdio>

void f(pactor::value<double> n, pactor::array<int> a) {
  n.store(3.1415927);
  std::lock_guard g(a.get_lock());
  for (std::size_t i = 0; i < a.size(); ++i)
    a[i] = -a[i];
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::value<double> num(0.0);
  pactor::array<int> arr(10);
  for (std::size_t i = 0; i < arr.size(); ++i)
    arr[i] = static_cast<int>(i);
  pactor::process p(pactor::with_spawn, f, num, arr);
  p.start();
  p.join();
  std::printf("%.7f\n[", num.load());
  for (std::size_t i = 0; i < arr.size(); ++i)
    std::printf(i ? ", %d" : "%d", arr.get(i));
  std::printf("]\n");
}
