// Segment names for tests (test-only). /dev/shm is one namespace for every test that runs at the
// same time, and a sandboxed test's pid is small and repeats (each sandbox has its own pid
// namespace): a name made of a prefix and the pid alone collides between tests run in parallel.
//
//   std::string name = etsmgr::shared_testing::UniqueSegmentName("etsmgr-test");
//   // "etsmgr-test-12-9f3a61c2d4e5b607-0"
//
// Thread-safe.
#ifndef ETSMGR_TABLE_SHARED_TEST_NAMES_H_
#define ETSMGR_TABLE_SHARED_TEST_NAMES_H_

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace etsmgr::shared_testing {

// `prefix`-<pid>-<64 random bits, drawn once per process>-<a per-process counter>.
inline std::string UniqueSegmentName(std::string_view prefix) {
  static const uint64_t token = [] {
    std::random_device rd;
    return (uint64_t{rd()} << 32) ^ rd();
  }();
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(std::string(prefix), "-", getpid(), "-", absl::Hex(token, absl::kZeroPad16),
                      "-", counter.fetch_add(1, std::memory_order_relaxed));
}

}  // namespace etsmgr::shared_testing

#endif  // ETSMGR_TABLE_SHARED_TEST_NAMES_H_
