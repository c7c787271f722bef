#include "etsmgr/base/block_cache.h"

#include <new>

namespace etsmgr::block_cache {
namespace internal {

constinit thread_local Cache t_cache = {};

namespace {

void Flush() {
  Cache& cache = t_cache;
  cache.gone = true;
  cache.armed = false;
  for (size_t cls = 0; cls < kClasses; ++cls) {
    while (FreeBlock* block = cache.heads[cls]) {
      cache.heads[cls] = block->next;
      ::operator delete(block, ClassSize(cls));
    }
    cache.counts[cls] = 0;
  }
}

struct Flusher {
  ~Flusher() { Flush(); }
};
thread_local Flusher t_flusher;

}  // namespace

void* AllocateSlow(size_t size) {
  if (kEnabled && size != 0 && size <= kMaxCached) {
    // Always the whole class: any thread's cache may take this block back for its class.
    return ::operator new(ClassSize(ClassOf(size)));
  }
  return ::operator new(size);
}

void FreeSlow(void* p, size_t size) {
  if (p == nullptr) return;
  if (kEnabled && size != 0 && size <= kMaxCached) {
    size_t cls = ClassOf(size);
    Cache& cache = t_cache;
    if (!cache.armed && !cache.gone) {
      // The thread's first block: arm the flusher (its destructor runs at this thread's exit),
      // then keep it.
      (void)&t_flusher;
      cache.armed = true;
    }
    if (Keep(cache, cls, p)) return;
    ::operator delete(p, ClassSize(cls));
    return;
  }
  ::operator delete(p, size);
}

}  // namespace internal

bool Enabled() { return internal::kEnabled; }

size_t CachedBlocks() {
  size_t n = 0;
  for (uint32_t c : internal::t_cache.counts) n += c;
  return n;
}

}  // namespace etsmgr::block_cache
