// An actor that crashes on one message. Each restart gets the message again
// (it was never acknowledged); after max_deliveries it is a poison message:
// the next incarnation skips it, it lands in the dead letters, and the
// actor goes on with the messages behind it.

#include <pactor/pactor.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

struct job {
  std::string input;
  MSGPACK_DEFINE(input)
};
struct done {
  MSGPACK_DEFINE()
};

class parser {
public:
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const job& j) {
        if (j.input == "bad")
          std::raise(SIGSEGV); // a bug that kills the process
        ++parsed_;
      },
      [this](const done&) { return parsed_; },
    };
  }

private:
  int parsed_ = 0;
};

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys({.max_deliveries = 2});
  auto p = sys.spawn<parser>();
  sys.send(p, job{"bad"});
  sys.send(p, job{"good 1"});
  sys.send(p, job{"good 2"});
  for (int i = 1; i <= 2; ++i) {
    auto why = sys.join(p, 10s);
    std::printf("incarnation %u ended: %s\n", why->incarnation,
                why->to_string().c_str());
    sys.restart(p); // a supervisor does this by policy (docs/supervisors.md)
  }
  std::printf("parsed %d jobs\n", sys.request<int>(p, done{}, 10s));
  for (auto& l : sys.take_dead_letters())
    std::printf("dead letter to %s after %u deliveries: %s\n",
                l.to.to_string().c_str(), l.delivery, l.why.c_str());
}
