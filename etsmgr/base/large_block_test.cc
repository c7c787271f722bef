#include "etsmgr/base/large_block.h"

#include <cstdint>
#include <cstring>

#include "gtest/gtest.h"

namespace etsmgr::large_block {
namespace {

TEST(LargeBlockTest, AlignedWritableAndAccounted) {
  EXPECT_FALSE(Wanted(kMinBytes - 1));
  EXPECT_EQ(Wanted(kMinBytes), kEnabled);
  EXPECT_EQ(Footprint(kMinBytes + 1), kMinBytes + 4096);
  EXPECT_EQ(Footprint(kMinBytes), kMinBytes);
  const size_t before = BytesInUse();
  const size_t bytes = 5 * kMinBytes / 2 + 123;  // 5 MB and a bit: two huge pages and a tail.
  auto* block = static_cast<unsigned char*>(Allocate(bytes));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % (uintptr_t{2} << 20), 0u);
  EXPECT_EQ(BytesInUse(), before + Footprint(bytes));
  std::memset(block, 0xab, bytes);  // Every byte is ours (ASan/valgrind would object otherwise).
  EXPECT_EQ(block[0], 0xab);
  EXPECT_EQ(block[bytes - 1], 0xab);
  auto* second = static_cast<unsigned char*>(Allocate(kMinBytes));
  EXPECT_NE(second, block);
  Free(block, bytes);
  EXPECT_EQ(BytesInUse(), before + kMinBytes);
  Free(second, kMinBytes);
  EXPECT_EQ(BytesInUse(), before);
}

}  // namespace
}  // namespace etsmgr::large_block
