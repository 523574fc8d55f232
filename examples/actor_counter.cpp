// A counter actor: state in a member, one handler per message type, the
// handler's return value is the reply. The program talks to it from outside.
//
// Erlang:
//     loop(Sum) -> receive {add, N} -> loop(Sum + N);
//                          {total, From} -> From ! Sum, loop(Sum) end.

#include <pactor/pactor.hpp>

#include <chrono>
#include <cstdio>

using namespace std::chrono_literals;

struct add {
  int n;
  MSGPACK_DEFINE(n)
};
struct total {
  MSGPACK_DEFINE()
};

class counter {
public:
  explicit counter(int start) : sum_(start) {
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const add& a) { sum_ += a.n; }, // a tell
      [this](const total&) { return sum_; }, // a request: the reply
    };
  }

private:
  int sum_;
};

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  auto c = sys.spawn<counter>(10);
  for (int i = 1; i <= 4; ++i)
    sys.send(c, add{i});
  int sum = sys.request<int>(c, total{}, 5s);
  std::printf("%s counted to %d\n", c.to_string().c_str(), sum);
  sys.stop(c);
  auto why = sys.join(c, 5s);
  std::printf("it ended: %s\n",
              why ? why->to_string().c_str() : "(still running)");
}
