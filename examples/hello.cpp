// The classic first multiprocessing example: a child process says hello.
//
// Python:
//     def f(name):
//         print('hello', name)
//     if __name__ == '__main__':
//         p = Process(target=f, args=('bob',))
//         p.start()
//         p.join()

#include <pactor/pactor.hpp>

#include <cstdio>
#include <string>

void f(const std::string& name) {
  std::printf("hello %s\n", name.c_str());
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::process p(f, std::string("bob"));
  p.start();
  p.join();
  return p.exitcode().value_or(1);
}
