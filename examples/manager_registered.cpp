// A user-registered type (Python's BaseManager.register): an inventory
// whose methods run inside the manager, so concurrent buyers can never
// sell the same item twice; and a registered update function.

#include <pactor/pactor.hpp>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct inventory {
  std::map<std::string, int> stock;
  void add(std::string item, int n) {
    stock[item] += n;
  }
  int take(std::string item, int n) {
    auto& have = stock[item];
    if (have < n)
      throw std::runtime_error("only " + std::to_string(have) + " " + item
                               + " left");
    have -= n;
    return have;
  }
  MSGPACK_DEFINE(stock)
};
PACTOR_MANAGER_METHOD("inventory", inventory, add);
PACTOR_MANAGER_METHOD("inventory", inventory, take);

// d[k] = max(d[k], candidate), registered for update().
long keep_max(std::optional<long> current, long candidate) {
  return std::max(current.value_or(candidate), candidate);
}
PACTOR_MANAGER_UPDATE("keep_max", keep_max);

struct buy {
  int rounds = 0;
  MSGPACK_DEFINE(rounds)
};

pactor::behavior buyer(pactor::object_proxy<inventory> shop) {
  return pactor::behavior{[shop](const buy& b) {
    int bought = 0;
    for (int i = 0; i < b.rounds; ++i) {
      try {
        shop.call<int>("take", std::string("apple"), 1);
        ++bought;
      } catch (const pactor::manager_error&) {
        // sold out: the error comes back, the manager goes on
      }
    }
    pactor::this_actor::send(pactor::this_actor::sender(), bought);
  }};
}

} // namespace

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor::actor_system sys;
  pactor::manager mgr(sys);
  auto shop = mgr.object<inventory>("shop", "inventory");
  shop.call<void>("add", std::string("apple"), 100);

  std::vector<pactor::actor_ref> buyers;
  for (int i = 0; i < 4; ++i)
    buyers.push_back(sys.spawn(buyer, shop));
  int bought = 0;
  for (auto& b : buyers)
    sys.send(b, buy{40}); // 160 attempts for 100 apples, all at once
  for (std::size_t i = 0; i < buyers.size(); ++i)
    bought += sys.receive<int>(std::chrono::seconds(60)).value_or(0);
  std::printf("apples bought: %d, left: %d\n", bought,
              shop.get().stock.at("apple"));
  try {
    shop.call<int>("take", std::string("apple"), 1);
  } catch (const pactor::manager_error& e) {
    std::printf("%s\n", e.what());
  }

  auto best = mgr.dict<std::string, long>("best");
  for (long score : {12L, 40L, 7L})
    best.update("alice", "keep_max", score);
  std::printf("best score: %ld\n", best.at("alice"));
}
