// A service that embeds a supervisor: a line server (its "requests" are the
// command-line arguments, or stdin lines) hands each request to a
// supervised worker actor and keeps serving while the worker crashes. The
// service has threads and its own fds; the node forks the workers, so
// neither reaches them.
//
//     supervised_service hello crash world segv again
//     supervised_service -          (requests from stdin)
//
// Without arguments it serves the five requests above.
// "crash" makes the worker throw, "segv" makes it die of SIGSEGV: the
// request fails with a clear error, the supervisor restarts the worker, and
// the next request is served.

#include <pactor/pactor.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

// The risky work: upper-cases a line, or dies trying.
pactor::behavior risky_worker() {
  return pactor::behavior{[](const std::string& line) {
    if (pactor::this_actor::delivery() == 1) { // a redelivery is served
      if (line == "crash")
        throw std::runtime_error("cannot handle \"crash\"");
      if (line == "segv")
        std::raise(SIGSEGV);
    }
    std::string out = line;
    for (auto& c : out)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
  }};
}

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;

  // The service's own thread (a listener, a timer...): no hazard.
  std::thread heartbeat([] { std::this_thread::sleep_for(10ms); });

  pactor::supervisor_spec spec;
  spec.intensity = 10;
  spec.period = 10s;
  spec.children.push_back(pactor::worker("risky", risky_worker));
  pactor::supervisor sup(sys, spec); // decisions on a background thread
  auto worker = sup.child("risky");

  std::vector<std::string> requests(argv + 1, argv + argc);
  if (requests.empty())
    requests = {"hello", "crash", "world", "segv", "again"};
  if (requests == std::vector<std::string>{"-"}) {
    requests.clear();
    for (std::string line; std::getline(std::cin, line);)
      requests.push_back(line);
  }
  for (const auto& line : requests) {
    try {
      auto answer = sys.request<std::string>(worker, line, 5s);
      std::printf("%s -> %s\n", line.c_str(), answer.c_str());
    } catch (const pactor::remote_error& e) {
      // The handler threw: the worker answered with the error and goes on.
      std::printf("%s -> error: %s\n", line.c_str(), e.message().c_str());
    }
  }
  heartbeat.join();
  for (const auto& c : sup.which_children())
    std::printf("worker %s: %s, restarted %u times\n", c.id.c_str(),
                c.status.c_str(), c.restarts);
}
