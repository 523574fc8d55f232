// Deferred replies: a request handler that cannot answer yet returns a
// reply_promise and answers later, from any handler or any actor
// (OTP's {noreply, State} and gen_server:reply(From, Reply)).

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/actors/detail/core.hpp>

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pactor {

namespace detail {
/// Puts a reply to request `request_id` into `to`'s replies ring (from any
/// process of the actor system). error: `bytes` is a (type, message) pair.
/// Returns false if `to` is gone or its replies ring stays full.
bool deliver_reply(actor_ref to, std::uint64_t request_id, type_tag_t type,
                   std::span<const std::byte> bytes, bool error);
/// The requester and request id of the message being handled; throws
/// std::logic_error if it is not a request (or outside an actor).
std::pair<actor_ref, std::uint64_t> current_request();
} // namespace detail

/// The answer owed to one request. Copyable and serializable: send it to
/// another actor, keep it in state (warm state too), answer once. The
/// requester takes the first answer; later ones are dropped.
///
///     [this](const take&) -> pactor::reply_promise<job> {
///       auto p = pactor::this_actor::promise<job>();
///       if (jobs_.empty()) waiting_.push_back(p);     // answered by a later
///       put else p.deliver(pop()); return p;
///     }
template <class R>
class reply_promise {
public:
  reply_promise() = default;

  /// Sends `value` as the reply. Returns false if the requester is gone.
  /// std::logic_error if this promise was already answered (by this copy)
  /// or is empty.
  bool deliver(const R& value) {
    std::vector<std::byte> bytes;
    pack_payload(bytes, value);
    return send(type_tag<R>(), bytes, false);
  }
  /// Answers with an error: the requester gets remote_error(type, message).
  bool deliver_error(const std::string& type, const std::string& message) {
    std::vector<std::byte> bytes;
    pack_payload(bytes, std::make_pair(type, message));
    return send(type_tag<std::pair<std::string, std::string>>(), bytes, true);
  }
  /// Whether it is bound to a request and not answered (by this copy).
  [[nodiscard]] bool pending() const noexcept {
    return to_ && !done_;
  }
  /// Who asked.
  [[nodiscard]] actor_ref requester() const noexcept {
    return to_;
  }

  MSGPACK_DEFINE(to_, id_, done_)

private:
  template <class T>
  friend reply_promise<T> make_reply_promise();
  reply_promise(actor_ref to, std::uint64_t id) : to_(to), id_(id) {
  }
  bool send(type_tag_t type, std::span<const std::byte> bytes, bool error) {
    if (!to_)
      throw std::logic_error("pactor::reply_promise: not bound to a request");
    if (done_)
      throw std::logic_error("pactor::reply_promise: already answered");
    done_ = true;
    return detail::deliver_reply(to_, id_, type, bytes, error);
  }

  actor_ref to_;
  std::uint64_t id_ = 0;
  bool done_ = false;
};

template <class T>
reply_promise<T> make_reply_promise() {
  auto [to, id] = detail::current_request();
  return reply_promise<T>(to, id);
}

template <class T>
inline constexpr bool is_reply_promise = false;
template <class T>
inline constexpr bool is_reply_promise<reply_promise<T>> = true;

namespace this_actor {
/// A promise for the request being handled: return it from the handler
/// (the reply is then whatever is delivered later) and deliver it when the
/// answer is known. std::logic_error if the message is not a request.
template <class R>
reply_promise<R> promise() {
  return make_reply_promise<R>();
}
} // namespace this_actor

} // namespace pactor
