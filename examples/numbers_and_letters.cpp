// Two processes print at the same time, one numbers and one letters; their
// lines interleave in whatever order the scheduler picks.

#include <pactor/pactor.hpp>

#include <cstdio>

void numbers() {
  for (int i = 1; i <= 5; ++i) {
    std::printf("number %d\n", i);
    std::fflush(stdout);
  }
}

void letters() {
  for (char c = 'a'; c <= 'e'; ++c) {
    std::printf("letter %c\n", c);
    std::fflush(stdout);
  }
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::process a(numbers);
  pactor::process b(letters);
  a.start();
  b.start();
  a.join();
  b.join();
  std::printf("both done\n");
}
