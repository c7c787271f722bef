// Large blocks: memory for one big array (a large table's hash array) on its own mapping, aligned
// to 2 MB and advised for transparent huge pages.
//
// A lookup in a table of a million entries misses the cache anyway; on 4 KB pages it also misses
// the TLB, and the page walk misses the cache again. On 2 MB pages that second miss goes
// (figures: bench/results/design-measurements.md). Nothing is wasted: the
// mapping is the request rounded up to 4 KB pages, and only the 2 MB-aligned whole extents inside
// it can become huge pages. The system decides: with transparent huge pages "never", or when
// they cannot be had, these are ordinary pages. (With "madvise" and defrag "madvise", a fault may
// compact memory to find a huge page: the first touch of a block can take longer.)
//
// In AddressSanitizer builds Wanted() is false: big arrays stay on the heap, with redzones.
//
// Thread safety: any thread.
#ifndef ETSMGR_BASE_LARGE_BLOCK_H_
#define ETSMGR_BASE_LARGE_BLOCK_H_

#include <cstddef>

#include "etsmgr/base/sanitizers.h"

namespace etsmgr::large_block {

#if ETSMGR_ASAN
inline constexpr bool kEnabled = false;
#else
inline constexpr bool kEnabled = true;
#endif

// Requests smaller than one huge page cannot use one: they belong on the heap.
inline constexpr size_t kMinBytes = size_t{2} << 20;

// Whether a request of `bytes` should come from here.
constexpr bool Wanted(size_t bytes) { return kEnabled && bytes >= kMinBytes; }

// The bytes a block of `bytes` occupies: `bytes` rounded up to whole 4 KB pages.
size_t Footprint(size_t bytes);

// A block of `bytes`, aligned to 2 MB; throws std::bad_alloc when the system has no memory for
// it, as operator new does.
void* Allocate(size_t bytes);

// Frees a block from Allocate(bytes), given the same `bytes`.
void Free(void* block, size_t bytes);

// The footprint of every block allocated and not yet freed, process-wide (memory figures: the
// heap's own statistics do not see these mappings).
size_t BytesInUse();

}  // namespace etsmgr::large_block

#endif  // ETSMGR_BASE_LARGE_BLOCK_H_
