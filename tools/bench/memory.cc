#include "tools/bench/memory.h"

#include <malloc.h>
#include <unistd.h>

#include <fstream>

#include "etsmgr/base/large_block.h"

namespace etsmgr::bench {

size_t HeapBytesInUse() {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd + large_block::BytesInUse();
}

size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages_total = 0;
  size_t pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace etsmgr::bench
