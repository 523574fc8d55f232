// Errors raised while decoding bytes that came from another process.

#pragma once

#include <pactor/serialization/type_tag.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pactor {

/// What was wrong with the bytes.
enum class decode_errc : std::uint8_t {
  /// The bytes end before the envelope or the payload does.
  truncated = 1,
  /// The bytes do not start with the envelope magic number.
  bad_magic,
  /// The envelope was written by a format version this build cannot read.
  unsupported_version,
  /// The payload, or one string, array, map or nesting level in it, exceeds
  /// the decode limits.
  too_large,
  /// The payload is not valid msgpack.
  malformed,
  /// The envelope's type tag is not the tag of the requested type.
  type_mismatch,
  /// The tags agree, but the payload does not convert to the requested type
  /// (for example a struct whose definition differs between two builds).
  wrong_shape,
  /// Bytes follow the payload.
  trailing_bytes,
};

/// Returns a stable name for `x`, e.g. "type_mismatch".
std::string_view to_string(decode_errc x) noexcept;

/// Thrown when bytes from another process cannot be decoded.
///
/// Example:
///
///     try {
///       auto a = pactor::decode<add>(bytes);
///     } catch (const pactor::decode_error& e) {
///       // e.code() == decode_errc::type_mismatch, e.what() names both tags
///     }
class decode_error : public std::runtime_error {
public:
  decode_error(decode_errc code, const std::string& detail,
               type_tag_t expected = 0, std::string_view expected_name = {},
               type_tag_t actual = 0);

  /// Returns what was wrong.
  [[nodiscard]] decode_errc code() const noexcept {
    return code_;
  }

  /// Returns the tag of the requested type, or 0 if no type was requested.
  [[nodiscard]] type_tag_t expected_tag() const noexcept {
    return expected_;
  }

  /// Returns the tag found in the envelope, or 0 if none was read.
  [[nodiscard]] type_tag_t actual_tag() const noexcept {
    return actual_;
  }

private:
  decode_errc code_;
  type_tag_t expected_;
  type_tag_t actual_;
};

} // namespace pactor
