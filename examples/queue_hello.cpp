// A child puts [42, None, 'hello'] on a queue; the parent prints it.
//
// Python:
//     def f(q): q.put([42, None, 'hello'])
//     q = Queue(); p = Process(target=f, args=(q,)); p.start()
//     print(q.get()); p.join()

#include <pactor/pactor.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

// A msgpack array of an int, a nil and a string.
using triple = std::tuple<int, std::optional<int>, std::string>;

void f(pactor::queue<triple> q) {
  q.put({42, std::nullopt, "hello"});
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::queue<triple> q;
  pactor::process p(f, q);
  p.start();
  auto [n, nothing, word] = q.get(std::chrono::seconds(10));
  std::printf("[%d, %s, '%s']\n", n,
              nothing ? std::to_string(*nothing).c_str() : "None",
              word.c_str());
  p.join();
}
