// Per-thread caches of small freed blocks, for objects allocated and freed once per message or per
// coroutine call (mailbox envelopes, Task frames): a block freed goes onto the freeing thread's
// list for its size class and the next allocation of that class on that thread takes it back,
// which keeps malloc off the messaging and call hot paths.
//
//   void* p = block_cache::Allocate(size);   // any size; small ones may come from the cache
//   block_cache::Free(p, size);              // the same size; any thread
//
// Size classes match the heap's chunk sizes (24, 40, 56, ... 1016 bytes: 16-byte steps less the
// 8-byte chunk header), so caching costs no memory over exact-size malloc; larger blocks go
// straight to operator new/delete. Each class keeps at most 32 KiB (and at least 32 blocks) per
// thread; the rest goes back to the heap. A thread's cache is emptied when the thread exits; blocks
// freed on a thread after that (by its last thread-local destructors) bypass the cache. Sanitizer
// builds bypass the cache altogether, so ASan still sees every use after free.
#ifndef ETSMGR_BASE_BLOCK_CACHE_H_
#define ETSMGR_BASE_BLOCK_CACHE_H_

#include <cstddef>

namespace etsmgr::block_cache {

void* Allocate(size_t size);
void Free(void* p, size_t size);

// False in sanitizer builds, where every call goes to operator new / delete.
bool Enabled();
// Blocks held by the calling thread's cache (tests).
size_t CachedBlocks();

}  // namespace etsmgr::block_cache

#endif  // ETSMGR_BASE_BLOCK_CACHE_H_
