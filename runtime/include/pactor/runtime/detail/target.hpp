// Function references that survive exec: module + offset + build id.

#pragma once

#include <pactor/serialization/codec.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace pactor::detail {

/// A code address as (module, offset), valid in another process that runs the
/// same executable and libraries.
struct function_ref {
  /// Empty for the main program, else the shared object's path.
  std::string module;
  std::uint64_t offset = 0;
  /// The module's GNU build id (hex), empty if it has none.
  std::string build_id;
  MSGPACK_DEFINE(module, offset, build_id)
};

using erased_fn = void (*)();

/// Describes `fn`, which must lie in a loaded module. Throws std::logic_error.
function_ref make_function_ref(erased_fn fn);

/// Finds `ref` in this process. Throws std::runtime_error naming the reason
/// (module not loaded, build id differs).
erased_fn resolve_function_ref(const function_ref& ref);

/// Thrown by pactor::exit inside a target.
struct exit_request {
  int code;
};

/// Calls `fn(args...)` and turns its result into an exit code.
template <class F, class... A>
int call_for_exit_code(F&& fn, A&&... args) {
  using R = std::invoke_result_t<F, A...>;
  if constexpr (std::is_integral_v<R> && !std::is_same_v<R, bool>) {
    return static_cast<int>(
      std::invoke(std::forward<F>(fn), std::forward<A>(args)...));
  } else {
    std::invoke(std::forward<F>(fn), std::forward<A>(args)...);
    return 0;
  }
}

/// The arguments of a function with parameters P..., as they travel.
template <class... P>
using packed_args_t = std::tuple<std::decay_t<P>...>;

/// Runs in a spawned or forkserver child: decodes the arguments and calls the
/// target. Its address travels as a function_ref beside the target's.
template <class R, class... P>
int invoke_packed(erased_fn erased, std::span<const std::byte> args) {
  auto fn = reinterpret_cast<R (*)(P...)>(erased);
  auto tuple = decode_payload<packed_args_t<P...>>(args);
  return std::apply(
    [fn](auto&... a) { return call_for_exit_code(fn, std::move(a)...); },
    tuple);
}

using trampoline_fn = int (*)(erased_fn, std::span<const std::byte>);

/// A target ready to travel: trampoline, function, encoded arguments.
struct packed_target {
  function_ref trampoline;
  function_ref function;
  std::vector<std::byte> args;
  MSGPACK_DEFINE(trampoline, function, args)
};

/// True for a function pointer, a function, or a captureless (non-generic)
/// lambda: what can be named in another process.
template <class F>
concept captureless_function = requires(F f) {
  {+f};
  requires std::is_function_v<std::remove_pointer_t<decltype(+f)>>;
};

template <class R, class... P, class... A>
packed_target pack_target(R (*fn)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A),
                "pactor::process: the target takes a different number of "
                "arguments");
  packed_target t;
  t.trampoline
    = make_function_ref(reinterpret_cast<erased_fn>(&invoke_packed<R, P...>));
  t.function = make_function_ref(reinterpret_cast<erased_fn>(fn));
  pack_payload(t.args, packed_args_t<P...>(std::forward<A>(args)...));
  return t;
}

} // namespace pactor::detail
