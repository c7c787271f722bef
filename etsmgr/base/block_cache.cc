#include "etsmgr/base/block_cache.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "etsmgr/base/sanitizers.h"

#if ETSMGR_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace etsmgr::block_cache {
namespace internal {

constinit thread_local Cache t_cache = {};

namespace {

// Sized delete where the compiler has it (clang 14 needs -fsized-deallocation for it): the heap
// then checks the size (ASan reports a mismatch).
void DeleteBlock(void* p, [[maybe_unused]] size_t size) {
#if defined(__cpp_sized_deallocation)
  ::operator delete(p, size);
#else
  ::operator delete(p);
#endif
}

void Flush() {
  Cache& cache = t_cache;
  cache.gone = true;
  cache.armed = false;
  for (size_t cls = 0; cls < kClasses; ++cls) {
    while (FreeBlock* block = cache.heads[cls]) {
      if constexpr (kPoison) UnpoisonBlock(block, cls);
      cache.heads[cls] = block->next;
      DeleteBlock(block, ClassSize(cls));
    }
    cache.counts[cls] = 0;
  }
}

struct Flusher {
  ~Flusher() { Flush(); }
};
thread_local Flusher t_flusher;

}  // namespace

bool EnabledSlow() {
  static const bool enabled = [] {
    const char* setting = std::getenv("ETSMGR_BLOCK_CACHE");
    return setting == nullptr || std::strcmp(setting, "off") != 0;
  }();
  return enabled;
}

void PoisonBlock([[maybe_unused]] void* p, [[maybe_unused]] size_t cls) {
#if ETSMGR_ASAN
  ASAN_POISON_MEMORY_REGION(p, ClassSize(cls));
#endif
}

void UnpoisonBlock([[maybe_unused]] void* p, [[maybe_unused]] size_t cls) {
#if ETSMGR_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, ClassSize(cls));
#endif
}

void* AllocateSlow(size_t size) {
  if (size != 0 && size <= kMaxCached && On()) {
    // Always the whole class: any thread's cache may take this block back for its class.
    return ::operator new(ClassSize(ClassOf(size)));
  }
  return ::operator new(size);
}

void FreeSlow(void* p, size_t size) {
  if (p == nullptr) return;
  if (size != 0 && size <= kMaxCached && On()) {
    size_t cls = ClassOf(size);
    Cache& cache = t_cache;
    if (!cache.armed && !cache.gone) {
      // The thread's first block: arm the flusher (its destructor runs at this thread's exit),
      // then keep it.
      (void)&t_flusher;
      cache.armed = true;
    }
    if (Keep(cache, cls, p)) return;
    DeleteBlock(p, ClassSize(cls));
    return;
  }
  DeleteBlock(p, size);
}

}  // namespace internal

bool Enabled() { return internal::On(); }

size_t CachedBlocks() {
  size_t n = 0;
  for (uint32_t c : internal::t_cache.counts) n += c;
  return n;
}

size_t CachedBlocks(size_t size) {
  if (size == 0 || size > internal::kMaxCached) return 0;
  return internal::t_cache.counts[internal::ClassOf(size)];
}

}  // namespace etsmgr::block_cache
