// Crash points (internal, for tests): named places between the steps of every shared-map write,
// resize, clear and repair. A test installs a hook in a forked child that raises SIGKILL at the
// n-th point reached, then checks in the parent that the re-opened map shows the operation done
// or not done. Without a hook a point costs one relaxed load and a predicted branch.
#ifndef ETSMGR_TABLE_SHARED_INTERNAL_CRASH_POINT_H_
#define ETSMGR_TABLE_SHARED_INTERNAL_CRASH_POINT_H_

#include <atomic>
#include <cstdint>

namespace etsmgr::shared_internal {

enum class Crash : int {
  kSlotIntent,       // intent record written, slot untouched
  kSlotOdd,          // seqlock odd, slot untouched
  kSlotHalf,         // half of a multi-word value written (torn without the rollback)
  kSlotWritten,      // slot and counts written, seqlock still odd
  kSlotCommitted,    // intent cleared (the write is done), seqlock still odd
  kResizeIntent,     // resize intent written, nothing allocated
  kAllocLogged,      // segment log written, allocator untouched
  kAllocApplied,     // allocator changed, log still active
  kRegionAllocated,  // allocation committed, new region not filled
  kRegionFilled,     // new region filled, not published
  kRegionPublished,  // new region published, old not freed
  kFreeLogged,       // free: log written
  kFreeApplied,      // free: applied, log still active
  kClearOdd,         // clear: every shard locked and odd, epoch not raised
  kClearCommitted,   // clear: epoch raised, shards not cleared
  kClearShardDone,   // clear: one shard cleared
  kRepairStarted,    // repair: begun, nothing restored
  kRepairRestored,   // repair: slot restored, intent not cleared
  kGrowTruncated,    // the file was extended, file_size not raised
  kSegmentMade,      // a new segment's file made and filled in, not yet given its name
};

using CrashHook = void (*)(Crash point);
inline std::atomic<CrashHook> g_crash_hook{nullptr};

inline void CrashPoint(Crash point) {
  if (CrashHook hook = g_crash_hook.load(std::memory_order_relaxed)) [[unlikely]] {
    hook(point);
  }
}

// A test's replacement for the random draw of holder tokens (map_core.cc, ClaimToken): set, it
// supplies the 64 bits each draw takes, so a test can draw a token it chose (a dead holder's, say).
using TokenDrawHook = uint64_t (*)();
inline std::atomic<TokenDrawHook> g_token_draw_hook{nullptr};

}  // namespace etsmgr::shared_internal

#endif  // ETSMGR_TABLE_SHARED_INTERNAL_CRASH_POINT_H_
