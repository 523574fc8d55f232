// main() of every test binary: pactor::init first (test children are this
// binary re-executed in a helper role), then hygiene, then Boost.Test.

#include <pactor/runtime/init.hpp>

#include "hygiene.hpp"
#include <boost/test/unit_test.hpp>

bool init_unit_test(); // defined by BOOST_TEST_MODULE in the suite's main.cpp

int main(int argc, char** argv) {
  pactor::init(argc, argv);
  pactor_test::install_hygiene();
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
