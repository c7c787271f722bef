// Memory figures for benchmarks: what the process really holds, not what one allocator path sees.
//
//   size_t before = bench::HeapBytesInUse();
//   ... build 100k tables ...
//   double per_table = double(bench::HeapBytesInUse() - before) / 100'000;
//
// HeapBytesInUse() is the heap's bytes in use: glibc's chunks from its arenas (mallinfo2's
// uordblks) plus the chunks it serves by mmap (hblkhd: every request of 128 KiB or more by
// default, such as the hash array of a big flat_hash_map, which uordblks leaves out), plus
// etsmgr's large blocks (big table arrays on mappings of their own, see
// etsmgr/base/large_block.h). It counts requested bytes rounded to chunks, whether touched or not.
// ResidentBytes() is the process's resident set (pages touched and still mapped, all of them:
// heap, stacks, mappings); a delta of it counts what a workload touched, in whole pages.
//
// Both are process-wide: measure with nothing else allocating meanwhile. Thread-safe.
#ifndef ETSMGR_TOOLS_BENCH_MEMORY_H_
#define ETSMGR_TOOLS_BENCH_MEMORY_H_

#include <cstddef>

namespace etsmgr::bench {

size_t HeapBytesInUse();
size_t ResidentBytes();

}  // namespace etsmgr::bench

#endif  // ETSMGR_TOOLS_BENCH_MEMORY_H_
