#include "etsmgr/base/block_cache.h"

#include <algorithm>
#include <new>

namespace etsmgr::block_cache {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kEnabled = false;
#else
constexpr bool kEnabled = true;
#endif

constexpr size_t kGranule = 32;
constexpr size_t kClasses = 32;  // 32, 64, ..., 1024 bytes.
constexpr size_t kMaxBytesPerClass = 32 * 1024;

constexpr size_t ClassOf(size_t size) { return (size - 1) / kGranule; }
constexpr size_t ClassSize(size_t cls) { return (cls + 1) * kGranule; }
constexpr size_t ClassLimit(size_t cls) {
  return std::max<size_t>(32, kMaxBytesPerClass / ClassSize(cls));
}

struct FreeBlock {
  FreeBlock* next;
};

class Cache {
 public:
  ~Cache();
  void* Take(size_t cls) {
    FreeBlock* block = heads_[cls];
    if (block == nullptr) return nullptr;
    heads_[cls] = block->next;
    --counts_[cls];
    return block;
  }
  bool Give(size_t cls, void* p) {
    if (counts_[cls] >= ClassLimit(cls)) return false;
    auto* block = static_cast<FreeBlock*>(p);
    block->next = heads_[cls];
    heads_[cls] = block;
    ++counts_[cls];
    return true;
  }
  size_t blocks() const {
    size_t n = 0;
    for (size_t c : counts_) n += c;
    return n;
  }

 private:
  FreeBlock* heads_[kClasses] = {};
  size_t counts_[kClasses] = {};
};

// Trivially destructible, so it may be read after the cache's destructor ran at thread exit.
thread_local bool t_gone = false;
thread_local Cache t_cache;

Cache::~Cache() {
  t_gone = true;
  for (size_t cls = 0; cls < kClasses; ++cls) {
    while (FreeBlock* block = heads_[cls]) {
      heads_[cls] = block->next;
      ::operator delete(block, ClassSize(cls));
    }
    counts_[cls] = 0;
  }
}

}  // namespace

void* Allocate(size_t size) {
  if (kEnabled && size != 0 && size <= kGranule * kClasses) {
    size_t cls = ClassOf(size);
    if (!t_gone) {
      if (void* p = t_cache.Take(cls)) return p;
    }
    // Always the whole class: any thread's cache may take this block back for its class.
    return ::operator new(ClassSize(cls));
  }
  return ::operator new(size);
}

void Free(void* p, size_t size) {
  if (p == nullptr) return;
  if (kEnabled && size != 0 && size <= kGranule * kClasses) {
    size_t cls = ClassOf(size);
    if (!t_gone && t_cache.Give(cls, p)) return;
    ::operator delete(p, ClassSize(cls));
    return;
  }
  ::operator delete(p, size);
}

bool Enabled() { return kEnabled; }

size_t CachedBlocks() { return t_gone ? 0 : t_cache.blocks(); }

}  // namespace etsmgr::block_cache
