// Replays every input the fuzzer (fuzz_open.cc) once failed on, in the normal suite and under the
// sanitizers: each must now open, check and operate, or fail with a typed error, promptly.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "etsmgr/table/shared/fuzz_segment.h"
#include "gtest/gtest.h"

namespace etsmgr::shared_testing {
namespace {

TEST(FuzzRegressionTest, SavedFindings) {
  int replayed = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator("etsmgr/table/shared/testdata/fuzz")) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().string());
    FuzzSegmentOnce(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

}  // namespace
}  // namespace etsmgr::shared_testing
