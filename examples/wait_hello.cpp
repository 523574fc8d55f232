// Two queues and a child that puts into the second one: the parent waits on
// both, reads the one that is ready, then waits for the child's exit.
//
// Python (with pipes: its wait does not take a Queue):
//     def f(w): w.send(42)
//     r1, w1 = Pipe(False); r2, w2 = Pipe(False)
//     p = Process(target=f, args=(w2,)); p.start()
//     for r in wait([r1, r2]): print(r.recv())
//     wait([p.sentinel]); p.join()

#include <pactor/pactor.hpp>

#include <chrono>
#include <cstddef>
#include <cstdio>

using namespace std::chrono_literals;

void f(pactor::queue<int> second) {
  second.put(42);
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::queue<int> first;
  pactor::queue<int> second;
  // A zero timeout just looks: nothing is ready yet.
  std::printf("ready before the child starts: %zu\n",
              pactor::wait({first, second}, 0s).size());
  pactor::process p(pactor::with_spawn, f, second);
  p.start();
  // Indices of the ready objects; empty after 10 s if none becomes ready.
  for (std::size_t i : pactor::wait({first, second}, 10s)) {
    int value = (i == 0 ? first : second).get(1s);
    std::printf("queue %zu is ready: %d\n", i, value);
  }
  // A process is ready when it has exited (its sentinel).
  for (std::size_t i : pactor::wait({p}, 10s))
    std::printf("object %zu is ready: the child exited\n", i);
  p.join();
  std::printf("exit code %d\n", p.exitcode().value_or(-1));
}
