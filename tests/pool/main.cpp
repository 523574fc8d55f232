#define BOOST_TEST_MODULE pool
#include <boost/test/unit_test.hpp>
