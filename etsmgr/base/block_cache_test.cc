#include "etsmgr/base/block_cache.h"

#include <malloc.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "etsmgr/base/sanitizers.h"
#include "gtest/gtest.h"

#if ETSMGR_ASAN || ETSMGR_TSAN
// From the sanitizers' allocator interface (gcc ships no allocator_interface.h).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif
#if ETSMGR_ASAN
#include <sanitizer/asan_interface.h>
#endif

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
  if (internal::kSanitized) GTEST_SKIP() << "glibc's chunk sizes: the sanitizers' heap has others";
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

// The heap's bytes in use (the sanitizers' allocators keep no mallinfo).
size_t HeapBytesInUse() {
#if ETSMGR_ASAN || ETSMGR_TSAN
  return __sanitizer_get_current_allocated_bytes();
#else
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

// On a fresh thread (an empty cache), each class keeps at most 32 KiB: 1365 blocks of 24 bytes,
// 32 of 1000 bytes (the 1016-byte class).
TEST(BlockCache, CacheIsBoundedPerClass) {
  if (!Enabled()) GTEST_SKIP() << "ETSMGR_BLOCK_CACHE=off: no cache";
  size_t kept = 0;
  size_t kept_small = 0;
  size_t kept_large = 0;
  std::thread t([&] {
    std::vector<std::pair<void*, size_t>> blocks;
    for (int i = 0; i < 5'000; ++i) blocks.emplace_back(Allocate(24), 24);
    for (int i = 0; i < 10'000; ++i) blocks.emplace_back(Allocate(1000), 1000);
    for (auto [p, size] : blocks) Free(p, size);
    kept = CachedBlocks();
    kept_small = CachedBlocks(24);
    kept_large = CachedBlocks(1000);
  });
  t.join();
  EXPECT_EQ(kept_small, 32u * 1024 / 24);
  EXPECT_EQ(kept_large, 32u);  // 32 KiB would be 32.25 blocks.
  EXPECT_EQ(kept, kept_small + kept_large);
}

// A block freed on another thread joins that thread's cache and is what that thread's next
// allocation of the class gets back, contents untouched on the way; the reverse too.
TEST(BlockCache, BlocksCrossThreads) {
  constexpr int kBlocks = 100;
  auto size_of = [](int i) { return static_cast<size_t>(24 + i); };  // Classes 24 .. 136 B.
  std::vector<void*> mine;
  for (int i = 0; i < kBlocks; ++i) {
    mine.push_back(Allocate(size_of(i)));
    std::memset(mine[i], i, size_of(i));
  }
  std::vector<void*> theirs;
  bool intact = true;
  size_t cached_after_free = 0;
  size_t cached_after_reuse = 0;
  std::thread t([&] {
    for (int i = 0; i < kBlocks; ++i) {
      const auto* bytes = static_cast<const unsigned char*>(mine[i]);
      for (size_t b = 0; b < size_of(i); ++b) intact = intact && bytes[b] == i;
      Free(mine[i], size_of(i));
    }
    cached_after_free = CachedBlocks();
    // The same sizes in reverse: each class hands back its blocks, last freed first.
    for (int i = kBlocks - 1; i >= 0; --i) {
      theirs.push_back(Allocate(size_of(i)));
      std::memset(theirs.back(), 0x70 + i % 16, size_of(i));
    }
    cached_after_reuse = CachedBlocks();
  });
  t.join();
  EXPECT_TRUE(intact);
  std::reverse(theirs.begin(), theirs.end());  // theirs[i] has size_of(i) now.
  if (Enabled()) {
    EXPECT_EQ(cached_after_free, static_cast<size_t>(kBlocks));
    EXPECT_EQ(cached_after_reuse, 0u);
    std::vector<void*> a = mine;
    std::vector<void*> b = theirs;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << "the other thread's allocations did not come from its cache";
  }
  size_t before = CachedBlocks();
  for (int i = 0; i < kBlocks; ++i) {
    const auto* bytes = static_cast<const unsigned char*>(theirs[i]);
    for (size_t b = 0; b < size_of(i); ++b) ASSERT_EQ(bytes[b], 0x70 + i % 16) << i;
    Free(theirs[i], size_of(i));
  }
  if (Enabled()) {
    EXPECT_EQ(CachedBlocks(), before + kBlocks);
  }
}

#if ETSMGR_ASAN
// ASan: a cached block is poisoned (a use of it is reported), and unpoisoned when taken again.
TEST(BlockCache, CachedBlocksArePoisoned) {
  if (!Enabled()) GTEST_SKIP() << "ETSMGR_BLOCK_CACHE=off: no cache";
  void* p = Allocate(200);
  EXPECT_EQ(__asan_region_is_poisoned(p, 200), nullptr);
  Free(p, 200);
  EXPECT_TRUE(__asan_address_is_poisoned(p));
  EXPECT_TRUE(__asan_address_is_poisoned(static_cast<char*>(p) + 199));
  void* q = Allocate(200);
  EXPECT_EQ(q, p);
  EXPECT_EQ(__asan_region_is_poisoned(q, 200), nullptr);
  Free(q, 200);
}

TEST(BlockCacheDeathTest, UseOfACachedBlockIsReported) {
  if (!Enabled()) GTEST_SKIP() << "ETSMGR_BLOCK_CACHE=off: no cache";
  EXPECT_DEATH(
      {
        auto* p = static_cast<volatile char*>(Allocate(64));
        Free(const_cast<char*>(p), 64);
        p[10] = 1;
      },
      "use-after-poison");
}
#endif

TEST(BlockCache, AnExitingThreadGivesItsBlocksBack) {
  if (!Enabled()) GTEST_SKIP() << "ETSMGR_BLOCK_CACHE=off: no cache";
  std::thread warm([] { Free(Allocate(64), 64); });  // Thread start-up allocations, once.
  warm.join();
  size_t before = HeapBytesInUse();
  size_t held = 0;
  std::thread t([&held] {
    std::vector<void*> blocks;
    for (int i = 0; i < 30; ++i) blocks.push_back(Allocate(512));
    for (void* p : blocks) Free(p, 512);
    held = CachedBlocks(512);  // Held by this thread's cache...
  });
  t.join();
  EXPECT_EQ(held, 30u);
  // ...and back in the heap once it exited (30 x 520 bytes would still be in use otherwise).
  size_t after = HeapBytesInUse();
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
