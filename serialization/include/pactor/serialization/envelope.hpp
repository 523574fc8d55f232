// The envelope: a fixed, versioned binary header in front of every message.

#pragma once

#include <pactor/serialization/type_tag.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace pactor {

/// The metadata every message carries.
struct envelope {
  /// The payload's type tag (type_tag<T>()).
  type_tag_t type = 0;
  /// The sender's address (an actor ref's id), 0 for "no sender".
  std::uint64_t sender = 0;
  /// Non-zero for a request; the reply carries the same id.
  std::uint64_t request_id = 0;
  /// How often this message has been handed to a receiver before.
  std::uint32_t delivery_count = 0;
  /// Message flags; the meaning of each bit belongs to the layer that sets it.
  std::uint32_t flags = 0;
  /// What the sender was handling when it sent this: 1 + the number of that
  /// message in the sender's mailbox (0: none), and which of the messages
  /// sent while handling it this is (from 1). The same on every redelivery
  /// of the originating message, so a receiver can drop repeats.
  std::uint64_t origin = 0;
  std::uint32_t origin_index = 0;

  friend bool operator==(const envelope&, const envelope&) = default;
};

/// Wire layout of the header (little-endian, 40 bytes):
///
///     offset  size  field
///          0     2  magic 0x5041 ("PA" when read as bytes 0x41 0x50)
///          2     1  format version (envelope_version)
///          3     1  header size in bytes (40)
///          4     4  flags
///          8     8  type tag
///         16     8  sender
///         24     8  request id
///         32     4  delivery count
///         36     4  payload size in bytes
///         40     -  payload (msgpack)
///
/// A message with an origin has a 56-byte header (header size 56):
///
///         40     8  origin
///         48     4  origin index
///         52     4  zero
///         56     -  payload
///
/// A later version may grow the header; a reader skips `header size` bytes.
inline constexpr std::uint16_t envelope_magic = 0x5041;
inline constexpr std::uint8_t envelope_version = 1;
inline constexpr std::size_t envelope_header_size = 40;
inline constexpr std::size_t envelope_origin_header_size = 56;

/// The header size write_envelope_header uses for `e`.
constexpr std::size_t envelope_header_size_for(const envelope& e) noexcept {
  return e.origin != 0 ? envelope_origin_header_size : envelope_header_size;
}

/// Writes `e` and `payload_size` as a header into `out`, which must hold
/// envelope_header_size_for(e) bytes.
void write_envelope_header(std::byte* out, const envelope& e,
                           std::uint32_t payload_size) noexcept;

/// A message read from bytes: its envelope and a view of its payload.
struct message_view {
  envelope header;
  std::span<const std::byte> payload;
};

/// Limits applied to every decode of bytes from another process. A value
/// over a limit is a decode_error with code too_large, never an allocation
/// of whatever size the bytes claim.
struct decode_limits {
  /// The largest payload, in bytes.
  std::size_t max_payload = std::size_t{64} << 20;
  /// The deepest nesting of arrays and maps.
  std::size_t max_depth = 64;
  /// The most elements in one array.
  std::size_t max_array = std::size_t{1} << 22;
  /// The most entries in one map.
  std::size_t max_map = std::size_t{1} << 22;
  /// The longest string, in bytes.
  std::size_t max_str = std::size_t{64} << 20;
  /// The longest binary blob, in bytes.
  std::size_t max_bin = std::size_t{64} << 20;
  /// The longest extension value, in bytes.
  std::size_t max_ext = std::size_t{1} << 20;
};

/// Reads the envelope at the start of `bytes`, which must hold exactly one
/// message. Throws decode_error (truncated, bad_magic, unsupported_version,
/// too_large, trailing_bytes).
[[nodiscard]] message_view read_envelope(std::span<const std::byte> bytes,
                                         const decode_limits& limits = {});

} // namespace pactor
