// Test helper: run a parameterized suite on every executor backend.
//
//   class MyTest : public BackendTest {};
//   TEST_P(MyTest, Works) { ... backend() ... }
//   ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(MyTest);
//
// The io_uring instance skips (GTEST_SKIP) where the probe says io_uring is blocked, so the same
// test still runs on the epoll fallback.
#ifndef ETSMGR_EXECUTOR_TESTING_TEST_BACKENDS_H_
#define ETSMGR_EXECUTOR_TESTING_TEST_BACKENDS_H_

#include <string>

#include "etsmgr/executor/backend.h"
#include "gtest/gtest.h"

namespace etsmgr {

class BackendTest : public ::testing::TestWithParam<BackendPreference> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendPreference::kIoUring) {
      absl::Status probe = ProbeIoUring();
      if (!probe.ok()) GTEST_SKIP() << "io_uring blocked here: " << probe.message();
    }
  }
  BackendPreference backend() const { return GetParam(); }
};

inline std::string BackendParamName(const ::testing::TestParamInfo<BackendPreference>& info) {
  return info.param == BackendPreference::kIoUring ? "io_uring" : "epoll";
}

#define ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(suite)                                   \
  INSTANTIATE_TEST_SUITE_P(AllBackends, suite,                                      \
                           ::testing::Values(::etsmgr::BackendPreference::kIoUring, \
                                             ::etsmgr::BackendPreference::kEpoll),  \
                           ::etsmgr::BackendParamName)

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_TESTING_TEST_BACKENDS_H_
