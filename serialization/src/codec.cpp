// Envelope reading/writing and the checked msgpack unpack.

#include <pactor/serialization/codec.hpp>

#include <bit>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

namespace pactor {

namespace {

template <class T>
T byteswap_if_big(T v) noexcept {
  if constexpr (std::endian::native == std::endian::big) {
    T r = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
      r = static_cast<T>((r << 8) | ((v >> (8 * i)) & 0xff));
    return r;
  } else {
    return v;
  }
}

template <class T>
void store_le(std::byte* at, T v) noexcept {
  v = byteswap_if_big(v);
  std::memcpy(at, &v, sizeof(T));
}

template <class T>
T load_le(const std::byte* at) noexcept {
  T v;
  std::memcpy(&v, at, sizeof(T));
  return byteswap_if_big(v);
}

std::string tag_hex(type_tag_t tag) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016" PRIx64, tag);
  return buf;
}

std::string describe(decode_errc code, const std::string& detail,
                     type_tag_t expected, std::string_view expected_name,
                     type_tag_t actual) {
  std::string s = "pactor::decode_error (";
  s += to_string(code);
  s += ")";
  if (expected != 0) {
    s += ": expected ";
    if (!expected_name.empty()) {
      s += "'";
      s += expected_name;
      s += "' ";
    }
    s += "(tag " + tag_hex(expected) + ")";
  }
  if (actual != 0)
    s += ", got tag " + tag_hex(actual);
  if (!detail.empty()) {
    s += ": ";
    s += detail;
  }
  return s;
}

} // namespace

std::string_view to_string(decode_errc x) noexcept {
  switch (x) {
  case decode_errc::truncated:
    return "truncated";
  case decode_errc::bad_magic:
    return "bad_magic";
  case decode_errc::unsupported_version:
    return "unsupported_version";
  case decode_errc::too_large:
    return "too_large";
  case decode_errc::malformed:
    return "malformed";
  case decode_errc::type_mismatch:
    return "type_mismatch";
  case decode_errc::wrong_shape:
    return "wrong_shape";
  case decode_errc::trailing_bytes:
    return "trailing_bytes";
  }
  return "unknown";
}

decode_error::decode_error(decode_errc code, const std::string& detail,
                           type_tag_t expected, std::string_view expected_name,
                           type_tag_t actual)
    : std::runtime_error(
      describe(code, detail, expected, expected_name, actual)),
      code_(code), expected_(expected), actual_(actual) {
}

void write_envelope_header(std::byte* out, const envelope& e,
                           std::uint32_t payload_size) noexcept {
  store_le<std::uint16_t>(out, envelope_magic);
  out[2] = std::byte{envelope_version};
  const auto header = envelope_header_size_for(e);
  out[3] = static_cast<std::byte>(header);
  store_le<std::uint32_t>(out + 4, e.flags);
  store_le<std::uint64_t>(out + 8, e.type);
  store_le<std::uint64_t>(out + 16, e.sender);
  store_le<std::uint64_t>(out + 24, e.request_id);
  store_le<std::uint32_t>(out + 32, e.delivery_count);
  store_le<std::uint32_t>(out + 36, payload_size);
  if (header == envelope_origin_header_size) {
    store_le<std::uint64_t>(out + 40, e.origin);
    store_le<std::uint32_t>(out + 48, e.origin_index);
    store_le<std::uint32_t>(out + 52, 0);
  }
}

message_view read_envelope(std::span<const std::byte> bytes,
                           const decode_limits& limits) {
  if (bytes.size() < 4)
    throw decode_error(decode_errc::truncated,
                       std::to_string(bytes.size())
                         + " bytes, shorter than an envelope header");
  if (load_le<std::uint16_t>(bytes.data()) != envelope_magic)
    throw decode_error(decode_errc::bad_magic,
                       "the bytes do not start with a pactor envelope");
  auto version = std::to_integer<unsigned>(bytes[2]);
  auto header_size = std::to_integer<std::size_t>(bytes[3]);
  if (version != envelope_version)
    throw decode_error(decode_errc::unsupported_version,
                       "format version " + std::to_string(version)
                         + ", this build reads version "
                         + std::to_string(envelope_version));
  if (header_size < envelope_header_size)
    throw decode_error(decode_errc::bad_magic,
                       "header size " + std::to_string(header_size)
                         + " is below the minimum of "
                         + std::to_string(envelope_header_size));
  if (bytes.size() < header_size)
    throw decode_error(decode_errc::truncated,
                       std::to_string(bytes.size())
                         + " bytes, shorter than the envelope header");
  message_view msg;
  const auto* p = bytes.data();
  msg.header.flags = load_le<std::uint32_t>(p + 4);
  msg.header.type = load_le<std::uint64_t>(p + 8);
  msg.header.sender = load_le<std::uint64_t>(p + 16);
  msg.header.request_id = load_le<std::uint64_t>(p + 24);
  msg.header.delivery_count = load_le<std::uint32_t>(p + 32);
  auto payload_size = std::size_t{load_le<std::uint32_t>(p + 36)};
  if (header_size >= envelope_origin_header_size) {
    msg.header.origin = load_le<std::uint64_t>(p + 40);
    msg.header.origin_index = load_le<std::uint32_t>(p + 48);
  }
  if (payload_size > limits.max_payload)
    throw decode_error(decode_errc::too_large,
                       "payload of " + std::to_string(payload_size)
                         + " bytes, the limit is "
                         + std::to_string(limits.max_payload),
                       0, {}, msg.header.type);
  auto available = bytes.size() - header_size;
  if (available < payload_size)
    throw decode_error(decode_errc::truncated,
                       "payload of " + std::to_string(payload_size)
                         + " bytes announced, " + std::to_string(available)
                         + " present",
                       0, {}, msg.header.type);
  if (available > payload_size)
    throw decode_error(decode_errc::trailing_bytes,
                       std::to_string(available - payload_size)
                         + " bytes after the payload",
                       0, {}, msg.header.type);
  msg.payload = bytes.subspan(header_size, payload_size);
  return msg;
}

namespace detail {

namespace {

struct thread_zone {
  msgpack::zone zone;
  bool busy = false;
  thread_zone() = default;
  thread_zone(const thread_zone&) = delete;
  thread_zone& operator=(const thread_zone&) = delete;
  ~thread_zone();
};

thread_local thread_zone tls_zone;
// Set once tls_zone is destroyed: decodes that run later in this thread's
// exit (destructors of statics run after thread_locals) use their own zone.
// Trivially destructible, so it stays readable.
thread_local bool tls_zone_gone = false;

thread_zone::~thread_zone() {
  tls_zone_gone = true;
}

bool reference_everything(msgpack::type::object_type, std::size_t, void*) {
  return true;
}

} // namespace

scratch_zone::scratch_zone() : zone_(nullptr) {
  if (tls_zone_gone || tls_zone.busy) {
    own_ = std::make_unique<msgpack::zone>();
    zone_ = own_.get();
  } else {
    zone_ = &tls_zone.zone;
    tls_zone.busy = true;
  }
}

scratch_zone::~scratch_zone() {
  if (!own_) {
    tls_zone.zone.clear();
    tls_zone.busy = false;
  }
}

msgpack::object unpack_checked(msgpack::zone& zone,
                               std::span<const std::byte> payload,
                               const decode_limits& limits, type_tag_t expected,
                               std::string_view expected_name) {
  if (payload.size() > limits.max_payload)
    throw decode_error(decode_errc::too_large,
                       "payload of " + std::to_string(payload.size())
                         + " bytes, the limit is "
                         + std::to_string(limits.max_payload),
                       expected, expected_name);
  msgpack::unpack_limit lim(limits.max_array, limits.max_map, limits.max_str,
                            limits.max_bin, limits.max_ext, limits.max_depth);
  const auto* data = reinterpret_cast<const char*>(payload.data());
  std::size_t offset = 0;
  msgpack::object obj;
  try {
    obj = msgpack::unpack(zone, data, payload.size(), offset,
                          &reference_everything, nullptr, lim);
  } catch (const msgpack::size_overflow& e) {
    throw decode_error(decode_errc::too_large, e.what(), expected,
                       expected_name);
  } catch (const msgpack::insufficient_bytes& e) {
    throw decode_error(decode_errc::truncated, e.what(), expected,
                       expected_name);
  } catch (const std::exception& e) {
    // parse_error, unpack_error, and msgpack's own sanity checks.
    throw decode_error(decode_errc::malformed, e.what(), expected,
                       expected_name);
  }
  if (offset != payload.size())
    throw decode_error(decode_errc::trailing_bytes,
                       std::to_string(payload.size() - offset)
                         + " bytes after the msgpack value",
                       expected, expected_name);
  return obj;
}

void throw_wrong_shape(type_tag_t expected, std::string_view expected_name,
                       const char* what) {
  throw decode_error(decode_errc::wrong_shape,
                     std::string("the payload does not convert: ") + what,
                     expected, expected_name, expected);
}

} // namespace detail

} // namespace pactor
