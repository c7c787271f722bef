// What the table manager (etsmgr/manager) does to a table beyond the public Table API: the
// "initialised" marks behind new_table's `created` answer, and the one-look Glance its info()
// takes of each table. Internal: for //etsmgr/manager only (ManagedTable's template includes it).
#ifndef ETSMGR_TABLE_INTERNAL_MANAGER_ACCESS_H_
#define ETSMGR_TABLE_INTERNAL_MANAGER_ACCESS_H_

#include <atomic>
#include <cstddef>

#include "absl/status/status.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr::table_internal {

class ManagerAccess {
 public:
  // The in-process flag for whoever fills the table first: false until set. Any thread.
  static bool Initialised(const TableCore& t) { return t.initialised(); }
  static void MarkInitialised(TableCore& t) { t.SetInitialised(true); }
  static void ClearInitialised(TableCore& t) { t.SetInitialised(false); }
  // Shared storage: the segment's own mark, which outlives the program (heap storage: true).
  static bool StorageInitialised(const TableCore& t) { return t.storage_initialised(); }
  static void SetStorageInitialised(TableCore& t, bool done) { t.MarkStorageInitialised(done); }
  // Owner, heir and size in one look (see TableCore::Glance); false once the table is deleted.
  static bool Glance(const TableCore& t, PidCopier& copier, Pid* owner, Pid* heir, size_t* size,
                     bool* kept) {
    return t.Glance(copier, owner, heir, size, kept);
  }
  static void PrefetchGlance(const TableCore& t) { t.PrefetchGlance(); }
  // Deleted on purpose whenever it is deleted (its owner's exit too): a shared table's segment
  // then goes with it instead of staying for a restarted program (del_table of a table another
  // process owns).
  static void MarkDiscarded(TableCore& t) { t.discarded_.store(true, std::memory_order_release); }
  // del_table's deletion after it released the table: as Delete (the caller must be allowed to
  // write it), unless a keeper took the table since `keeps` (Keeps() before the release: its
  // owner registered it anew meanwhile, whether that keeper still has it or not):
  // FailedPrecondition then, and the table stays.
  static uint64_t Keeps(const TableCore& t) { return t.keeps(); }
  static absl::Status DeleteUnlessKeptAgain(TableCore& t, const char* what, uint64_t keeps) {
    return t.DeleteUnlessKeptAgain(what, keeps);
  }
};

}  // namespace etsmgr::table_internal

#endif  // ETSMGR_TABLE_INTERNAL_MANAGER_ACCESS_H_
