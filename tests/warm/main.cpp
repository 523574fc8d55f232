#define BOOST_TEST_MODULE warm_restart
#include <boost/test/unit_test.hpp>
