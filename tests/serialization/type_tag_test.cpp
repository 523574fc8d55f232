// Tests for type tags.

#include <pactor/serialization/type_tag.hpp>

#include <boost/test/unit_test.hpp>

#include <map>
#include <string>
#include <vector>

namespace demo {
struct add {};
struct renamed {
  static constexpr std::string_view pactor_type_name = "demo.renamed.v1";
};
} // namespace demo

BOOST_AUTO_TEST_SUITE(type_tag)

BOOST_AUTO_TEST_CASE(tags_are_compile_time_constants) {
  static_assert(pactor::type_tag<demo::add>() != 0);
  static_assert(pactor::type_tag<int>() != pactor::type_tag<long>());
  constexpr auto tag = pactor::type_tag<demo::add>();
  BOOST_CHECK_EQUAL(tag, pactor::type_tag<demo::add>());
}

BOOST_AUTO_TEST_CASE(the_name_is_the_qualified_type_name) {
  BOOST_CHECK_EQUAL(pactor::type_name<demo::add>(), "demo::add");
  BOOST_CHECK_EQUAL(pactor::type_name<int>(), "int");
  BOOST_CHECK_EQUAL((pactor::type_name<std::map<int, int>>()),
                    "std::map<int, int>");
  BOOST_CHECK_EQUAL(pactor::type_name<int[3]>(), "int [3]");
}

BOOST_AUTO_TEST_CASE(qualifiers_do_not_change_the_tag) {
  BOOST_CHECK_EQUAL(pactor::type_tag<const demo::add&>(),
                    pactor::type_tag<demo::add>());
  BOOST_CHECK_EQUAL(pactor::type_tag<volatile demo::add>(),
                    pactor::type_tag<demo::add>());
}

BOOST_AUTO_TEST_CASE(distinct_types_get_distinct_tags) {
  BOOST_CHECK_NE(pactor::type_tag<std::vector<int>>(),
                 pactor::type_tag<std::vector<long>>());
  BOOST_CHECK_NE(pactor::type_tag<demo::add>(),
                 pactor::type_tag<demo::renamed>());
}

BOOST_AUTO_TEST_CASE(a_type_can_fix_its_wire_name) {
  BOOST_CHECK_EQUAL(pactor::type_name<demo::renamed>(), "demo.renamed.v1");
  BOOST_CHECK_EQUAL(pactor::type_tag<demo::renamed>(),
                    pactor::detail::fnv1a64("demo.renamed.v1"));
}

BOOST_AUTO_TEST_SUITE_END()
