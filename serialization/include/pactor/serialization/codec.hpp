// Encoding and decoding of messages: envelope + msgpack payload.
//
// Any type msgpack-c can pack is a message: aggregates with MSGPACK_DEFINE,
// standard containers, strings, std::optional, std::variant, enums and user
// adaptors. Decoding always runs with limits and reports every problem as a
// decode_error.
//
// Example:
//
//     struct add { int n; MSGPACK_DEFINE(n) };
//     auto bytes = pactor::encode(add{2}, {.request_id = 7});
//     auto msg = pactor::read_envelope(bytes);   // header + payload view
//     if (msg.header.type == pactor::type_tag<add>())
//       int n = pactor::decode_payload<add>(msg.payload).n;
//     add a = pactor::decode<add>(bytes);       // checks the tag itself

#pragma once

#include <pactor/serialization/adaptors.hpp>
#include <pactor/serialization/envelope.hpp>
#include <pactor/serialization/errors.hpp>
#include <pactor/serialization/type_tag.hpp>

#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <vector>

namespace pactor {

namespace detail {

/// A msgpack stream that appends to a byte vector.
struct byte_writer {
  std::vector<std::byte>* out;
  void write(const char* data, std::size_t size) {
    auto* p = reinterpret_cast<const std::byte*>(data);
    out->insert(out->end(), p, p + size);
  }
};

/// Unpacks one msgpack value that must span all of `payload` into `zone`.
/// Strings, binaries and extensions reference `payload` (no copy): the
/// object is valid while both `zone` and `payload` are.
msgpack::object unpack_checked(msgpack::zone& zone,
                               std::span<const std::byte> payload,
                               const decode_limits& limits, type_tag_t expected,
                               std::string_view expected_name);

/// A per-thread zone reused by decodes (no allocation per message); a nested
/// decode (from inside a user adaptor) gets a fresh zone instead.
class scratch_zone {
public:
  scratch_zone();
  scratch_zone(const scratch_zone&) = delete;
  scratch_zone& operator=(const scratch_zone&) = delete;
  ~scratch_zone();
  msgpack::zone& get() noexcept {
    return *zone_;
  }

private:
  msgpack::zone* zone_;
  std::unique_ptr<msgpack::zone> own_;
};

[[noreturn]] void throw_wrong_shape(type_tag_t expected,
                                    std::string_view expected_name,
                                    const char* what);

} // namespace detail

namespace detail {

/// A msgpack stream that only counts bytes.
struct byte_counter {
  std::size_t n = 0;
  void write(const char*, std::size_t len) noexcept {
    n += len;
  }
};

/// A msgpack stream that writes into a span and refuses to overflow it.
struct span_writer {
  std::byte* at;
  std::byte* end;
  void write(const char* p, std::size_t len) {
    if (len > static_cast<std::size_t>(end - at))
      throw std::logic_error("pactor: a message packed to a different size "
                             "the second time");
    std::memcpy(at, p, len);
    at += len;
  }
};

} // namespace detail

/// Returns how many bytes the msgpack encoding of `value` takes.
template <class T>
[[nodiscard]] std::size_t packed_size(const T& value) {
  detail::byte_counter c;
  msgpack::packer<detail::byte_counter> pk(c);
  pk.pack(value);
  return c.n;
}

/// Writes the msgpack encoding of `value` into `out`, which must be exactly
/// packed_size(value) bytes (std::logic_error otherwise): lets a writer pack
/// in place, e.g. straight into shared memory.
template <class T>
void pack_into(const T& value, std::span<std::byte> out) {
  detail::span_writer w{out.data(), out.data() + out.size()};
  msgpack::packer<detail::span_writer> pk(w);
  pk.pack(value);
  if (w.at != w.end)
    throw std::logic_error("pactor: a message packed to a different size "
                           "the second time");
}

/// Appends the msgpack encoding of `value` (no envelope) to `out`.
template <class T>
void pack_payload(std::vector<std::byte>& out, const T& value) {
  detail::byte_writer w{&out};
  msgpack::packer<detail::byte_writer> pk(w);
  pk.pack(value);
}

/// Appends one message (envelope + payload) to `out`. The envelope's type is
/// set to type_tag<T>(). Throws std::length_error for a payload over 4 GiB.
template <class T>
void encode_to(std::vector<std::byte>& out, const T& msg, envelope meta = {}) {
  auto start = out.size();
  const auto header = envelope_header_size_for(meta);
  out.resize(start + header);
  pack_payload(out, msg);
  auto payload_size = out.size() - start - header;
  if (payload_size > std::numeric_limits<std::uint32_t>::max()) {
    out.resize(start);
    throw std::length_error("pactor::encode: payload over 4 GiB");
  }
  meta.type = type_tag<T>();
  write_envelope_header(out.data() + start, meta,
                        static_cast<std::uint32_t>(payload_size));
}

/// Returns one message (envelope + payload) holding `msg`.
template <class T>
[[nodiscard]] std::vector<std::byte> encode(const T& msg, envelope meta = {}) {
  std::vector<std::byte> out;
  encode_to(out, msg, meta);
  return out;
}

/// Decodes a payload (no envelope) as `T`. Throws decode_error.
template <class T>
[[nodiscard]] T decode_payload(std::span<const std::byte> payload,
                               const decode_limits& limits = {}) {
  constexpr auto tag = type_tag<T>();
  constexpr auto name = detail::type_name_v<std::remove_cvref_t<T>>;
  detail::scratch_zone zone;
  auto obj = detail::unpack_checked(zone.get(), payload, limits, tag, name);
  try {
    if constexpr (msgpack::has_as<T>::value) {
      return obj.template as<T>();
    } else {
      // Value-initialised (msgpack's as<T> default-initialises, which leaves
      // a plain `int n;` member indeterminate until convert writes it).
      T value{};
      obj.convert(value);
      return value;
    }
  } catch (const std::exception& e) {
    detail::throw_wrong_shape(tag, name, e.what());
  }
}

/// Decodes the payload of `msg` as `T` after checking its type tag.
/// Throws decode_error (type_mismatch, and see decode_payload).
template <class T>
[[nodiscard]] T decode_message(const message_view& msg,
                               const decode_limits& limits = {}) {
  if (msg.header.type != type_tag<T>())
    throw decode_error(decode_errc::type_mismatch, "", type_tag<T>(),
                       type_name<T>(), msg.header.type);
  return decode_payload<T>(msg.payload, limits);
}

/// Decodes one whole message (envelope + payload) as `T`. Throws decode_error.
template <class T>
[[nodiscard]] T decode(std::span<const std::byte> bytes,
                       const decode_limits& limits = {}) {
  return decode_message<T>(read_envelope(bytes, limits), limits);
}

} // namespace pactor
