#include "etsmgr/base/block_cache.h"

#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace etsmgr::block_cache {
namespace {

TEST(BlockCache, FreedBlockIsReusedForTheSameClass) {
  void* a = Allocate(42);
  std::memset(a, 0xab, 42);
  Free(a, 42);
  void* b = Allocate(56);  // Same class (41..56 bytes).
  if (Enabled()) {
    EXPECT_EQ(a, b);
  }
  std::memset(b, 0xcd, 56);  // The whole class is usable (ASan would flag an overflow).
  Free(b, 56);
}

TEST(BlockCache, ClassesDoNotMix) {
  void* small = Allocate(40);
  Free(small, 40);
  void* big = Allocate(41);  // Next class: never the 40-byte block.
  if (Enabled()) {
    EXPECT_NE(small, big);  // (A sanitizer's allocator may reuse the block for any size.)
  }
  std::memset(big, 0, 41);
  Free(big, 41);
}

TEST(BlockCache, CostsNoMoreHeapThanExactMalloc) {
  for (size_t size : {1, 24, 25, 100, 200, 333, 512, 1000, 1016}) {
    void* cached = Allocate(size);
    void* exact = std::malloc(size);
    EXPECT_EQ(malloc_usable_size(cached), malloc_usable_size(exact)) << size;
    std::free(exact);
    Free(cached, size);
  }
}

TEST(BlockCache, LargeBlocksBypassTheCache) {
  size_t before = CachedBlocks();
  void* p = Allocate(4096);
  std::memset(p, 1, 4096);
  Free(p, 4096);
  EXPECT_EQ(CachedBlocks(), before);
}

TEST(BlockCache, CacheIsBoundedPerClass) {
  std::vector<void*> blocks;
  for (int i = 0; i < 10'000; ++i) blocks.push_back(Allocate(1000));
  for (void* p : blocks) Free(p, 1000);
  // 1000-byte blocks: at most 32 KiB kept, i.e. 32 blocks (plus whatever other classes hold).
  if (Enabled()) {
    EXPECT_GE(CachedBlocks(), 32u);
  }
  EXPECT_LT(CachedBlocks(), 32u + 2000u);
}

TEST(BlockCache, BlocksCrossThreads) {
  // Allocated here, freed on another thread (joins that thread's cache, emptied at its exit),
  // and the reverse.
  std::vector<void*> mine;
  for (int i = 0; i < 100; ++i) mine.push_back(Allocate(24 + i));
  std::vector<void*> theirs;
  std::thread t([&] {
    for (int i = 0; i < 100; ++i) Free(mine[i], 24 + i);
    for (int i = 0; i < 100; ++i) theirs.push_back(Allocate(100 + i));
  });
  t.join();
  for (int i = 0; i < 100; ++i) {
    std::memset(theirs[i], 7, 100 + i);
    Free(theirs[i], 100 + i);
  }
}

TEST(BlockCache, AnExitingThreadGivesItsBlocksBack) {
  if (!Enabled()) GTEST_SKIP() << "sanitizer build: no cache";
  std::thread warm([] { Free(Allocate(64), 64); });  // Thread start-up allocations, once.
  warm.join();
  size_t before = mallinfo2().uordblks;
  std::thread t([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 30; ++i) blocks.push_back(Allocate(512));
    for (void* p : blocks) Free(p, 512);
    EXPECT_GE(CachedBlocks(), 30u);  // Held by this thread's cache...
  });
  t.join();
  // ...and back in the heap once it exited (30 x 512 bytes would still be in use otherwise).
  size_t after = mallinfo2().uordblks;
  EXPECT_LT(after, before + 4096) << before << " -> " << after;
}

TEST(BlockCache, ZeroSizeAndNull) {
  void* p = Allocate(0);
  EXPECT_NE(p, nullptr);
  Free(p, 0);
  Free(nullptr, 64);
}

}  // namespace
}  // namespace etsmgr::block_cache
