// Word count with a shared dict: four counting actors (each its own
// process) add the words of their share of the text to one manager dict
// with atomic increments, the way Python programs use Manager().dict(),
// but without losing updates to the get-then-set race.

#include <pactor/pactor.hpp>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct count_lines {
  std::vector<std::string> lines;
  MSGPACK_DEFINE(lines)
};

pactor::behavior counter(pactor::dict_proxy<std::string, long> words) {
  return pactor::behavior{[words](const count_lines& job) {
    long n = 0;
    for (const auto& line : job.lines) {
      std::istringstream in(line);
      std::string w;
      while (in >> w) {
        words.increment(w); // atomic, inside the manager
        ++n;
      }
    }
    return n;
  }};
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  pactor::manager mgr(sys);
  auto words = mgr.dict<std::string, long>("words");

  const std::vector<std::string> text = {
    "the quick brown fox jumps over the lazy dog",
    "the dog sleeps and the fox runs",
    "a fox a dog and the end",
  };
  // 40 copies of the text, split across 4 counting actors.
  std::vector<pactor::actor_ref> counters;
  for (int i = 0; i < 4; ++i)
    counters.push_back(sys.spawn(counter, words));
  long total = 0;
  std::vector<count_lines> shares(4);
  for (int copy = 0; copy < 40; ++copy)
    for (std::size_t l = 0; l < text.size(); ++l)
      shares[(copy * text.size() + l) % 4].lines.push_back(text[l]);
  for (int i = 0; i < 4; ++i)
    total += sys.request<long>(counters[static_cast<std::size_t>(i)],
                               shares[static_cast<std::size_t>(i)],
                               std::chrono::seconds(60));

  auto items = words.items();
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::printf("%ld words counted by 4 processes\n", total);
  for (std::size_t i = 0; i < 4 && i < items.size(); ++i)
    std::printf("%s: %ld\n", items[i].first.c_str(), items[i].second);
}
