// The shared storage kind of Table<K, V> (internal): TypedCore over a SharedMap in a named
// shared-memory segment (TableOptions::shared), so the table's data outlives the program.
//
// What the in-process cores do and this one does differently (table.h's "Shared storage" section
// says it for users):
//   - set only; keys SharedKey, values SharedStorable (etsmgr/table/shared/shared_map.h).
//   - Each single-key write is atomic, for readers and against a SIGKILL at any instruction, but a
//     multi-object Insert is a sequence of single writes (readers may see part of it, a kill may
//     leave part of it), and a multi-object InsertNew is InvalidArgument.
//   - Functions of the select family, Update and LookupElement run on a copy taken under the lock
//     (ReadValues, SelectCount...) or, for writes (Update, SelectReplace, SelectDelete), inside the
//     segment's per-key read-modify-write, one key at a time: a concurrent writer may change other
//     keys meanwhile, as with the in-process table's shards.
//   - First/Next walk a snapshot of the keys (hash order); Next of an absent key is NotFound.
//   - Ownership within the program is the table's (owner, heir, give_away, access); across
//     programs a SharedClaim (a kernel-released lock file) says which live program holds the
//     segment. Deleting the table on purpose (Delete, DelTable, a discard) removes the segment; a
//     table lost with its owner, or a program's exit, only unmaps it: the segment stays for the
//     next program.
#ifndef ETSMGR_TABLE_INTERNAL_SHARED_CORE_H_
#define ETSMGR_TABLE_INTERNAL_SHARED_CORE_H_

#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/table/internal/storage.h"
#include "etsmgr/table/shared/shared_claim.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr::table_internal {

template <SharedKey K, SharedStorable V>
class SharedCore final : public TypedCore<K, V> {
 public:
  using Entry = std::pair<K, V>;
  using Visitor = typename TypedCore<K, V>::Visitor;
  using Match = typename TypedCore<K, V>::Match;
  using Replace = typename TypedCore<K, V>::Replace;
  using Map = SharedMap<K, V>;
  using Action = typename Map::Action;

  SharedCore(const TableOptions& options, Map map, SharedClaim claim, bool emptied_at_open = false)
      : TypedCore<K, V>(options, typeid(K), typeid(V)),
        map_(std::move(map)),
        claim_(std::move(claim)),
        segment_(options.shared->segment),
        map_options_(options.shared->map),
        emptied_at_open_(emptied_at_open) {}

  std::optional<SharedStorage> shared_storage() const override {
    return SharedStorage{segment_, map_options_};
  }

  // Table<K, V>'s inlined fast paths (FastPath::kShared): false when the virtual call must run.
  __attribute__((always_inline)) bool TryGetFast(const K& key, std::optional<V>* out) const {
    return !this->deleted() && map_.TryGetFast(key, out);
  }
  __attribute__((always_inline)) bool TryUpdateCounterFast(const K& key, V incr,
                                                           V* result) requires std::integral<V> {
    return !this->deleted() && map_.TryUpdateCounterFast(key, incr, result);
  }

  bool storage_existed() const override { return !map_.created(); }
  bool storage_emptied_at_open() const override { return emptied_at_open_; }
  bool storage_initialised() const override { return map_.initialised(); }
  void MarkStorageInitialised(bool done) override {
    if (!this->deleted()) map_.SetInitialised(done);  // (A deleted table's claim is gone.)
  }
  std::string storage_description() const override {
    absl::StatusOr<SharedMapInfo> info = map_.Info();
    return absl::StrCat("shared segment ", info.ok() ? info->path : segment_);
  }

  void AbandonNewStorage() override {
    if (map_.created()) {
      (void)Map::Remove(segment_, map_options_);
      (void)SharedClaim::RemoveFile(segment_, map_options_);
    }
    claim_.Release();
  }
  absl::Status SyncStorage(const char* what) const override {
    if (this->deleted()) return this->DeletedError(what);
    return map_.Sync();
  }
  absl::Status CheckStorage(const char* what) const override {
    if (this->deleted()) return this->DeletedError(what);
    return map_.Check();
  }

  absl::Status Insert(K key, V value) override {
    if (this->deleted()) return this->DeletedError("insert");
    return map_.Insert(key, value);
  }
  absl::Status InsertMany(std::vector<Entry> entries) override {
    if (this->deleted()) return this->DeletedError("insert");
    for (const Entry& e : entries) {
      if (absl::Status st = map_.Insert(e.first, e.second); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<bool> InsertNew(std::vector<Entry> entries) override {
    if (this->deleted()) return this->DeletedError("insert_new");
    if (entries.empty()) return true;
    if (entries.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat("insert_new on ", this->ToString(),
                                                     ": a shared table inserts one object ",
                                                     "at a time (", entries.size(), " given)"));
    }
    return map_.InsertNew(entries[0].first, entries[0].second);
  }
  absl::StatusOr<std::vector<V>> Lookup(const K& key) const override {
    absl::StatusOr<std::optional<V>> v = Get(key);
    if (!v.ok()) return v.status();
    std::vector<V> out;
    if (*v) out.push_back(**v);
    return out;
  }
  absl::StatusOr<std::optional<V>> Get(const K& key) const override {
    if (this->deleted()) return this->DeletedError("lookup");
    return map_.Get(key);
  }
  absl::StatusOr<bool> Member(const K& key) const override {
    if (this->deleted()) return this->DeletedError("member");
    return map_.Member(key);
  }
  absl::StatusOr<size_t> Erase(const K& key) override {
    if (this->deleted()) return this->DeletedError("erase");
    return map_.Erase(key);
  }
  absl::StatusOr<size_t> EraseObject(const K& key, const V& value) override {
    if (this->deleted()) return this->DeletedError("erase_object");
    size_t erased = 0;
    absl::Status st = map_.Mutate(
        key,
        [&](const V* cur, V*) {
          if (cur == nullptr || !SameValue(*cur, value)) return Action::kKeep;
          erased = 1;
          return Action::kErase;
        },
        "erase_object");
    if (!st.ok()) return st;
    return erased;
  }
  absl::StatusOr<std::vector<V>> Take(const K& key) override {
    if (this->deleted()) return this->DeletedError("take");
    absl::StatusOr<std::optional<V>> v = map_.Take(key);
    if (!v.ok()) return v.status();
    std::vector<V> out;
    if (*v) out.push_back(**v);
    return out;
  }
  absl::StatusOr<V> UpdateCounter(const K& key, V incr, const CounterOptions<V>& options) override {
    if (this->deleted()) return this->DeletedError("update_counter");
    if constexpr (std::integral<V>) {
      SharedCounterOptions<V> o;
      o.threshold = options.threshold;
      o.set_value = options.set_value;
      o.default_value = options.default_value;
      return map_.UpdateCounter(key, incr, o);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("update_counter on ", this->ToString(), ": the value is not an integer"));
    }
  }
  absl::Status Visit(const Visitor& visitor, const char* what) const override {
    absl::StatusOr<std::vector<Entry>> all = Snapshot(nullptr, what);
    if (!all.ok()) return all.status();
    if (!all->empty()) visitor(*all);
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<K>> First(Direction direction) const override {
    const bool last = direction == Direction::kBackward;
    const char* what = last ? "last" : "first";
    absl::StatusOr<std::vector<Entry>> all = Snapshot(nullptr, what);
    if (!all.ok()) return all.status();
    if (all->empty()) return std::optional<K>();
    return std::optional<K>(all->front().first);
  }
  absl::StatusOr<std::optional<K>> Next(const K& key, Direction direction) const override {
    const bool previous = direction == Direction::kBackward;
    const char* what = previous ? "prev" : "next";
    absl::StatusOr<std::vector<Entry>> all = Snapshot(nullptr, what);
    if (!all.ok()) return all.status();
    for (size_t i = 0; i < all->size(); ++i) {
      if (SameBytes((*all)[i].first, key)) {
        if (i + 1 == all->size()) return std::optional<K>();
        return std::optional<K>((*all)[i + 1].first);
      }
    }
    return absl::NotFoundError(absl::StrCat(what, " on ", this->ToString(),
                                            ": the key is not in the table (a hash table has no "
                                            "order to continue from)"));
  }

  absl::StatusOr<size_t> SelectCount(const Match* pred) const override {
    if (pred == nullptr) return Size("select_count");
    absl::StatusOr<std::vector<Entry>> matches = Snapshot(pred, "select_count");
    if (!matches.ok()) return matches.status();
    return matches->size();
  }
  absl::StatusOr<size_t> SelectDelete(const Match* pred) override {
    absl::StatusOr<std::vector<Entry>> matches = Snapshot(pred, "select_delete");
    if (!matches.ok()) return matches.status();
    size_t deleted = 0;
    for (const Entry& e : *matches) {
      // Deleted only if it still holds the value that matched (else it changed meanwhile: a
      // concurrent writer's object, which the predicate has not seen).
      absl::Status st = map_.Mutate(
          e.first,
          [&](const V* cur, V*) {
            if (cur == nullptr || !SameBytes(*cur, e.second)) return Action::kKeep;
            ++deleted;
            return Action::kErase;
          },
          "select_delete");
      if (!st.ok()) return st;
    }
    return deleted;
  }
  absl::StatusOr<size_t> SelectReplace(Replace fn) override {
    absl::StatusOr<std::vector<Entry>> all = Snapshot(nullptr, "select_replace");
    if (!all.ok()) return all.status();
    size_t replaced = 0;
    for (const Entry& e : *all) {
      absl::Status st = map_.Mutate(
          e.first,
          [&](const V* cur, V* next) {
            if (cur == nullptr) return Action::kKeep;
            std::optional<V> fresh = fn(e.first, *cur);
            if (!fresh) return Action::kKeep;
            *next = *fresh;
            ++replaced;
            return Action::kPut;
          },
          "select_replace");
      if (!st.ok()) return st;
    }
    return replaced;
  }
  absl::StatusOr<size_t> SnapshotShard(size_t shard, const Match* pred, std::vector<Entry>* out,
                                       const char* what) const override {
    if (shard == 0) {
      absl::StatusOr<std::vector<Entry>> matches = Snapshot(pred, what);
      if (!matches.ok()) return matches.status();
      out->insert(out->end(), matches->begin(), matches->end());
    } else if (this->deleted()) {
      return this->DeletedError(what);
    }
    return 1;  // One snapshot of the whole table.
  }
  absl::Status ScanOrdered(KeyRange<K>*, bool, const Match*, size_t, std::vector<Entry>*, bool*,
                           const char* what) const override {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " on ", this->ToString(), ": a shared table is a set (no key order)"));
  }
  absl::StatusOr<bool> Update(const K& key, absl::FunctionRef<void(V&)> fn,
                              const V* default_value) override {
    if (this->deleted()) return this->DeletedError("update_element");
    bool updated = false;
    absl::Status st = map_.Mutate(
        key,
        [&](const V* cur, V* next) {
          if (cur == nullptr && default_value == nullptr) return Action::kKeep;
          *next = cur != nullptr ? *cur : *default_value;
          fn(*next);
          updated = true;
          return Action::kPut;
        },
        "update_element");
    if (!st.ok()) return st;
    return updated;
  }
  absl::Status ReadValues(const K& key, absl::FunctionRef<void(const V&)> fn,
                          const char* what) const override {
    if (this->deleted()) return this->DeletedError(what);
    absl::StatusOr<std::optional<V>> v = map_.Get(key);
    if (!v.ok()) return v.status();
    if (*v) fn(**v);
    return absl::OkStatus();
  }
  absl::Status SaveScan(absl::FunctionRef<void(const K&, const V&)> fn,
                        absl::FunctionRef<absl::Status()> between,
                        const char* what) const override {
    absl::StatusOr<std::vector<Entry>> all = Snapshot(nullptr, what);
    if (!all.ok()) return all.status();
    for (size_t i = 0; i < all->size(); ++i) {
      fn((*all)[i].first, (*all)[i].second);
      if ((i + 1) % this->kSaveRun == 0 || i + 1 == all->size()) {
        if (absl::Status st = between(); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }
  absl::StatusOr<size_t> InsertBulk(std::vector<Entry> entries, const char* what) override {
    if (this->deleted()) return this->DeletedError(what);
    size_t added = 0;
    for (const Entry& e : entries) {
      absl::Status st = map_.Mutate(
          e.first,
          [&](const V* cur, V* next) {
            added += cur == nullptr;
            *next = e.second;
            return Action::kPut;
          },
          what);
      if (!st.ok()) return st;
    }
    return added;
  }

  absl::StatusOr<size_t> Size(const char* what) const override {
    if (this->deleted()) return this->DeletedError(what);
    absl::StatusOr<size_t> n = map_.Size();
    if (!n.ok()) return n.status();
    return *n;
  }
  absl::Status Clear(const char* what) override {
    if (this->deleted()) return this->DeletedError(what);
    return map_.Clear();
  }
  size_t StorageMemory() const override {
    if (this->deleted()) return 0;
    absl::StatusOr<SharedMapInfo> info = map_.Info();
    return info.ok() ? info->allocated_bytes : 0;
  }
  bool Footprint(size_t* size, size_t* memory) const override {
    if (this->deleted()) return false;
    absl::StatusOr<size_t> n = map_.Size();
    *size = n.ok() ? *n : 0;
    *memory = StorageMemory();
    return true;
  }

 protected:
  // The mapping stays until the last handle goes (a call racing the delete may still reach it);
  // the segment's name goes now if the table was deleted on purpose.
  void DropStorage() override {
    if (this->discarded()) {
      (void)Map::Remove(segment_, map_options_);
      claim_.Remove();
    } else {
      claim_.Release();
    }
  }

 private:
  template <typename T>
  static bool SameBytes(const T& a, const T& b) {
    return std::memcmp(static_cast<const void*>(&a), static_cast<const void*>(&b), sizeof(T)) == 0;
  }
  // V's == when it has one, else its bytes (what EraseObject compares).
  static bool SameValue(const V& a, const V& b) {
    if constexpr (std::equality_comparable<V>) {
      return a == b;
    } else {
      return SameBytes(a, b);
    }
  }
  absl::StatusOr<std::vector<Entry>> Snapshot(const Match* pred, const char* what) const {
    if (this->deleted()) return this->DeletedError(what);
    std::vector<Entry> out;
    absl::Status st = map_.ForEach([&](const K& k, const V& v) {
      if (pred == nullptr || (*pred)(k, v)) out.emplace_back(k, v);
    });
    if (!st.ok()) return st;
    return out;
  }

  Map map_;
  SharedClaim claim_;  // Released by DropStorage (the deleting thread only).
  const std::string segment_;
  const SharedMapOptions map_options_;
  const bool emptied_at_open_;
};

}  // namespace etsmgr::table_internal

#endif  // ETSMGR_TABLE_INTERNAL_SHARED_CORE_H_
