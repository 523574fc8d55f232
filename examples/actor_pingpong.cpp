// Ping-pong between two actors: each knows the other only by a ref it got
// in a message, and they play five rounds on their own.
//
// Erlang:
//     ping(0, Pong) -> Pong ! finished;
//     ping(N, Pong) -> Pong ! {ping, self()}, receive pong -> ping(N-1, Pong)
//     end.

#include <pactor/pactor.hpp>

#include <chrono>
#include <cstdio>

using namespace std::chrono_literals;

struct ball {
  int round;
  MSGPACK_DEFINE(round)
};
struct serve {
  pactor::actor_ref to; // the other player
  pactor::actor_ref report_to;
  MSGPACK_DEFINE(to, report_to)
};
struct game_over {
  int rounds;
  MSGPACK_DEFINE(rounds)
};

// A player hits the ball back until round 5, then reports.
class player {
public:
  explicit player(std::string name) : name_(std::move(name)) {
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const serve& s) {
        report_to_ = s.report_to;
        pactor::this_actor::send(s.to, ball{1});
      },
      [this](const ball& b) {
        std::printf("%s got round %d\n", name_.c_str(), b.round);
        std::fflush(stdout);
        if (b.round == 5)
          pactor::this_actor::send(report_to_, game_over{b.round});
        else
          pactor::this_actor::send(pactor::this_actor::sender(),
                                   ball{b.round + 1});
      },
      [this](const pactor::actor_ref& r) { report_to_ = r; },
    };
  }

private:
  std::string name_;
  pactor::actor_ref report_to_;
};

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  auto ping = sys.spawn<player>(std::string("ping"));
  auto pong = sys.spawn<player>(std::string("pong"));
  sys.send(pong, sys.self()); // pong reports too, should it end the game
  sys.send(ping, serve{pong, sys.self()});
  auto over = sys.receive<game_over>(10s);
  std::printf("game over after %d rounds\n", over ? over->rounds : -1);
}
