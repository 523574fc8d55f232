// A producer and a consumer connected by a bounded queue; the producer ends
// the stream with a sentinel value (Python's classic `None` sentinel).

#include <pactor/pactor.hpp>

#include <cstdio>
#include <optional>
#include <string>

using item = std::optional<std::string>; // nullopt is the sentinel

void producer(pactor::queue<item> q) {
  for (int i = 0; i < 10; ++i)
    q.put("item-" + std::to_string(i));
  q.put(std::nullopt);
}

int consumer(pactor::queue<item> q) {
  int count = 0;
  while (auto it = q.get(std::chrono::seconds(10))) {
    std::printf("consumed %s\n", it->c_str());
    ++count;
  }
  std::printf("consumer saw the sentinel after %d items\n", count);
  return count == 10 ? 0 : 1;
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::queue<item> q(4); // at most 4 items in flight
  pactor::process prod(producer, q);
  pactor::process cons(consumer, q);
  cons.start();
  prod.start();
  prod.join();
  cons.join();
  return cons.exitcode().value_or(1);
}
