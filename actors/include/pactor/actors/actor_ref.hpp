// actor_ref: the address of an actor's mailbox. Small, serializable,
// comparable, printable; valid across restarts of the actor.

#pragma once

#include <msgpack.hpp>

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

namespace pactor {

/// Names an actor's mailbox (not its process): it stays valid when the actor
/// is restarted, and can travel inside messages to any other actor.
/// `actor_ref{}` names nobody.
class actor_ref {
public:
  constexpr actor_ref() noexcept = default;
  constexpr explicit actor_ref(std::uint64_t id) noexcept : id_(id) {
  }
  /// The mailbox id the node gave (0: nobody).
  [[nodiscard]] constexpr std::uint64_t id() const noexcept {
    return id_;
  }
  constexpr explicit operator bool() const noexcept {
    return id_ != 0;
  }
  constexpr auto operator<=>(const actor_ref&) const noexcept = default;
  /// "<actor #7>" ("<nobody>" for id 0).
  [[nodiscard]] std::string to_string() const {
    return id_ == 0 ? "<nobody>" : "<actor #" + std::to_string(id_) + ">";
  }
  friend std::ostream& operator<<(std::ostream& os, const actor_ref& r) {
    return os << r.to_string();
  }

private:
  std::uint64_t id_ = 0;
};

} // namespace pactor

template <>
struct std::hash<pactor::actor_ref> {
  std::size_t operator()(const pactor::actor_ref& r) const noexcept {
    return std::hash<std::uint64_t>{}(r.id());
  }
};

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<pactor::actor_ref> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o,
                               const pactor::actor_ref& r) const {
      o.pack(r.id());
      return o;
    }
  };
  template <>
  struct convert<pactor::actor_ref> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      pactor::actor_ref& r) const {
      r = pactor::actor_ref(o.as<std::uint64_t>());
      return o;
    }
  };
  } // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack
