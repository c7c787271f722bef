#include "etsmgr/base/block_cache.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <new>

namespace etsmgr::block_cache {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kEnabled = false;
#else
constexpr bool kEnabled = true;
#endif

// Class sizes follow the heap's own: glibc hands out 16-byte-aligned chunks with an 8-byte header,
// so a request of 16k - 8 bytes fills a chunk exactly. Classes of 24, 40, 56, ..., 1016 bytes
// then cost no more heap than asking malloc for the exact size (rounding requests up to a coarser
// class would: an idle process's frame grew by 16 bytes with 32-byte classes).
constexpr size_t kClasses = 63;  // 24, 40, ..., 1016 bytes.
constexpr size_t kMaxCached = 1016;
constexpr size_t kMaxBytesPerClass = 32 * 1024;

constexpr size_t ClassOf(size_t size) { return size <= 24 ? 0 : (size + 8 + 15) / 16 - 2; }
constexpr size_t ClassSize(size_t cls) { return (cls + 2) * 16 - 8; }
static_assert(ClassSize(ClassOf(1)) == 24 && ClassSize(ClassOf(24)) == 24 &&
              ClassSize(ClassOf(25)) == 40 && ClassSize(ClassOf(kMaxCached)) == kMaxCached &&
              ClassOf(kMaxCached) == kClasses - 1);
// Blocks kept per class, tabulated (a division per free is not free).
constexpr auto kClassLimits = [] {
  std::array<uint32_t, kClasses> limits{};
  for (size_t cls = 0; cls < kClasses; ++cls) {
    limits[cls] = static_cast<uint32_t>(std::max<size_t>(32, kMaxBytesPerClass / ClassSize(cls)));
  }
  return limits;
}();

struct FreeBlock {
  FreeBlock* next;
};

// The lists themselves are trivially destructible and constant-initialised, so every access is
// a plain thread-local load (no initialisation guard). A separate thread-local Flusher, touched
// once per thread, returns the blocks to the heap when the thread exits.
struct Cache {
  FreeBlock* heads[kClasses];
  uint32_t counts[kClasses];
  bool flusher_armed;
  bool gone;  // The thread is exiting: its lists were flushed; bypass them from now on.

  void* Take(size_t cls) {
    FreeBlock* block = heads[cls];
    if (block == nullptr) return nullptr;
    heads[cls] = block->next;
    --counts[cls];
    return block;
  }
  bool Give(size_t cls, void* p);
  void Flush() {
    gone = true;
    for (size_t cls = 0; cls < kClasses; ++cls) {
      while (FreeBlock* block = heads[cls]) {
        heads[cls] = block->next;
        ::operator delete(block, ClassSize(cls));
      }
      counts[cls] = 0;
    }
  }
};

constinit thread_local Cache t_cache = {};

struct Flusher {
  ~Flusher() { t_cache.Flush(); }
};
thread_local Flusher t_flusher;

bool Cache::Give(size_t cls, void* p) {
  if (gone || counts[cls] >= kClassLimits[cls]) return false;
  if (!flusher_armed) [[unlikely]] {
    flusher_armed = true;
    (void)&t_flusher;  // Constructs it, so its destructor runs at this thread's exit.
  }
  auto* block = static_cast<FreeBlock*>(p);
  block->next = heads[cls];
  heads[cls] = block;
  ++counts[cls];
  return true;
}

}  // namespace

void* Allocate(size_t size) {
  if (kEnabled && size != 0 && size <= kMaxCached) {
    size_t cls = ClassOf(size);
    if (void* p = t_cache.Take(cls)) return p;  // Empty once the thread is exiting.
    // Always the whole class: any thread's cache may take this block back for its class.
    return ::operator new(ClassSize(cls));
  }
  return ::operator new(size);
}

void Free(void* p, size_t size) {
  if (p == nullptr) return;
  if (kEnabled && size != 0 && size <= kMaxCached) {
    size_t cls = ClassOf(size);
    if (t_cache.Give(cls, p)) return;
    ::operator delete(p, ClassSize(cls));
    return;
  }
  ::operator delete(p, size);
}

bool Enabled() { return kEnabled; }

size_t CachedBlocks() {
  size_t n = 0;
  for (uint32_t c : t_cache.counts) n += c;
  return n;
}

}  // namespace etsmgr::block_cache
