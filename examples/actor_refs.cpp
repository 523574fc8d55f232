// Refs travel in messages: the program introduces a worker to a logger; the
// worker then talks to the logger directly, and asks it a question.

#include <pactor/pactor.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;

struct log_line {
  std::string text;
  MSGPACK_DEFINE(text)
};
struct lines {
  MSGPACK_DEFINE()
};
struct use_logger {
  pactor::actor_ref logger;
  MSGPACK_DEFINE(logger)
};
struct work {
  int n;
  MSGPACK_DEFINE(n)
};

class logger {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const log_line& l) { lines_.push_back(l.text); },
      [this](const lines&) { return lines_; },
    };
  }

private:
  std::vector<std::string> lines_;
};

class worker {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const use_logger& u) { logger_ = u.logger; },
      [this](const work& w) {
        pactor::this_actor::send(logger_,
                                 log_line{"squared " + std::to_string(w.n)});
        // A request from inside a handler, to the actor it was introduced to.
        auto seen = pactor::this_actor::request<std::vector<std::string>>(
          logger_, lines{}, 5s);
        return static_cast<int>(seen.size()) * 1000 + w.n * w.n;
      },
    };
  }

private:
  pactor::actor_ref logger_;
};

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  auto log = sys.spawn<logger>();
  auto w = sys.spawn<worker>();
  sys.send(w, use_logger{log}); // the worker learns the logger's ref
  for (int n = 1; n <= 3; ++n) {
    int r = sys.request<int>(w, work{n}, 5s);
    std::printf("work %d -> %d (logger had %d lines)\n", n, r % 1000, r / 1000);
  }
  for (auto& l : sys.request<std::vector<std::string>>(log, lines{}, 5s))
    std::printf("log: %s\n", l.c_str());
}
