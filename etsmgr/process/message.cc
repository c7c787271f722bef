#include "etsmgr/process/message.h"

#include <cstddef>
#include <new>

namespace etsmgr {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kCacheEnvelopes = false;
#else
constexpr bool kCacheEnvelopes = true;
#endif

constexpr size_t kGranule = 32;
constexpr size_t kClasses = 8;  // 32, 64, ..., 256 bytes.
constexpr size_t kMaxCachedPerClass = 512;

struct FreeBlock {
  FreeBlock* next;
};

class EnvelopeCache {
 public:
  ~EnvelopeCache() {
    for (FreeBlock*& head : heads_) {
      while (head != nullptr) {
        FreeBlock* next = head->next;
        ::operator delete(head);
        head = next;
      }
    }
  }
  void* Take(size_t cls) {
    FreeBlock* block = heads_[cls];
    if (block == nullptr) return nullptr;
    heads_[cls] = block->next;
    --counts_[cls];
    return block;
  }
  bool Give(size_t cls, void* p) {
    if (counts_[cls] >= kMaxCachedPerClass) return false;
    auto* block = static_cast<FreeBlock*>(p);
    block->next = heads_[cls];
    heads_[cls] = block;
    ++counts_[cls];
    return true;
  }

 private:
  FreeBlock* heads_[kClasses] = {};
  size_t counts_[kClasses] = {};
};

thread_local EnvelopeCache t_cache;

}  // namespace

void* Envelope::operator new(size_t size) {
  if (kCacheEnvelopes && size <= kGranule * kClasses) {
    size_t cls = (size - 1) / kGranule;
    if (void* p = t_cache.Take(cls)) return p;
    return ::operator new((cls + 1) * kGranule);
  }
  return ::operator new(size);
}

void Envelope::operator delete(void* p, size_t size) {
  if (kCacheEnvelopes && size <= kGranule * kClasses) {
    size_t cls = (size - 1) / kGranule;
    if (t_cache.Give(cls, p)) return;
    ::operator delete(p, (cls + 1) * kGranule);
    return;
  }
  ::operator delete(p, size);
}

}  // namespace etsmgr
