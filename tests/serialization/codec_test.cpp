// Tests for the envelope and the codec: round trips of every supported shape
// and every error path.

#include <pactor/serialization/codec.hpp>

#include <boost/test/unit_test.hpp>

#include <array>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace {

struct add {
  int n = 0;
  MSGPACK_DEFINE(n)
  friend bool operator==(const add&, const add&) = default;
};

struct total {
  MSGPACK_DEFINE()
  friend bool operator==(const total&, const total&) = default;
};

enum class color : std::uint8_t { red = 1, green = 2 };
enum plain_enum { first = 10, second = 20 };

struct order {
  std::string item;
  std::vector<int> sizes;
  std::optional<std::string> note;
  std::variant<int, std::string> code;
  color c = color::red;
  std::map<std::string, double> prices;
  MSGPACK_DEFINE(item, sizes, note, code, c, prices)
  friend bool operator==(const order&, const order&) = default;
};

template <class T>
T round_trip(const T& value, pactor::envelope meta = {}) {
  auto bytes = pactor::encode(value, meta);
  return pactor::decode<T>(bytes);
}

template <class T>
void check_round_trip(const T& value) {
  BOOST_CHECK(round_trip(value) == value);
}

std::vector<std::byte> bytes_of(std::initializer_list<int> xs) {
  std::vector<std::byte> out;
  for (int x : xs)
    out.push_back(static_cast<std::byte>(x));
  return out;
}

// A valid envelope around arbitrary payload bytes.
std::vector<std::byte> with_payload(std::vector<std::byte> payload,
                                    pactor::type_tag_t tag) {
  std::vector<std::byte> out(pactor::envelope_header_size);
  pactor::write_envelope_header(out.data(), {.type = tag},
                                static_cast<std::uint32_t>(payload.size()));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

template <class T>
pactor::decode_errc decode_code(std::span<const std::byte> bytes,
                                const pactor::decode_limits& limits = {}) {
  try {
    (void)pactor::decode<T>(bytes, limits);
  } catch (const pactor::decode_error& e) {
    return e.code();
  }
  BOOST_ERROR("decode did not fail");
  return {};
}

} // namespace

BOOST_AUTO_TEST_SUITE(codec)

BOOST_AUTO_TEST_CASE(scalars_and_strings_round_trip) {
  check_round_trip(42);
  check_round_trip(-7LL);
  check_round_trip(3.5);
  check_round_trip(true);
  check_round_trip(std::string("hello bob"));
  check_round_trip(std::string());
  check_round_trip(std::string("\0binary\xff", 8));
}

BOOST_AUTO_TEST_CASE(containers_round_trip) {
  check_round_trip(std::vector<int>{1, 2, 3});
  check_round_trip(std::vector<std::string>{});
  check_round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}});
  check_round_trip(std::unordered_map<int, std::string>{{1, "x"}});
  check_round_trip(std::set<int>{3, 1, 2});
  check_round_trip(std::array<int, 3>{7, 8, 9});
  check_round_trip(std::tuple<int, std::string>{1, "one"});
  check_round_trip(std::vector<std::byte>{std::byte{0}, std::byte{255}});
}

BOOST_AUTO_TEST_CASE(optional_variant_and_enums_round_trip) {
  check_round_trip(std::optional<int>{});
  check_round_trip(std::optional<int>{5});
  check_round_trip(std::variant<int, std::string>{std::string("s")});
  check_round_trip(std::variant<int, std::string>{9});
  check_round_trip(color::green);
  check_round_trip(second);
}

BOOST_AUTO_TEST_CASE(aggregates_round_trip) {
  check_round_trip(add{2});
  check_round_trip(total{});
  check_round_trip(order{"shirt",
                         {38, 40},
                         std::nullopt,
                         std::string("X1"),
                         color::green,
                         {{"eur", 9.5}}});
}

BOOST_AUTO_TEST_CASE(the_envelope_carries_its_metadata) {
  pactor::envelope meta{
    .sender = 11, .request_id = 22, .delivery_count = 3, .flags = 0x5};
  auto bytes = pactor::encode(add{2}, meta);
  auto msg = pactor::read_envelope(bytes);
  meta.type = pactor::type_tag<add>();
  BOOST_CHECK(msg.header == meta);
  BOOST_CHECK_EQUAL(msg.payload.size(),
                    bytes.size() - pactor::envelope_header_size);
  BOOST_CHECK_EQUAL(pactor::decode_message<add>(msg).n, 2);
}

BOOST_AUTO_TEST_CASE(an_envelope_with_an_origin_has_the_longer_header) {
  pactor::envelope meta{
    .sender = 7, .origin = 1234567890123, .origin_index = 4};
  auto bytes = pactor::encode(add{5}, meta);
  BOOST_CHECK_EQUAL(std::to_integer<int>(bytes[3]),
                    static_cast<int>(pactor::envelope_origin_header_size));
  auto msg = pactor::read_envelope(bytes);
  BOOST_CHECK_EQUAL(msg.header.origin, 1234567890123U);
  BOOST_CHECK_EQUAL(msg.header.origin_index, 4U);
  BOOST_CHECK_EQUAL(msg.payload.size(),
                    bytes.size() - pactor::envelope_origin_header_size);
  BOOST_CHECK_EQUAL(pactor::decode_message<add>(msg).n, 5);
  // Without an origin the header stays 40 bytes, and reads as no origin.
  auto plain = pactor::encode(add{5}, {.sender = 7});
  BOOST_CHECK_EQUAL(plain.size() + 16, bytes.size());
  BOOST_CHECK_EQUAL(pactor::read_envelope(plain).header.origin, 0U);
}

BOOST_AUTO_TEST_CASE(encode_to_appends_several_messages) {
  std::vector<std::byte> buf;
  pactor::encode_to(buf, add{1});
  auto first = buf.size();
  pactor::encode_to(buf, std::string("two"));
  auto one = std::span<const std::byte>(buf).first(first);
  auto two = std::span<const std::byte>(buf).subspan(first);
  BOOST_CHECK_EQUAL(pactor::decode<add>(one).n, 1);
  BOOST_CHECK_EQUAL(pactor::decode<std::string>(two), "two");
}

BOOST_AUTO_TEST_CASE(a_tag_mismatch_names_both_types) {
  auto bytes = pactor::encode(add{2});
  try {
    (void)pactor::decode<std::string>(bytes);
    BOOST_ERROR("decode did not fail");
  } catch (const pactor::decode_error& e) {
    BOOST_CHECK(e.code() == pactor::decode_errc::type_mismatch);
    BOOST_CHECK_EQUAL(e.expected_tag(), pactor::type_tag<std::string>());
    BOOST_CHECK_EQUAL(e.actual_tag(), pactor::type_tag<add>());
    std::string what = e.what();
    BOOST_CHECK_MESSAGE(what.find("expected 'std::") != std::string::npos
                          && what.find("got tag 0x") != std::string::npos,
                        what);
  }
}

BOOST_AUTO_TEST_CASE(a_payload_of_the_wrong_shape_is_rejected) {
  // Right tag, but the payload is a string where `add` expects an array.
  std::vector<std::byte> payload;
  pactor::pack_payload(payload, std::string("not an add"));
  auto bytes = with_payload(payload, pactor::type_tag<add>());
  BOOST_CHECK(decode_code<add>(bytes) == pactor::decode_errc::wrong_shape);
  // A variant index out of range.
  payload.clear();
  pactor::pack_payload(payload, std::make_tuple(7, 1));
  using int_or_bool = std::variant<int, bool>;
  bytes = with_payload(payload, pactor::type_tag<int_or_bool>());
  BOOST_CHECK(decode_code<int_or_bool>(bytes)
              == pactor::decode_errc::wrong_shape);
}

BOOST_AUTO_TEST_CASE(truncated_bytes_are_rejected) {
  auto bytes = pactor::encode(std::string("hello"));
  for (std::size_t n : {0UL, 3UL, 39UL, bytes.size() - 1}) {
    auto cut = std::span<const std::byte>(bytes).first(n);
    BOOST_CHECK(decode_code<std::string>(cut)
                == pactor::decode_errc::truncated);
  }
  // An envelope that is complete but announces more payload than msgpack has.
  auto inner = bytes_of({0xa5, 'h', 'e'}); // str of 5 bytes, 2 present
  auto framed = with_payload(inner, pactor::type_tag<std::string>());
  BOOST_CHECK(decode_code<std::string>(framed)
              == pactor::decode_errc::truncated);
}

BOOST_AUTO_TEST_CASE(bad_magic_and_unknown_versions_are_rejected) {
  auto bytes = pactor::encode(1);
  auto wrong = bytes;
  wrong[0] = std::byte{0};
  BOOST_CHECK(decode_code<int>(wrong) == pactor::decode_errc::bad_magic);
  auto future = bytes;
  future[2] = std::byte{9};
  BOOST_CHECK(decode_code<int>(future)
              == pactor::decode_errc::unsupported_version);
}

BOOST_AUTO_TEST_CASE(oversized_payloads_and_values_are_rejected) {
  auto big = pactor::encode(std::string(1000, 'x'));
  BOOST_CHECK(decode_code<std::string>(big, {.max_payload = 100})
              == pactor::decode_errc::too_large);
  BOOST_CHECK(decode_code<std::string>(big, {.max_str = 100})
              == pactor::decode_errc::too_large);
  auto many = pactor::encode(std::vector<int>(100, 1));
  BOOST_CHECK(decode_code<std::vector<int>>(many, {.max_array = 10})
              == pactor::decode_errc::too_large);
  auto deep = pactor::encode(std::vector<std::vector<std::vector<int>>>{{{1}}});
  BOOST_CHECK(decode_code<std::vector<std::vector<std::vector<int>>>>(
                deep, {.max_depth = 2})
              == pactor::decode_errc::too_large);
  // A header that claims 4 GiB of payload does not allocate it.
  auto liar = pactor::encode(1);
  std::uint32_t huge = 0xffffffff;
  std::memcpy(liar.data() + 36, &huge, 4);
  BOOST_CHECK(decode_code<int>(liar) == pactor::decode_errc::too_large);
  // A msgpack array header claiming 2^32-1 elements in 5 bytes.
  auto claim = with_payload(bytes_of({0xdd, 0xff, 0xff, 0xff, 0xff}),
                            pactor::type_tag<std::vector<int>>());
  BOOST_CHECK(decode_code<std::vector<int>>(claim)
              == pactor::decode_errc::too_large);
}

BOOST_AUTO_TEST_CASE(garbage_and_trailing_bytes_are_rejected) {
  auto garbage = with_payload(bytes_of({0xc1}), pactor::type_tag<int>());
  BOOST_CHECK(decode_code<int>(garbage) == pactor::decode_errc::malformed);
  auto two_values
    = with_payload(bytes_of({0x01, 0x02}), pactor::type_tag<int>());
  BOOST_CHECK(decode_code<int>(two_values)
              == pactor::decode_errc::trailing_bytes);
  auto bytes = pactor::encode(1);
  bytes.push_back(std::byte{0});
  BOOST_CHECK(decode_code<int>(bytes) == pactor::decode_errc::trailing_bytes);
}

BOOST_AUTO_TEST_CASE(every_error_code_has_a_name) {
  using pactor::decode_errc;
  for (auto c : {decode_errc::truncated, decode_errc::bad_magic,
                 decode_errc::unsupported_version, decode_errc::too_large,
                 decode_errc::malformed, decode_errc::type_mismatch,
                 decode_errc::wrong_shape, decode_errc::trailing_bytes})
    BOOST_CHECK(pactor::to_string(c) != "unknown");
}

BOOST_AUTO_TEST_SUITE_END()
