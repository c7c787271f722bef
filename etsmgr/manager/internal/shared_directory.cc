#include "etsmgr/manager/internal/shared_directory.h"

#include <sys/stat.h>

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/table/shared/internal/layout.h"
#include "etsmgr/table/shared/shared_claim.h"

namespace etsmgr::manager_internal {
namespace {

std::string DirectorySegment(const std::string& inst) {
  std::string name = absl::StrCat("etsmgr-directory-", inst);
  if (!shared_internal::MapCore::ValidateName(name).ok()) {
    // An instance name that is no valid segment name: a hash of it, the same in every program
    // (absl::Hash is seeded per process, which would give each run its own directory).
    name = absl::StrCat(
        "etsmgr-directory-",
        absl::Hex(shared_internal::HashBytes(inst.data(), inst.size()), absl::kZeroPad16));
  }
  return name;
}

template <size_t N>
SharedString<N> Truncated(const std::string& s) {
  return SharedString<N>::Make(s.size() <= N ? s : s.substr(0, N)).value();
}

}  // namespace

SharedDirectory::SharedDirectory(const std::string& inst) : segment_(DirectorySegment(inst)) {}

absl::StatusOr<SharedDirectory::Map*> SharedDirectory::Open(bool create) {
  ExclusiveLock lock(mu_);
  if (map_) return &*map_;
  SharedMapOptions options;
  options.mode = create ? SharedMapOptions::Mode::kOpenOrCreate : SharedMapOptions::Mode::kOpen;
  options.shards = 4;
  options.max_bytes = uint64_t{256} << 20;
  absl::StatusOr<Map> map = Map::Open(segment_, options);
  if (!map.ok()) {
    if (!create && map.status().code() == absl::StatusCode::kNotFound) return nullptr;
    return map.status();
  }
  map_ = *std::move(map);
  return &*map_;
}

SharedTableRecord SharedDirectory::ToRecord(const std::string& name,
                                            const SharedDirectoryEntry& e) {
  SharedTableRecord r;
  r.name = name;
  r.segment = e.segment.str();
  r.directory = e.directory.str();
  r.path =
      absl::StrCat(r.directory.empty() ? std::string("/dev/shm") : r.directory, "/", r.segment);
  r.key_type = e.key_type.str();
  r.value_type = e.value_type.str();
  return r;
}

SharedMapOptions SharedDirectory::MapOptions(const SharedTableRecord& record) {
  SharedMapOptions options;
  options.directory = record.directory;
  return options;
}

absl::Status SharedDirectory::Bind(const std::string& name, const SharedStorage& storage,
                                   const std::string& key_type, const std::string& value_type) {
  absl::StatusOr<Key> key = Key::Make(name);
  if (!key.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("shared table \"", name, "\": a managed name ",
                                                   "of a shared table has at most ",
                                                   kMaxSharedTableName, " bytes"));
  }
  absl::StatusOr<SharedString<1020>> dir = SharedString<1020>::Make(storage.map.directory);
  if (!dir.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared table \"", name, "\": its directory path is over 1020 bytes"));
  }
  SharedDirectoryEntry e;
  e.segment = Truncated<200>(storage.segment);
  e.directory = *dir;
  e.key_type = Truncated<252>(key_type);
  e.value_type = Truncated<252>(value_type);
  absl::StatusOr<Map*> map = Open(/*create=*/true);
  if (!map.ok()) return map.status();
  return (*map)->Insert(*key, e);
}

absl::Status SharedDirectory::Unbind(const std::string& name, const SharedStorage& storage) {
  SharedTableRecord only;
  only.segment = storage.segment;
  only.directory = storage.map.directory;
  return UnbindIf(name, only);
}

absl::Status SharedDirectory::UnbindIf(const std::string& name, const SharedTableRecord& only) {
  absl::StatusOr<Key> key = Key::Make(name);
  if (!key.ok()) return absl::OkStatus();  // Never bound.
  absl::StatusOr<Map*> map = Open(/*create=*/false);
  if (!map.ok()) return map.status();
  if (*map == nullptr) return absl::OkStatus();
  return (*map)->Mutate(
      *key,
      [&](const SharedDirectoryEntry* current, SharedDirectoryEntry*) {
        if (current == nullptr) return SharedMapAction::kKeep;
        const bool same =
            current->segment.view() == only.segment && current->directory.view() == only.directory;
        return same ? SharedMapAction::kErase : SharedMapAction::kKeep;
      },
      "unbind");
}

absl::StatusOr<std::optional<SharedTableRecord>> SharedDirectory::Find(const std::string& name) {
  absl::StatusOr<Key> key = Key::Make(name);
  if (!key.ok()) return std::optional<SharedTableRecord>();
  absl::StatusOr<Map*> map = Open(/*create=*/false);
  if (!map.ok()) return map.status();
  if (*map == nullptr) return std::optional<SharedTableRecord>();
  absl::StatusOr<std::optional<SharedDirectoryEntry>> e = (*map)->Get(*key);
  if (!e.ok()) return e.status();
  if (!*e) return std::optional<SharedTableRecord>();
  return std::optional<SharedTableRecord>(ToRecord(name, **e));
}

absl::StatusOr<std::vector<SharedTableRecord>> SharedDirectory::List() {
  absl::StatusOr<Map*> map = Open(/*create=*/false);
  if (!map.ok()) return map.status();
  std::vector<SharedTableRecord> out;
  if (*map == nullptr) return out;
  absl::Status st = (*map)->ForEach(
      [&](const Key& k, const SharedDirectoryEntry& e) { out.push_back(ToRecord(k.str(), e)); });
  if (!st.ok()) return st;
  for (SharedTableRecord& r : out) {
    struct stat info;
    r.exists = stat(r.path.c_str(), &info) == 0;
    r.held = SharedClaim::HeldByAnyone(r.segment, MapOptions(r)).value_or(false);
  }
  return out;
}

absl::Status SharedDirectory::RemoveUnheld(const std::string& name) {
  absl::StatusOr<std::optional<SharedTableRecord>> record = Find(name);
  if (!record.ok()) return record.status();
  if (!*record) {
    return Annotate(WithAtom(absl::NotFoundError(""), Atom::kNoSuchTableEntry), "del_table", name);
  }
  const SharedMapOptions where = MapOptions(**record);
  absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire((*record)->segment, where);
  if (!claim.ok()) {
    return Annotate(claim.status(), "del_table", name);
  }
  // Holding the claim, nobody else can open it as a table meanwhile.
  absl::Status removed = shared_internal::MapCore::Remove((*record)->segment, where);
  if (!removed.ok() && removed.code() != absl::StatusCode::kNotFound) return removed;
  // The record goes while the claim is held, and only if it still names this segment: once the
  // claim is released, a new_table of the name (in this program or another) may make the segment
  // again and record it, and a record of the name with other storage is someone else's.
  absl::Status unbound = UnbindIf(name, **record);
  claim->Remove();
  return unbound;
}

}  // namespace etsmgr::manager_internal
