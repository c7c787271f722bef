// An instance's directory of shared tables (internal), kept in a shared segment of its own,
// /dev/shm/etsmgr-directory-<inst>, so that it outlives the program: a restarted program's manager
// lists what its predecessor left (Info's `shared_tables`) and DelTable removes a table no live
// program holds, even one nobody asked for again.
//
// One record per managed name: the table's segment, its directory, and its key and value types
// (for people: the types are checked when the segment is opened). NewTable of a shared table binds
// the name to its segment (the last binding wins); DelTable unbinds it. Every program that runs an
// instance of that name shares the directory, as they share the segments.
//
// Thread-safe: the segment is (SharedMap); the lazily opened handle is guarded by a mutex. The
// segment is created by the first Bind, so a program that never makes a shared table creates no
// file.
#ifndef ETSMGR_MANAGER_INTERNAL_SHARED_DIRECTORY_H_
#define ETSMGR_MANAGER_INTERNAL_SHARED_DIRECTORY_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/shared_string.h"

namespace etsmgr::manager_internal {

struct SharedDirectoryEntry {
  SharedString<200> segment;
  SharedString<1020> directory;  // Empty: /dev/shm.
  SharedString<252> key_type;
  SharedString<252> value_type;
};

class SharedDirectory {
 public:
  using Key = SharedString<kMaxSharedTableName>;
  using Map = SharedMap<Key, SharedDirectoryEntry>;

  explicit SharedDirectory(const std::string& inst);

  // The directory's segment name ("etsmgr-directory-<inst>", or a hash for an instance name that
  // is not a valid segment name).
  const std::string& segment() const { return segment_; }

  // Records `name` -> storage (creating the directory's segment if need be). InvalidArgument for
  // a name longer than kMaxSharedTableName bytes.
  absl::Status Bind(const std::string& name, const SharedStorage& storage,
                    const std::string& key_type, const std::string& value_type);
  // Removes the record of `name` while it names `storage`'s segment (another program may have
  // bound the name to its own table since).
  absl::Status Unbind(const std::string& name, const SharedStorage& storage);
  // The record of `name`, if any.
  absl::StatusOr<std::optional<SharedTableRecord>> Find(const std::string& name);
  // Every record, with `held` probed (a live program holds the claim).
  absl::StatusOr<std::vector<SharedTableRecord>> List();
  // DelTable of a name only this directory knows: removes the segment (and its lock file) if no
  // live program holds it, and the record. AlreadyExists naming the holder otherwise.
  absl::Status RemoveUnheld(const std::string& name);

 private:
  // The open directory; null (and OK) when it does not exist and `create` is false.
  absl::StatusOr<Map*> Open(bool create);
  // Removes the record of `name` while it still names only's segment.
  absl::Status UnbindIf(const std::string& name, const SharedTableRecord& only);
  static SharedTableRecord ToRecord(const std::string& name, const SharedDirectoryEntry& e);
  static SharedMapOptions MapOptions(const SharedTableRecord& record);

  const std::string segment_;
  Mutex mu_;
  std::optional<Map> map_ ABSL_GUARDED_BY(mu_);  // Set once opened.
};

}  // namespace etsmgr::manager_internal

#endif  // ETSMGR_MANAGER_INTERNAL_SHARED_DIRECTORY_H_
