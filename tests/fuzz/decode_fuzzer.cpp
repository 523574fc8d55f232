// libFuzzer target for every decoder of foreign bytes: the envelope reader
// and the payload decoder for several message shapes, with small limits.
// Built with clang (PACTOR_ENABLE_FUZZING); replayed over corpus/ by the
// normal build (decode_corpus_replay).

#include <pactor/serialization/codec.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace {

struct fuzz_msg {
  std::string name;
  std::vector<std::int64_t> values;
  std::optional<std::map<std::string, double>> extra;
  std::variant<int, std::string, std::vector<std::byte>> any;
  MSGPACK_DEFINE(name, values, extra, any)
};

template <class T>
void try_decode(std::span<const std::byte> payload,
                const pactor::decode_limits& limits) {
  try {
    (void)pactor::decode_payload<T>(payload, limits);
  } catch (const pactor::decode_error&) {
    // Expected for most inputs; anything else escapes and is a finding.
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  auto bytes = std::span(reinterpret_cast<const std::byte*>(data), size);
  const pactor::decode_limits limits{.max_payload = 1 << 16,
                                     .max_depth = 16,
                                     .max_array = 1024,
                                     .max_map = 1024,
                                     .max_str = 1 << 14,
                                     .max_bin = 1 << 14,
                                     .max_ext = 1 << 10};
  std::span<const std::byte> payload = bytes;
  try {
    payload = pactor::read_envelope(bytes, limits).payload;
  } catch (const pactor::decode_error&) {
    // Not an envelope: fuzz the payload decoders with the raw bytes.
  }
  try_decode<fuzz_msg>(payload, limits);
  try_decode<std::vector<std::string>>(payload, limits);
  try_decode<std::map<int, std::vector<int>>>(payload, limits);
  try_decode<std::variant<bool, double, std::string>>(payload, limits);
  return 0;
}
