#define BOOST_TEST_MODULE serialization
#include <boost/test/unit_test.hpp>
