// Warm restart: a counter whose count survives SIGKILL. Its state is
// committed with the acknowledgement of each message, so the restarted
// incarnation continues from exactly the count after the last message it
// acknowledged; a cold counter beside it starts again from zero.
//
// The forwarder shows the other half: what an actor sends while handling a
// message happens again when that message is redelivered; the sink drops
// the repeats with pactor::dedup, kept in its own warm state.

#include <pactor/pactor.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>

using namespace std::chrono_literals;

struct tick {
  MSGPACK_DEFINE()
};
struct total {
  MSGPACK_DEFINE()
};

class counter {
public:
  struct state { // trivially copyable: committed as its bytes
    long ticks = 0;
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const tick&) { ++st_.ticks; },
      [this](const total&) { return st_.ticks; },
    };
  }

private:
  state st_;
};

struct item {
  long n;
  MSGPACK_DEFINE(n)
};

class sink {
public:
  struct state { // msgpack-encoded
    long taken = 0;
    long repeats = 0;
    pactor::dedup seen;
    MSGPACK_DEFINE(taken, repeats, seen)
  };
  state& warm_state() {
    return st_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const item&) {
        if (st_.seen.first_time()) // not a copy a redelivery sent again
          ++st_.taken;
        else
          ++st_.repeats;
      },
      [this](const total&) { return st_; },
    };
  }

private:
  state st_;
};

// Forwards each item; commits every 100 items (a death redelivers up to 100).
class forwarder {
public:
  explicit forwarder(pactor::actor_ref to) : to_(to) {
  }
  long& warm_state() {
    return forwarded_;
  }
  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const item& i) {
        pactor::this_actor::send(to_, i);
        ++forwarded_;
      },
      [this](const total&) { return forwarded_; },
    };
  }

private:
  pactor::actor_ref to_;
  long forwarded_ = 0;
};

// Kills the running incarnation of `who` (SIGKILL) and starts the next.
void kill_and_restart(pactor::actor_system& sys, pactor::actor_ref who) {
  if (auto pid = sys.pid(who); pid > 0)
    ::kill(pid, SIGKILL);
  sys.join(who, 5s);
  sys.restart(who);
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;

  pactor::spawn_options warm;
  warm.restart = pactor::restart_mode::warm;
  auto w = sys.spawn_with<counter>(warm);
  auto c = sys.spawn<counter>(); // cold
  for (int i = 0; i < 1000; ++i) {
    sys.send(w, tick{});
    sys.send(c, tick{});
  }
  sys.request<long>(w, total{}, 5s); // both have counted everything
  sys.request<long>(c, total{}, 5s);
  kill_and_restart(sys, w);
  kill_and_restart(sys, c);
  std::printf("after SIGKILL: warm counter %ld, cold counter %ld\n",
              sys.request<long>(w, total{}, 5s),
              sys.request<long>(c, total{}, 5s));

  auto s = sys.spawn_with<sink>(warm);
  auto batched = warm;
  batched.commit_every = 100;
  auto f = sys.spawn_with<forwarder>(batched, s);
  for (long n = 1; n <= 10000; ++n) {
    sys.send(f, item{n});
    if (n % 2500 == 0) { // mid-batch: the uncommitted items are sent again
      kill_and_restart(sys, f);
      sys.request<long>(f, total{}, 5s); // caught up again
    }
  }
  sink::state got;
  for (int i = 0; i < 500 && got.taken < 10000; ++i) // bounded
    got = sys.request<sink::state>(s, total{}, 5s);
  std::printf("the sink took %ld items once each (%s), dropped %ld repeats\n",
              got.taken, got.taken == 10000 ? "all" : "NOT all", got.repeats);
}
