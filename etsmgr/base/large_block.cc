#include "etsmgr/base/large_block.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <new>

namespace etsmgr::large_block {
namespace {

constexpr uintptr_t kPage = 4096;
constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

std::atomic<size_t> g_in_use{0};

}  // namespace

size_t Footprint(size_t bytes) { return (bytes + kPage - 1) & ~(kPage - 1); }

void* Allocate(size_t bytes) {
  const size_t size = Footprint(bytes);
  // Over-map by one huge page, then unmap both ends around a 2 MB-aligned start.
  void* raw =
      mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = start + size + kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  // Advice only: a kernel without transparent huge pages answers EINVAL and keeps small pages.
  (void)madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
  g_in_use.fetch_add(size, std::memory_order_relaxed);
  return reinterpret_cast<void*>(aligned);
}

void Free(void* block, size_t bytes) {
  const size_t size = Footprint(bytes);
  munmap(block, size);
  g_in_use.fetch_sub(size, std::memory_order_relaxed);
}

size_t BytesInUse() { return g_in_use.load(std::memory_order_relaxed); }

}  // namespace etsmgr::large_block
