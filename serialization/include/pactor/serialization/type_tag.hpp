// Compile-time type tags: a stable 64-bit hash of a message type's name.

#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

namespace pactor {

namespace detail {

/// Returns the compiler's spelling of `T`, extracted from __PRETTY_FUNCTION__.
template <class T>
constexpr std::string_view pretty_type_name() noexcept {
  std::string_view fn = __PRETTY_FUNCTION__;
  // g++:   "... pretty_type_name() [with T = foo; std::string_view = ...]"
  // clang: "... pretty_type_name() [T = foo]"
  auto start = fn.find("T = ");
  if (start == std::string_view::npos)
    return fn;
  start += 4;
  auto end = fn.find(';', start);
  if (end == std::string_view::npos)
    end = fn.rfind(']');
  return fn.substr(start, end - start);
}

template <class T, class = void>
struct has_custom_type_name : std::false_type {};

template <class T>
struct has_custom_type_name<T, std::void_t<decltype(T::pactor_type_name)>>
    : std::true_type {};

/// 64-bit FNV-1a.
constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

} // namespace detail

/// A message type's 64-bit tag. Zero means "no type".
using type_tag_t = std::uint64_t;

/// Returns the name that identifies `T` on the wire.
///
/// By default this is the compiler's spelling of the type (cv and reference
/// qualifiers removed), so no registration is needed. A type can fix its name,
/// for example to stay compatible across a rename or between g++ and clang
/// builds, with a static member:
///
///     struct add {
///       static constexpr std::string_view pactor_type_name = "demo.add";
///       int n;
///       MSGPACK_DEFINE(n)
///     };
template <class T>
constexpr std::string_view type_name() noexcept {
  using U = std::remove_cvref_t<T>;
  if constexpr (detail::has_custom_type_name<U>::value)
    return U::pactor_type_name;
  else
    return detail::pretty_type_name<U>();
}

namespace detail {
template <class T>
inline constexpr type_tag_t type_tag_v = [] {
  auto h = fnv1a64(type_name<T>());
  return h == 0 ? type_tag_t{1} : h;
}();
template <class T>
inline constexpr std::string_view type_name_v = type_name<T>();
} // namespace detail

/// Returns the tag of `T`: FNV-1a of type_name<T>(), never zero. Computed at
/// compile time.
template <class T>
constexpr type_tag_t type_tag() noexcept {
  return detail::type_tag_v<std::remove_cvref_t<T>>;
}

} // namespace pactor
