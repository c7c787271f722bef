#include "etsmgr/process/message.h"

#include "etsmgr/base/block_cache.h"

namespace etsmgr {

void* Envelope::operator new(size_t size) { return block_cache::Allocate(size); }

void Envelope::operator delete(void* p, size_t size) { block_cache::Free(p, size); }

}  // namespace etsmgr
