#include "etsmgr/base/exception_text.h"

#include <stdexcept>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

TEST(CurrentExceptionTextTest, StandardExceptionGivesWhat) {
  try {
    throw std::runtime_error("table lost");
  } catch (...) {
    EXPECT_EQ(CurrentExceptionText(), "table lost");
  }
}

TEST(CurrentExceptionTextTest, OtherExceptionsAreNamedAsSuch) {
  try {
    throw 42;
  } catch (...) {
    EXPECT_EQ(CurrentExceptionText(), "non-standard exception");
  }
}

}  // namespace
}  // namespace etsmgr
