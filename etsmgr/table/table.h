// Table<K, V>: a typed handle to an ETS-like table (see table_core.h for ownership and access).
//
//   Task<void> Body(Process& self) {
//     auto counters = Table<std::string, int64_t>::New({.name = "counters"}).value();
//     counters.Insert("hits", 0).IgnoreError();
//     int64_t n = counters.UpdateCounter("hits", 1).value();
//   }
//
// Objects are key -> value. set and ordered_set keep one value per key (ordered_set in key
// order); bag keeps each distinct value once per key, duplicate_bag every value inserted (both in
// insertion order per key). K must be hashable with absl::Hash, equality-comparable and ordered
// with <; bag needs V == V; UpdateCounter needs an integer V.
//
// Every call returns absl::Status / StatusOr: NotFound on a deleted table (every call, every
// handle), PermissionDenied when the access mode forbids the caller, InvalidArgument for an
// operation the table type does not support, FailedPrecondition on a null handle. Missing keys
// are not errors for lookups (an empty result) but are NotFound for UpdateCounter without a
// default and for Next on unordered tables.
//
// Threads: any handle may be used from any thread or process at the same time. ForEach, Fold and
// Select copy entries out shard by shard and run the callback without a lock held, so callbacks
// may use the table; they see each shard as it was at one moment, not the whole table.
#ifndef ETSMGR_TABLE_TABLE_H_
#define ETSMGR_TABLE_TABLE_H_

#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <typeindex>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/table/internal/storage.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr {

template <typename K>
concept TableKey = std::equality_comparable<K> && std::totally_ordered<K> &&
    std::copy_constructible<K> && requires(const K& k) {
  absl::Hash<K>{}(k);
};

template <TableKey K, typename V>
class Table {
 public:
  using Entry = std::pair<K, V>;

  Table() = default;  // A null handle: every call answers FailedPrecondition.

  // Creates a table owned by the calling process. Errors: FailedPrecondition outside a process,
  // AlreadyExists for a taken name, InvalidArgument for a bag whose V has no ==.
  static absl::StatusOr<Table> New(TableOptions options = {});
  // A typed handle on a type-erased one: InvalidArgument naming both types when they differ.
  static absl::StatusOr<Table> Attach(const AnyTable& table);
  // The named table on `node` (FindTable + Attach).
  static absl::StatusOr<Table> Find(Node& node, std::string_view name);

  AnyTable any() const { return AnyTable(core_); }
  bool valid() const { return core_ != nullptr; }
  bool alive() const { return core_ != nullptr && !core_->deleted(); }

  // --- Writes.
  // Inserts (set, ordered_set: replaces the value of an existing key).
  absl::Status Insert(K key, V value);
  // Inserts all entries atomically: no reader sees some of them without the others.
  absl::Status Insert(std::vector<Entry> entries);
  // Inserts only if the key is absent (all entries: only if no key is present); yields whether it
  // did.
  absl::StatusOr<bool> InsertNew(K key, V value);
  absl::StatusOr<bool> InsertNew(std::vector<Entry> entries);
  // Removes the key with all its values; yields how many objects went.
  absl::StatusOr<size_t> Erase(const K& key);
  // Removes exactly this object (bags: every copy of it); yields how many went.
  absl::StatusOr<size_t> EraseObject(const K& key, const V& value);
  // Removes the key and yields its values (empty when absent).
  absl::StatusOr<std::vector<V>> Take(const K& key);
  // Adds `incr` atomically and yields the new value (set and ordered_set; integer V). NotFound for
  // a missing key unless options.default_value; OutOfRange on overflow without a threshold.
  absl::StatusOr<V> UpdateCounter(const K& key, V incr,
                                  const CounterOptions<V>& options = {}) requires std::integral<V>;
  absl::Status Clear();
  // Deletes the table (owner, or anyone for a public table).
  absl::Status Delete();

  // --- Reads.
  absl::StatusOr<std::vector<V>> Lookup(const K& key) const;
  // The value of `key` (bags: the first), or std::nullopt.
  absl::StatusOr<std::optional<V>> Get(const K& key) const;
  absl::StatusOr<bool> Member(const K& key) const;
  absl::StatusOr<size_t> Size() const;
  absl::StatusOr<std::vector<Entry>> ToList() const;
  absl::StatusOr<std::vector<Entry>> Select(std::function<bool(const K&, const V&)> pred) const;
  absl::Status ForEach(std::function<void(const K&, const V&)> fn) const;
  template <typename Acc>
  absl::StatusOr<Acc> Fold(Acc acc, std::function<Acc(Acc, const K&, const V&)> fn) const;
  // Traversal: ordered_set in key order (Next/Prev take any key); other types in hash order,
  // where Last = First and Prev = Next (as ETS), and Next needs a present key. std::nullopt at the
  // end of the table.
  absl::StatusOr<std::optional<K>> First() const;
  absl::StatusOr<std::optional<K>> Last() const;
  absl::StatusOr<std::optional<K>> Next(const K& key) const;
  absl::StatusOr<std::optional<K>> Prev(const K& key) const;

  // --- Ownership and metadata (as AnyTable).
  absl::StatusOr<TableInfo> Info() const { return any().Info(); }
  absl::Status GiveAway(const Pid& to, std::any data = {}) const {
    return any().GiveAway(to, std::move(data));
  }
  absl::Status SetHeir(const Pid& heir, std::any data = {}) const {
    return any().SetHeir(heir, std::move(data));
  }

 private:
  using Core = table_internal::TypedCore<K, V>;
  using SetCore = table_internal::MapCore<K, V, table_internal::FlatMapOf<K, V>, false>;
  using OrderedCore = table_internal::MapCore<K, V, table_internal::BtreeMapOf<K, V>, false>;
  explicit Table(std::shared_ptr<Core> core) : core_(std::move(core)) {}

  // The hottest calls: Get and UpdateCounter on a set or ordered_set inline their common case
  // into the caller (the cores' TryGetFast / TryUpdateCounterFast) and make a call only for the
  // rest (GetCall / UpdateCounterCall); Insert on a set skips the virtual call (SetCore is final).
  SetCore* AsSet() const {
    return core_->type() == TableType::kSet ? static_cast<SetCore*>(core_.get()) : nullptr;
  }
  __attribute__((always_inline)) bool TryGetFast(const K& key, std::optional<V>* out) const {
    switch (core_->type()) {
      case TableType::kSet:
        return static_cast<const SetCore*>(core_.get())->TryGetFast(key, out);
      case TableType::kOrderedSet:
        return static_cast<const OrderedCore*>(core_.get())->TryGetFast(key, out);
      default:
        return false;
    }
  }
  __attribute__((always_inline)) bool TryUpdateCounterFast(const K& key, V incr, V* result) {
    switch (core_->type()) {
      case TableType::kSet:
        return static_cast<SetCore*>(core_.get())->TryUpdateCounterFast(key, incr, result);
      case TableType::kOrderedSet:
        return static_cast<OrderedCore*>(core_.get())->TryUpdateCounterFast(key, incr, result);
      default:
        return false;
    }
  }
  absl::StatusOr<std::optional<V>> GetCall(const K& key) const;
  absl::StatusOr<V> UpdateCounterCall(const K& key, V incr,
                                      const CounterOptions<V>& options) requires std::integral<V>;

  absl::Status Check(TableCore::Op op, const char* what) const {
    if (core_ == nullptr) return NullTableHandle(what);
    return core_->Check(op, what);
  }

  std::shared_ptr<Core> core_;
};

// ---------------------------------------------------------------------------------------------
// Implementation.

template <TableKey K, typename V>
absl::StatusOr<Table<K, V>> Table<K, V>::New(TableOptions options) {
  using table_internal::BtreeMapOf;
  using table_internal::FlatMapOf;
  using table_internal::MapCore;
  std::shared_ptr<Core> core;
  switch (options.type) {
    case TableType::kSet:
      core = std::make_shared<MapCore<K, V, FlatMapOf<K, V>, false>>(options);
      break;
    case TableType::kOrderedSet:
      core = std::make_shared<MapCore<K, V, BtreeMapOf<K, V>, false>>(options);
      break;
    case TableType::kBag:
      if constexpr (!std::equality_comparable<V>) {
        return absl::InvalidArgumentError(absl::StrCat("new table: a bag compares values, and ",
                                                       TypeName(typeid(V)),
                                                       " has no operator== (use duplicate_bag)"));
      }
      [[fallthrough]];
    case TableType::kDuplicateBag:
      core = std::make_shared<MapCore<K, V, FlatMapOf<K, V>, true>>(options);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("new table: unknown table type ", static_cast<int>(options.type)));
  }
  if (options.access != Access::kPrivate && options.access != Access::kProtected &&
      options.access != Access::kPublic) {
    return absl::InvalidArgumentError(
        absl::StrCat("new table: unknown access mode ", static_cast<int>(options.access)));
  }
  absl::Status established = TableCore::Establish(core, std::move(options));
  if (!established.ok()) return established;
  return Table(std::move(core));
}

template <TableKey K, typename V>
absl::StatusOr<Table<K, V>> Table<K, V>::Attach(const AnyTable& table) {
  if (!table.valid()) return NullTableHandle("attach");
  const std::shared_ptr<TableCore>& core = table.core();
  if (core->key_type() != std::type_index(typeid(K)) ||
      core->value_type() != std::type_index(typeid(V))) {
    absl::StatusOr<TableInfo> info = core->Info();
    std::string held = info.ok() ? absl::StrCat("<", info->key_type, ", ", info->value_type, ">")
                                 : std::string("other types");
    return absl::InvalidArgumentError(absl::StrCat("attach ", core->ToString(), " as Table<",
                                                   TypeName(typeid(K)), ", ", TypeName(typeid(V)),
                                                   ">: the table holds ", held));
  }
  if (core->deleted()) return core->DeletedError("attach");
  return Table(std::static_pointer_cast<Core>(core));
}

template <TableKey K, typename V>
absl::StatusOr<Table<K, V>> Table<K, V>::Find(Node& node, std::string_view name) {
  absl::StatusOr<AnyTable> table = FindTable(node, name);
  if (!table.ok()) return table.status();
  return Attach(*table);
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Insert(K key, V value) {
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kWrite)) [[likely]] {
    if (SetCore* set = AsSet()) return set->Insert(std::move(key), std::move(value));
    return core_->Insert(std::move(key), std::move(value));
  }
  return Check(TableCore::Op::kWrite, "insert");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Insert(std::vector<Entry> entries) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "insert"); !st.ok()) return st;
  return core_->InsertMany(std::move(entries));
}

template <TableKey K, typename V>
absl::StatusOr<bool> Table<K, V>::InsertNew(K key, V value) {
  std::vector<Entry> one;
  one.emplace_back(std::move(key), std::move(value));
  return InsertNew(std::move(one));
}

template <TableKey K, typename V>
absl::StatusOr<bool> Table<K, V>::InsertNew(std::vector<Entry> entries) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "insert_new"); !st.ok()) return st;
  return core_->InsertNew(std::move(entries));
}

template <TableKey K, typename V>
absl::StatusOr<size_t> Table<K, V>::Erase(const K& key) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "erase"); !st.ok()) return st;
  return core_->Erase(key);
}

template <TableKey K, typename V>
absl::StatusOr<size_t> Table<K, V>::EraseObject(const K& key, const V& value) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "erase_object"); !st.ok()) return st;
  return core_->EraseObject(key, value);
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<V>> Table<K, V>::Take(const K& key) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "take"); !st.ok()) return st;
  return core_->Take(key);
}

template <TableKey K, typename V>
__attribute__((always_inline)) inline absl::StatusOr<V> Table<K, V>::UpdateCounter(
    const K& key, V incr, const CounterOptions<V>& options) requires std::integral<V> {
  V result;
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kWrite) && !options.threshold) [[likely]] {
    if (TryUpdateCounterFast(key, incr, &result)) [[likely]]
      return result;
  }
  return UpdateCounterCall(key, incr, options);
}

template <TableKey K, typename V>
absl::StatusOr<V> Table<K, V>::UpdateCounterCall(
    const K& key, V incr, const CounterOptions<V>& options) requires std::integral<V> {
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kWrite)) [[likely]] {
    return core_->UpdateCounter(key, incr, options);
  }
  return Check(TableCore::Op::kWrite, "update_counter");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Clear() {
  if (absl::Status st = Check(TableCore::Op::kWrite, "clear"); !st.ok()) return st;
  return core_->Clear("clear");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Delete() {
  if (core_ == nullptr) return NullTableHandle("delete");
  return core_->Delete();
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<V>> Table<K, V>::Lookup(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "lookup"); !st.ok()) return st;
  return core_->Lookup(key);
}

template <TableKey K, typename V>
__attribute__((always_inline)) inline absl::StatusOr<std::optional<V>> Table<K, V>::Get(
    const K& key) const {
  std::optional<V> out;
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kRead)) [[likely]] {
    if (TryGetFast(key, &out)) [[likely]]
      return out;
  }
  return GetCall(key);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<V>> Table<K, V>::GetCall(const K& key) const {
  // No Status built unless the call fails (null handle or denied: Check says which).
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kRead)) [[likely]] {
    return core_->Get(key);
  }
  return Check(TableCore::Op::kRead, "lookup");
}

template <TableKey K, typename V>
absl::StatusOr<bool> Table<K, V>::Member(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "member"); !st.ok()) return st;
  return core_->Member(key);
}

template <TableKey K, typename V>
absl::StatusOr<size_t> Table<K, V>::Size() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "size"); !st.ok()) return st;
  return core_->Size("size");
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<typename Table<K, V>::Entry>> Table<K, V>::ToList() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "to_list"); !st.ok()) return st;
  std::vector<Entry> out;
  absl::Status st = core_->Visit(
      [&](std::vector<Entry>& chunk) {
        out.insert(out.end(), std::make_move_iterator(chunk.begin()),
                   std::make_move_iterator(chunk.end()));
        return true;
      },
      "to_list");
  if (!st.ok()) return st;
  return out;
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<typename Table<K, V>::Entry>> Table<K, V>::Select(
    std::function<bool(const K&, const V&)> pred) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "select"); !st.ok()) return st;
  std::vector<Entry> out;
  absl::Status st = core_->Visit(
      [&](std::vector<Entry>& chunk) {
        for (Entry& e : chunk) {
          if (pred(e.first, e.second)) out.push_back(std::move(e));
        }
        return true;
      },
      "select");
  if (!st.ok()) return st;
  return out;
}

template <TableKey K, typename V>
absl::Status Table<K, V>::ForEach(std::function<void(const K&, const V&)> fn) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "for_each"); !st.ok()) return st;
  return core_->Visit(
      [&](std::vector<Entry>& chunk) {
        for (const Entry& e : chunk) fn(e.first, e.second);
        return true;
      },
      "for_each");
}

template <TableKey K, typename V>
template <typename Acc>
absl::StatusOr<Acc> Table<K, V>::Fold(Acc acc,
                                      std::function<Acc(Acc, const K&, const V&)> fn) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "fold"); !st.ok()) return st;
  absl::Status st = core_->Visit(
      [&](std::vector<Entry>& chunk) {
        for (const Entry& e : chunk) acc = fn(std::move(acc), e.first, e.second);
        return true;
      },
      "fold");
  if (!st.ok()) return st;
  return acc;
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::First() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "first"); !st.ok()) return st;
  return core_->First(false);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Last() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "last"); !st.ok()) return st;
  return core_->First(true);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Next(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "next"); !st.ok()) return st;
  return core_->Next(key, false);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Prev(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "prev"); !st.ok()) return st;
  return core_->Next(key, true);
}

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_H_
