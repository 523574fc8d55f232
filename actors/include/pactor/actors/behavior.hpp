// behavior: one handler per message type. A handler's return value is the
// reply to a request.

#pragma once

#include <pactor/serialization/codec.hpp>
#include <pactor/serialization/type_tag.hpp>

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace pactor {

template <class R>
class reply_promise;

namespace detail {

template <class T>
inline constexpr bool returns_promise = false;
template <class T>
inline constexpr bool returns_promise<reply_promise<T>> = true;

/// A reply being built: its type tag and encoded payload (type 0: none now,
/// the handler returned a reply_promise).
struct reply_out {
  type_tag_t type = 0;
  std::vector<std::byte> bytes;
};

template <class F>
struct handler_traits : handler_traits<decltype(&F::operator())> {};
template <class C, class R, class A>
struct handler_traits<R (C::*)(A) const> {
  using arg = std::remove_cvref_t<A>;
  using result = R;
};
template <class C, class R, class A>
struct handler_traits<R (C::*)(A)> {
  using arg = std::remove_cvref_t<A>;
  using result = R;
};
template <class R, class A>
struct handler_traits<R (*)(A)> {
  using arg = std::remove_cvref_t<A>;
  using result = R;
};

/// The tag a handler that returns nothing replies with.
struct no_value {
  MSGPACK_DEFINE()
};

} // namespace detail

/// The handlers of an actor: one callable per message type, each taking the
/// message (`const T&`) and returning nothing (a tell; a request gets an
/// empty reply) or the reply.
///
///     pactor::behavior{
///       [this](const add& a) { sum_ += a.n; },
///       [this](const total&) { return sum_; },
///     }
class behavior {
public:
  behavior() = default;

  template <class... F>
  explicit behavior(F&&... handlers) {
    (add(std::forward<F>(handlers)), ...);
  }

  /// Adds a handler (replaces one for the same type).
  template <class F>
  behavior& add(F&& f) {
    using traits = detail::handler_traits<std::remove_cvref_t<F>>;
    using T = typename traits::arg;
    using R = typename traits::result;
    entry e;
    e.type = type_tag<T>();
    e.fn = [h = std::forward<F>(f)](std::span<const std::byte> payload,
                                    detail::reply_out* out) mutable {
      auto msg = decode_payload<T>(payload);
      if constexpr (std::is_void_v<R>) {
        h(msg);
        if (out != nullptr)
          out->type = type_tag<detail::no_value>();
      } else if constexpr (detail::returns_promise<std::remove_cvref_t<R>>) {
        (void)h(msg); // deferred: answered through the promise
        if (out != nullptr)
          out->type = 0;
      } else {
        R r = h(msg);
        if (out != nullptr) {
          out->type = type_tag<R>();
          pack_payload(out->bytes, r);
        }
      }
    };
    for (auto& old : entries_)
      if (old.type == e.type) {
        old = std::move(e);
        return *this;
      }
    entries_.push_back(std::move(e));
    return *this;
  }

  /// Runs the handler for `type` on `payload`; a request passes `out` for
  /// the reply. Returns false if there is no handler for `type`.
  bool invoke(type_tag_t type, std::span<const std::byte> payload,
              detail::reply_out* out) {
    for (auto& e : entries_)
      if (e.type == type) {
        e.fn(payload, out);
        return true;
      }
    return false;
  }

  [[nodiscard]] bool handles(type_tag_t type) const noexcept {
    for (const auto& e : entries_)
      if (e.type == type)
        return true;
    return false;
  }
  [[nodiscard]] bool empty() const noexcept {
    return entries_.empty();
  }

private:
  struct entry {
    type_tag_t type = 0;
    std::function<void(std::span<const std::byte>, detail::reply_out*)> fn;
  };
  std::vector<entry> entries_;
};

} // namespace pactor
