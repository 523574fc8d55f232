// msgpack-c adaptors that msgpack-cxx 4.1 lacks: std::variant and all enums.

#pragma once

#include <msgpack.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <variant>

namespace pactor::detail {

template <class Variant, std::size_t I = 0>
void convert_variant_alternative(const msgpack::object& o, std::size_t index,
                                 Variant& v) {
  if constexpr (I < std::variant_size_v<Variant>) {
    if (index == I) {
      std::variant_alternative_t<I, Variant> value;
      o.convert(value);
      v = std::move(value);
      return;
    }
    convert_variant_alternative<Variant, I + 1>(o, index, v);
  } else {
    throw msgpack::type_error();
  }
}

} // namespace pactor::detail

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {

  // std::variant<Ts...> travels as [index, value].
  template <class... Ts>
  struct pack<std::variant<Ts...>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o,
                               const std::variant<Ts...>& v) const {
      if (v.valueless_by_exception())
        throw msgpack::type_error();
      o.pack_array(2);
      o.pack(static_cast<std::uint32_t>(v.index()));
      std::visit([&o](const auto& x) { o.pack(x); }, v);
      return o;
    }
  };

  template <class... Ts>
  struct convert<std::variant<Ts...>> {
    const msgpack::object& operator()(const msgpack::object& o,
                                      std::variant<Ts...>& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2)
        throw msgpack::type_error();
      auto index = o.via.array.ptr[0].as<std::uint32_t>();
      pactor::detail::convert_variant_alternative(o.via.array.ptr[1], index, v);
      return o;
    }
  };

  // Every enum travels as its underlying integer; MSGPACK_ADD_ENUM is not
  // needed (and still wins where a program uses it).
  template <class E>
  struct pack<E, std::enable_if_t<std::is_enum_v<E>>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const E& v) const {
      o.pack(static_cast<std::underlying_type_t<E>>(v));
      return o;
    }
  };

  template <class E>
  struct convert<E, std::enable_if_t<std::is_enum_v<E>>> {
    const msgpack::object& operator()(const msgpack::object& o, E& v) const {
      v = static_cast<E>(o.as<std::underlying_type_t<E>>());
      return o;
    }
  };

  } // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack
