// Per-thread caches of small freed blocks, for objects allocated and freed once per message or per
// coroutine call (mailbox envelopes, Task frames, process control blocks): a block freed goes onto
// the freeing thread's list for its size class and the next allocation of that class on that
// thread takes it back, which keeps malloc off the messaging and call hot paths.
//
//   void* p = block_cache::Allocate(size);   // any size; small ones may come from the cache
//   block_cache::Free(p, size);              // the same size; any thread
//
// Size classes match the heap's chunk sizes (24, 40, 56, ... 1016 bytes: 16-byte steps less the
// 8-byte chunk header), so caching costs no memory over exact-size malloc; larger blocks go
// straight to operator new/delete. Each class keeps at most 32 KiB (and at least 32 blocks) per
// thread; the rest goes back to the heap. A thread's cache is emptied when the thread exits; blocks
// freed on a thread after that (by its last thread-local destructors) bypass the cache.
//
// Sanitizer builds run the cache too, so the sanitizers see the code that production runs: ASan
// poisons a block while it is cached (a use of a freed frame or envelope that still sits in a
// cache is reported as use-after-poison), and TSan sees the blocks move between threads. With
// ETSMGR_BLOCK_CACHE=off in the environment (read once, sanitizer builds only) every call goes to
// operator new / delete instead, so ASan's quarantine also sees a block used after it was reused.
//
// The common cases (a block of the class is cached; the list has room) are inline: a few
// instructions, no call.
#ifndef ETSMGR_BASE_BLOCK_CACHE_H_
#define ETSMGR_BASE_BLOCK_CACHE_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "etsmgr/base/sanitizers.h"

namespace etsmgr::block_cache {

void* Allocate(size_t size);
void Free(void* p, size_t size);

// False when every call goes to operator new / delete (ETSMGR_BLOCK_CACHE=off in a sanitizer
// build).
bool Enabled();
// Blocks held by the calling thread's cache, in all classes or in `size`'s class (tests).
size_t CachedBlocks();
size_t CachedBlocks(size_t size);

namespace internal {

#if ETSMGR_ASAN || ETSMGR_TSAN
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#if ETSMGR_ASAN
inline constexpr bool kPoison = true;
#else
inline constexpr bool kPoison = false;
#endif

// Sanitizer builds: whether ETSMGR_BLOCK_CACHE leaves the cache on, decided at the first call and
// fixed for the process (a block allocated in one mode must be freed in the same mode).
bool EnabledSlow();
inline bool On() {
  if constexpr (!kSanitized) {
    return true;
  } else {
    return EnabledSlow();
  }
}

// Class sizes follow the heap's own: glibc hands out 16-byte-aligned chunks with an 8-byte header,
// so a request of 16k - 8 bytes fills a chunk exactly. Classes of 24, 40, 56, ..., 1016 bytes
// then cost no more heap than asking malloc for the exact size (rounding requests up to a coarser
// class would: an idle process's frame grew by 16 bytes with 32-byte classes).
inline constexpr size_t kClasses = 63;  // 24, 40, ..., 1016 bytes.
inline constexpr size_t kMaxCached = 1016;
inline constexpr size_t kMaxBytesPerClass = 32 * 1024;

constexpr size_t ClassOf(size_t size) { return size <= 24 ? 0 : (size + 8 + 15) / 16 - 2; }
constexpr size_t ClassSize(size_t cls) { return (cls + 2) * 16 - 8; }
static_assert(ClassSize(ClassOf(1)) == 24 && ClassSize(ClassOf(24)) == 24 &&
              ClassSize(ClassOf(25)) == 40 && ClassSize(ClassOf(kMaxCached)) == kMaxCached &&
              ClassOf(kMaxCached) == kClasses - 1);
// Blocks kept per class, tabulated (a division per free is not free).
inline constexpr auto kClassLimits = [] {
  std::array<uint32_t, kClasses> limits{};
  for (size_t cls = 0; cls < kClasses; ++cls) {
    size_t fit = kMaxBytesPerClass / ClassSize(cls);
    limits[cls] = static_cast<uint32_t>(fit < 32 ? 32 : fit);
  }
  return limits;
}();

struct FreeBlock {
  FreeBlock* next;
};

// The lists themselves are trivially destructible and constant-initialised, so every access is
// a plain thread-local load (no initialisation guard). A separate thread-local Flusher, armed by
// the first block a thread keeps, returns the blocks to the heap when the thread exits.
struct Cache {
  FreeBlock* heads[kClasses];
  uint32_t counts[kClasses];
  bool armed;  // The flusher is armed and the thread is not exiting: blocks may be kept.
  bool gone;   // The thread is exiting: its lists were flushed; bypass them from now on.
};
extern constinit thread_local Cache t_cache;

// ASan: a cached block is poisoned whole (its link too); the cache unpoisons it to take it.
void PoisonBlock(void* p, size_t cls);
void UnpoisonBlock(void* p, size_t cls);

// Keeps `p` on the list of class `cls` when the thread may keep blocks and the list has room.
inline bool Keep(Cache& cache, size_t cls, void* p) {
  if (!cache.armed || cache.counts[cls] >= kClassLimits[cls]) return false;
  auto* block = static_cast<FreeBlock*>(p);
  block->next = cache.heads[cls];
  if constexpr (kPoison) PoisonBlock(block, cls);
  cache.heads[cls] = block;
  ++cache.counts[cls];
  return true;
}

void* AllocateSlow(size_t size);
void FreeSlow(void* p, size_t size);

}  // namespace internal

inline void* Allocate(size_t size) {
  using namespace internal;
  if (size - 1 < kMaxCached && On()) {  // 1..kMaxCached
    size_t cls = ClassOf(size);
    Cache& cache = t_cache;
    if (FreeBlock* block = cache.heads[cls]) {  // Empty once the thread is exiting.
      if constexpr (kPoison) UnpoisonBlock(block, cls);
      cache.heads[cls] = block->next;
      --cache.counts[cls];
      return block;
    }
  }
  return AllocateSlow(size);
}

inline void Free(void* p, size_t size) {
  using namespace internal;
  if (p != nullptr && size - 1 < kMaxCached && On()) {
    if (Keep(t_cache, ClassOf(size), p)) return;
  }
  FreeSlow(p, size);
}

}  // namespace etsmgr::block_cache

#endif  // ETSMGR_BASE_BLOCK_CACHE_H_
