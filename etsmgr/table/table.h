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
// with <; bag needs V == V; UpdateCounter needs an integer V. K and V must move without throwing
// (checked at compile time). Their copies, ==, < and a bag's V == may throw: the call stops with
// the exception, and a single-object write leaves its object as it was; a multi-object Insert or
// InsertNew whose comparison throws half-way keeps the objects it had written (not atomic then).
// The hash must not throw.
//
// Every call returns absl::Status / StatusOr: NotFound on a deleted table (every call, every
// handle), PermissionDenied when the access mode forbids the caller, InvalidArgument for an
// operation the table type does not support, FailedPrecondition on a null handle. Missing keys
// are not errors for lookups (an empty result) but are NotFound for UpdateCounter without a
// default and for Next on unordered tables.
//
// Threads: any handle may be used from any thread or process at the same time. ForEach, Fold and
// Select(pred) copy entries out shard by shard and run the callback without a lock held, so
// callbacks may use the table; they see each shard as it was at one moment, not the whole table.
//
// The select family and the element operations run the caller's function *under the shard's
// lock* instead, which is how they avoid copying: SelectCount, SelectDelete, SelectReplace, the
// chunked Select / SelectReverse / SelectRange, Update and LookupElement. Such a function must be
// short and must not call this table (the locks are not reentrant: it would deadlock) nor block;
// a write's function runs under the write lock, so it sees and changes its object atomically.
// A function that throws stops the call and the exception reaches the caller: objects handled
// before it stay handled (each one atomically), a bag key's objects are all handled or none, the
// rest are untouched. A null std::function predicate accepts every object.
// Lambdas take the place of ETS match specifications:
//
//   size_t gone = t.SelectDelete([&](const std::string&, const Entry& e) {
//     return e.expires < now;                                  // ets:select_delete/2
//   }).value();
//   t.SelectReplace([](const std::string&, const int64_t& v) -> std::optional<int64_t> {
//     if (v < 0) return 0;                                     // ets:select_replace/2
//     return std::nullopt;                                     // (no change)
//   }).IgnoreError();
//   auto chunk = t.Select(pred, 100).value();                  // ets:select/3
//   while (true) {
//     Use(chunk.objects);
//     if (chunk.next.done()) break;
//     chunk = t.Select(std::move(chunk.next)).value();         // ets:select/1
//   }
//
// Chunked scans (ETS select/3 and select/1) are safe while the table changes: each object is
// returned at most once, and every object present from the first call to the last is returned
// exactly once; objects inserted or deleted meanwhile may or may not be. ordered_set scans walk
// the tree in key order (SelectReverse: descending) from where the last chunk stopped, by key, so
// a chunk costs what it returns (plus the non-matching keys it passes). Hash types scan one shard
// at a time: the continuation takes a shard's matches as of one moment and hands them out
// `limit` at a time, so it holds at most one shard's matches (1/16 of the table with
// write_concurrency, all of it without). A chunk holds at most `limit` objects; only the last one
// may be empty.
//
// Traversal with First/Next: on an ordered_set, Next and Prev take any key, present or not, so a
// walk stays correct when the key it stands on is deleted meanwhile (each key present for the
// whole walk is visited once, in order). Hash types have no key order: Next needs a key that is
// still present (NotFound otherwise, like ETS's next/2 on a table that is not safe_fixtable'd),
// and a walk that races inserts may skip or repeat keys when a shard grows. ETS's safe_fixtable
// guarantee for hash types is what the chunked Select gives: use it to traverse a changing table.
//
// Shared storage. With TableOptions::shared (or NewShared, which checks the types at compile
// time) the table keeps its data in a named shared-memory segment (/dev/shm/<segment>, or a file
// in SharedStorage::map.directory) instead of the heap, and the data survives the crash of the
// whole program: the next program's NewShared of the same segment gets it back, mapped, not
// copied (TableCore::storage_existed() says so; the manager answers created == false once the
// segment was marked initialised, TableCore::storage_initialised()). Each
// single-key write is atomic against a SIGKILL at any instruction and stays once it returned
// (etsmgr/table/shared/shared_map.h has the design). What differs from the heap table:
//   - set only (ordered_set, bag, duplicate_bag: InvalidArgument); keys SharedKey (integers,
//     enums, padding-free structs, arrays, SharedString<N>), values SharedStorable (fixed-size,
//     trivially copyable, no pointers, at most 4096 bytes). Other types: NewShared does not
//     compile, New with options.shared is InvalidArgument.
//   - A multi-object Insert is a sequence of single writes (readers may see part of it, a kill
//     may leave part of it); a multi-object InsertNew is InvalidArgument.
//   - Reads and select predicates run on copies; Update, SelectReplace and SelectDelete change
//     each key in one atomic read-modify-write; First/Next and chunked selects walk a snapshot.
//   - One live program holds a segment (an OFD lock on <dir>/.<segment>.owner, released by the
//     kernel when the program dies): another's NewShared is AlreadyExists, as is a second table
//     on the same segment in one program. Within the program, owner, heir, give_away and access
//     work as for any table.
//   - Delete (and the manager's DelTable or discard) removes the segment. A table lost with its
//     owner, and a program's exit or crash, only unmap it: the segment stays for the next program.
#ifndef ETSMGR_TABLE_TABLE_H_
#define ETSMGR_TABLE_TABLE_H_

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <variant>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/table/internal/shared_core.h"
#include "etsmgr/table/internal/storage.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr {

template <typename K>
concept TableKey = std::equality_comparable<K> && std::totally_ordered<K> &&
    std::copy_constructible<K> && std::is_nothrow_move_constructible_v<K> &&
    std::is_nothrow_move_assignable_v<K> && requires(const K& k) {
  absl::Hash<K>{}(k);
};

template <TableKey K, typename V>
class Table;

namespace table_internal {
struct TableAccess;  // Table files (table_file.h) reach the storage through it.

// Keys with no order: a floating-point NaN, alone or inside what the key is made of (a pair,
// tuple, array or other range, optional, variant). A table refuses them (InvalidArgument): no key
// compares with a NaN, so an ordered_set holding one breaks its tree's order, and a lookup of
// one would answer with another key's value.
template <typename T, template <typename...> class Of>
inline constexpr bool kIsSpecialization = false;
template <template <typename...> class Of, typename... A>
inline constexpr bool kIsSpecialization<Of<A...>, Of> = true;
// Whether a T may hold a NaN at all (when not, the check is no code).
template <typename T>
constexpr bool MayHoldNaN() {
  if constexpr (std::is_floating_point_v<T>) {
    return true;
  } else if constexpr (kIsSpecialization<T, std::pair>) {
    return MayHoldNaN<typename T::first_type>() || MayHoldNaN<typename T::second_type>();
  } else if constexpr (kIsSpecialization<T, std::tuple>) {
    return []<size_t... I>(std::index_sequence<I...>) {
      return (MayHoldNaN<std::tuple_element_t<I, T>>() || ...);
    }
    (std::make_index_sequence<std::tuple_size_v<T>>());
  } else if constexpr (kIsSpecialization<T, std::optional>) {
    return MayHoldNaN<typename T::value_type>();
  } else if constexpr (kIsSpecialization<T, std::variant>) {
    return []<size_t... I>(std::index_sequence<I...>) {
      return (MayHoldNaN<std::variant_alternative_t<I, T>>() || ...);
    }
    (std::make_index_sequence<std::variant_size_v<T>>());
  } else if constexpr (std::ranges::range<T>) {
    // (A range of itself, as std::filesystem::path, holds nothing else.)
    if constexpr (std::is_same_v<std::remove_cv_t<std::ranges::range_value_t<T>>, T>) {
      return false;
    } else {
      return MayHoldNaN<std::ranges::range_value_t<T>>();
    }
  } else {
    return false;
  }
}
template <typename T>
bool HoldsNaN(const T& v) {
  if constexpr (!MayHoldNaN<T>()) {
    return false;
  } else if constexpr (std::is_floating_point_v<T>) {
    return std::isnan(v);
  } else if constexpr (kIsSpecialization<T, std::pair>) {
    return HoldsNaN(v.first) || HoldsNaN(v.second);
  } else if constexpr (kIsSpecialization<T, std::tuple>) {
    return std::apply([](const auto&... x) { return (HoldsNaN(x) || ...); }, v);
  } else if constexpr (kIsSpecialization<T, std::optional>) {
    return v.has_value() && HoldsNaN(*v);
  } else if constexpr (kIsSpecialization<T, std::variant>) {
    return !v.valueless_by_exception() && std::visit([](const auto& x) { return HoldsNaN(x); }, v);
  } else {  // A range.
    for (const auto& x : v) {
      if (HoldsNaN(x)) return true;
    }
    return false;
  }
}
// Whether `key` is one a table refuses.
template <typename K>
bool UnorderedKey(const K& key) {
  return HoldsNaN(key);
}
absl::Status UnorderedKeyError(const char* what);
}  // namespace table_internal

// Where a chunked select stopped (ETS's continuation): give it back to Table::Select for the next
// chunk. It carries the predicate, the limit and the position (hash types: also the rest of the
// current shard's matches). A default one is done. It belongs to the table that made it.
template <typename K, typename V>
class SelectContinuation {
 public:
  SelectContinuation() = default;
  bool done() const { return done_; }

 private:
  template <TableKey, typename>
  friend class Table;
  uint64_t table_id_ = 0;
  std::function<bool(const K&, const V&)> pred_;  // Empty: every object.
  size_t limit_ = 0;
  bool done_ = true;
  bool ordered_ = false;
  bool reverse_ = false;
  KeyRange<K> range_;                     // ordered_set: what is left to scan.
  size_t next_shard_ = 0;                 // Hash types: the next shard to take.
  std::vector<std::pair<K, V>> pending_;  // Hash types: matches taken, not yet returned.
  size_t pending_at_ = 0;
};

// One chunk of a select: at most `limit` objects, and where to go on.
template <typename K, typename V>
struct SelectChunk {
  std::vector<std::pair<K, V>> objects;
  SelectContinuation<K, V> next;  // next.done(): no more chunks.
};

template <TableKey K, typename V>
class Table {
  // The maps move keys and values while they rehash, split nodes and compact bags: a move that
  // threw half-way would leave them corrupt. (Copies may throw: each write makes its copies before
  // it changes anything. Hashes and comparisons may throw too; a hash must not.)
  static_assert(std::is_nothrow_move_constructible_v<V> && std::is_nothrow_move_assignable_v<V>,
                "a table's value type needs a noexcept move constructor and move assignment");

 public:
  using Entry = std::pair<K, V>;
  using Pred = std::function<bool(const K&, const V&)>;
  using Chunk = SelectChunk<K, V>;
  using Continuation = SelectContinuation<K, V>;
  static constexpr size_t kNoLimit = ~size_t{0};

  Table() = default;  // A null handle: every call answers FailedPrecondition.

  // Creates a table owned by the calling process. Errors: FailedPrecondition outside a process,
  // AlreadyExists for a taken name, InvalidArgument for a bag whose V has no ==.
  static absl::StatusOr<Table> New(TableOptions options = {});
  // New with TableOptions::shared set to `storage` (see "Shared storage" above), checked at
  // compile time: K must be a SharedKey and V SharedStorable.
  static absl::StatusOr<Table> NewShared(
      SharedStorage storage, TableOptions options = {}) requires SharedKey<K> && SharedStorable<V> {
    options.shared = std::move(storage);
    return New(std::move(options));
  }
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
  // Shared storage in a file (SharedStorage::map.directory): msync + fsync, what a reboot will
  // find; in /dev/shm nothing to do. FailedPrecondition for a heap table. Anyone who may read.
  absl::Status Sync() const;
  // Shared storage: walks the whole segment and answers DataLoss naming the first inconsistency
  // (SharedMap::Check). FailedPrecondition for a heap table. Anyone who may read.
  absl::Status CheckStorage() const;
  // Deletes the table (owner, or anyone for a public table).
  absl::Status Delete();
  // ets:rename/2 (a write; see table_core.h).
  absl::Status Rename(std::string name) const { return any().Rename(std::move(name)); }

  // --- Writes by predicate, one pass over the table, one shard at a time under its write lock,
  // with no copy of the table (the function rules above apply). Each yields how many objects it
  // deleted or replaced. Not atomic across shards: a concurrent writer may change a shard already
  // passed or not yet reached.
  // ets:select_delete/2: deletes every object `pred(key, value)` accepts.
  template <typename P>
  requires std::predicate<P&, const K&, const V&> absl::StatusOr<size_t> SelectDelete(P&& pred);
  // ets:select_replace/2: `fn(key, value)` yields the object's new value, or std::nullopt to leave
  // it; the object changes atomically (the value is computed and stored under the write lock).
  // The key cannot change (fn yields a value only). A bag keeps one copy of identical objects:
  // replacements that make two objects of a key identical keep the first.
  template <typename F>
  requires std::invocable<F&, const K&, const V&> &&
      std::convertible_to<std::invoke_result_t<F&, const K&, const V&>, std::optional<V>>
          absl::StatusOr<size_t> SelectReplace(F&& fn);
  // ets:update_element/3: `fn(value)` changes the value of `key` in place under the write lock (an
  // atomic read-modify-write; copy out what you need inside `fn`). Yields false, changing
  // nothing, when the key is absent. set and ordered_set (InvalidArgument on bags, as ETS).
  template <typename F>
  requires std::invocable<F&, V&> absl::StatusOr<bool> Update(const K& key, F&& fn);
  // ets:update_element/4: as above, but an absent key is first inserted with `default_value`.
  template <typename F>
  requires std::invocable<F&, V&> absl::StatusOr<bool> Update(const K& key, F&& fn,
                                                              V default_value);

  // --- Reads.
  absl::StatusOr<std::vector<V>> Lookup(const K& key) const;
  // The value of `key` (bags: the first), or std::nullopt.
  absl::StatusOr<std::optional<V>> Get(const K& key) const;
  absl::StatusOr<bool> Member(const K& key) const;
  absl::StatusOr<size_t> Size() const;
  absl::StatusOr<std::vector<Entry>> ToList() const;
  absl::StatusOr<std::vector<Entry>> Select(std::function<bool(const K&, const V&)> pred) const;
  // ets:lookup_element: `project(value)` for each value of `key` (empty when absent), run under the
  // read lock, so only what it returns is copied (a field of a large value, say).
  template <typename F>
  requires std::invocable<F&, const V&>
  auto LookupElement(const K& key, F&& project) const
      -> absl::StatusOr<std::vector<std::invoke_result_t<F&, const V&>>>;

  // --- Reads by predicate (the function rules above apply; a null `pred` accepts everything).
  // ets:select_count/2: one pass under read locks, nothing copied.
  template <typename P>
  requires std::predicate<P&, const K&, const V&> absl::StatusOr<size_t> SelectCount(P&& pred)
  const;
  // ets:select/3: the first chunk of at most `limit` (> 0) matching objects; ordered_set in key
  // order. InvalidArgument for a zero limit.
  absl::StatusOr<Chunk> Select(Pred pred, size_t limit) const;
  // ets:select_reverse/3: ordered_set in descending key order; other types as Select.
  absl::StatusOr<Chunk> SelectReverse(Pred pred, size_t limit) const;
  // ordered_set only: the matching objects with keys in `range`, in key order, walking the tree
  // from the range's start (a chunk costs what it passes, not the table's size).
  // InvalidArgument on other types.
  absl::StatusOr<Chunk> SelectRange(KeyRange<K> range, Pred pred = {},
                                    size_t limit = kNoLimit) const;
  // The closed range [lo, hi] (KeyRange has the half-open and one-sided forms).
  absl::StatusOr<Chunk> SelectRange(const K& lo, const K& hi, Pred pred = {},
                                    size_t limit = kNoLimit) const {
    return SelectRange(KeyRange<K>::Closed(lo, hi), std::move(pred), limit);
  }
  // ets:select/1: the next chunk. InvalidArgument for another table's continuation; a done one
  // yields an empty, done chunk.
  absl::StatusOr<Chunk> Select(Continuation next) const;
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
  friend struct table_internal::TableAccess;
  using Core = table_internal::TypedCore<K, V>;
  using SetCore = table_internal::MapCore<K, V, table_internal::FlatMapOf<K, V>, false>;
  using OrderedCore = table_internal::MapCore<K, V, table_internal::BtreeMapOf<K, V>, false>;
  explicit Table(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  // The core for `options`, not yet established (no owner, name or listing).
  static absl::StatusOr<std::shared_ptr<Core>> MakeCore(const TableOptions& options);
  // New, filled with `entries` before anyone can see it (file2tab); `check(objects stored)`
  // may refuse it, and then it never was visible.
  static absl::StatusOr<Table> NewFilled(TableOptions options, std::vector<Entry> entries,
                                         const char* what,
                                         absl::FunctionRef<absl::Status(size_t)> check);

  // The hottest calls: Get and UpdateCounter on a set or ordered_set inline their common case
  // into the caller (the cores' TryGetFast / TryUpdateCounterFast) and make a call only for the
  // rest (GetCall / UpdateCounterCall); Insert on a set skips the virtual call (SetCore is final).
  SetCore* AsSet() const {
    return core_->fast_path() == TableCore::FastPath::kSet ? static_cast<SetCore*>(core_.get())
                                                           : nullptr;
  }
  __attribute__((always_inline)) bool TryGetFast(const K& key, std::optional<V>* out) const {
    switch (core_->fast_path()) {
      case TableCore::FastPath::kSet:
        return static_cast<const SetCore*>(core_.get())->TryGetFast(key, out);
      case TableCore::FastPath::kOrderedSet:
        return static_cast<const OrderedCore*>(core_.get())->TryGetFast(key, out);
      case TableCore::FastPath::kShared:
        if constexpr (SharedKey<K> && SharedStorable<V>) {
          return static_cast<const table_internal::SharedCore<K, V>*>(core_.get())
              ->TryGetFast(key, out);
        }
        return false;
      default:
        return false;
    }
  }
  __attribute__((always_inline)) bool TryUpdateCounterFast(const K& key, V incr,
                                                           V* result) requires std::integral<V> {
    switch (core_->fast_path()) {
      case TableCore::FastPath::kSet:
        return static_cast<SetCore*>(core_.get())->TryUpdateCounterFast(key, incr, result);
      case TableCore::FastPath::kOrderedSet:
        return static_cast<OrderedCore*>(core_.get())->TryUpdateCounterFast(key, incr, result);
      case TableCore::FastPath::kShared:
        if constexpr (SharedKey<K> && SharedStorable<V>) {
          return static_cast<table_internal::SharedCore<K, V>*>(core_.get())
              ->TryUpdateCounterFast(key, incr, result);
        }
        return false;
      default:
        return false;
    }
  }
  static absl::StatusOr<std::shared_ptr<Core>> NewSharedCore(const TableOptions& options);
  absl::StatusOr<std::optional<V>> GetCall(const K& key) const;
  absl::StatusOr<V> UpdateCounterCall(const K& key, V incr,
                                      const CounterOptions<V>& options) requires std::integral<V>;

  absl::Status Check(TableCore::Op op, const char* what) const {
    if (core_ == nullptr) return NullTableHandle(what);
    return core_->Check(op, what);
  }
  // Check, and InvalidArgument for a key with no order (table_internal::UnorderedKey).
  absl::Status Check(TableCore::Op op, const char* what, const K& key) const {
    if (absl::Status st = Check(op, what); !st.ok()) return st;
    if (table_internal::UnorderedKey(key)) return table_internal::UnorderedKeyError(what);
    return absl::OkStatus();
  }
  absl::Status CheckEntries(TableCore::Op op, const char* what,
                            const std::vector<Entry>& entries) const {
    if (absl::Status st = Check(op, what); !st.ok()) return st;
    if constexpr (table_internal::MayHoldNaN<K>()) {
      for (const Entry& e : entries) {
        if (table_internal::HoldsNaN(e.first)) return table_internal::UnorderedKeyError(what);
      }
    }
    return absl::OkStatus();
  }
  absl::StatusOr<Chunk> StartSelect(Pred pred, size_t limit, table_internal::Direction direction,
                                    bool ordered, KeyRange<K> range, const char* what) const;
  absl::Status Fill(Continuation& c, std::vector<Entry>* out, const char* what) const;

  std::shared_ptr<Core> core_;
};

// ---------------------------------------------------------------------------------------------
// Implementation.

template <TableKey K, typename V>
absl::StatusOr<Table<K, V>> Table<K, V>::New(TableOptions options) {
  absl::StatusOr<std::shared_ptr<Core>> core = MakeCore(options);
  if (!core.ok()) return core.status();
  absl::Status established = TableCore::Establish(*core, std::move(options));
  if (!established.ok()) {
    (*core)->AbandonNewStorage();  // A shared segment this call created goes again.
    return established;
  }
  return Table(*std::move(core));
}

template <TableKey K, typename V>
absl::StatusOr<Table<K, V>> Table<K, V>::NewFilled(TableOptions options, std::vector<Entry> entries,
                                                   const char* what,
                                                   absl::FunctionRef<absl::Status(size_t)> check) {
  absl::StatusOr<std::shared_ptr<Core>> core = MakeCore(options);
  if (!core.ok()) return core.status();
  // Filled before it is established: nobody can find it (by name or in a listing) half full.
  absl::StatusOr<size_t> n = (*core)->InsertBulk(std::move(entries), what);
  absl::Status st = n.ok() ? check(*n) : n.status();
  if (st.ok()) st = TableCore::Establish(*core, std::move(options));
  if (!st.ok()) {
    (*core)->AbandonNewStorage();  // A shared segment this call created goes again.
    return st;
  }
  return Table(*std::move(core));
}

template <TableKey K, typename V>
absl::StatusOr<std::shared_ptr<typename Table<K, V>::Core>> Table<K, V>::MakeCore(
    const TableOptions& options) {
  using table_internal::BtreeMapOf;
  using table_internal::FlatMapOf;
  using table_internal::MapCore;
  std::shared_ptr<Core> core;
  if (options.shared) {
    absl::StatusOr<std::shared_ptr<Core>> shared = NewSharedCore(options);
    if (!shared.ok()) return shared.status();
    core = *std::move(shared);
  } else {
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
  }
  if (options.access != Access::kPrivate && options.access != Access::kProtected &&
      options.access != Access::kPublic) {
    return absl::InvalidArgumentError(
        absl::StrCat("new table: unknown access mode ", static_cast<int>(options.access)));
  }
  return core;
}

template <TableKey K, typename V>
absl::StatusOr<std::shared_ptr<table_internal::TypedCore<K, V>>> Table<K, V>::NewSharedCore(
    const TableOptions& options) {
  if constexpr (SharedKey<K> && SharedStorable<V>) {
    const std::string& segment = options.shared->segment;
    if (options.type != TableType::kSet) {
      return absl::InvalidArgumentError(absl::StrCat("new table on shared segment \"", segment,
                                                     "\": shared storage holds a set, ", "not an ",
                                                     ToString(options.type)));
    }
    SharedMapOptions map_options = options.shared->map;
    map_options.mode = SharedMapOptions::Mode::kOpenOrCreate;
    absl::StatusOr<SharedClaim> claim = SharedClaim::Acquire(segment, map_options);
    if (!claim.ok()) {
      return WithMessage(claim.status(), absl::StrCat("new table: ", claim.status().message()));
    }
    absl::StatusOr<SharedMap<K, V>> map = SharedMap<K, V>::Open(segment, map_options);
    if (!map.ok()) {
      return WithMessage(map.status(), absl::StrCat("new table: ", map.status().message()));
    }
    // Emptied before Establish publishes the table's name (the claim keeps other programs out).
    const bool emptied =
        options.shared->empty_if_uninitialised && !map->created() && !map->initialised();
    if (emptied) {
      if (absl::Status cleared = map->Clear(); !cleared.ok()) {
        // Its data was never initialised: one that is damaged (DataLoss: a region or a lock
        // word that cannot be repaired) goes, with its claim, so that the next new table of the
        // name starts a fresh segment instead of failing the same way for ever. Any other
        // failure (a lock held by a live user past lock_timeout) leaves it for the next try.
        const bool damaged = cleared.code() == absl::StatusCode::kDataLoss;
        if (damaged) {
          (void)SharedMap<K, V>::Remove(segment, map_options);
          claim->Remove();
        }
        return WithMessage(
            cleared, absl::StrCat("new table: segment \"", segment,
                                  "\" was never initialised and could not be emptied",
                                  damaged ? " (it is removed; ask again for a new one)" : "", ": ",
                                  cleared.message()));
      }
    }
    return std::shared_ptr<Core>(std::make_shared<table_internal::SharedCore<K, V>>(
        options, *std::move(map), *std::move(claim), emptied));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "new table on shared segment \"", options.shared->segment, "\": Table<",
        TypeName(typeid(K)), ", ", TypeName(typeid(V)),
        "> cannot be shared (keys must be SharedKey and values ",
        "SharedStorable: fixed-size, trivially copyable, no pointers; see shared_map.h)"));
  }
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
  if (table_internal::UnorderedKey(key)) return Check(TableCore::Op::kWrite, "insert", key);
  if (core_ != nullptr && core_->Allowed(TableCore::Op::kWrite)) [[likely]] {
    if (SetCore* set = AsSet()) return set->Insert(std::move(key), std::move(value));
    return core_->Insert(std::move(key), std::move(value));
  }
  return Check(TableCore::Op::kWrite, "insert");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Insert(std::vector<Entry> entries) {
  if (absl::Status st = CheckEntries(TableCore::Op::kWrite, "insert", entries); !st.ok()) {
    return st;
  }
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
  if (absl::Status st = CheckEntries(TableCore::Op::kWrite, "insert_new", entries); !st.ok()) {
    return st;
  }
  return core_->InsertNew(std::move(entries));
}

template <TableKey K, typename V>
absl::StatusOr<size_t> Table<K, V>::Erase(const K& key) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "erase", key); !st.ok()) return st;
  return core_->Erase(key);
}

template <TableKey K, typename V>
absl::StatusOr<size_t> Table<K, V>::EraseObject(const K& key, const V& value) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "erase_object", key); !st.ok()) return st;
  return core_->EraseObject(key, value);
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<V>> Table<K, V>::Take(const K& key) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "take", key); !st.ok()) return st;
  return core_->Take(key);
}

template <TableKey K, typename V>
__attribute__((always_inline)) inline absl::StatusOr<V> Table<K, V>::UpdateCounter(
    const K& key, V incr, const CounterOptions<V>& options) requires std::integral<V> {
  if (table_internal::UnorderedKey(key)) return Check(TableCore::Op::kWrite, "update_counter", key);
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
absl::Status Table<K, V>::Sync() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "sync"); !st.ok()) return st;
  return core_->SyncStorage("sync");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::CheckStorage() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "check_storage"); !st.ok()) return st;
  return core_->CheckStorage("check_storage");
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Delete() {
  if (core_ == nullptr) return NullTableHandle("delete");
  return core_->Delete();
}

template <TableKey K, typename V>
absl::StatusOr<std::vector<V>> Table<K, V>::Lookup(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "lookup", key); !st.ok()) return st;
  return core_->Lookup(key);
}

template <TableKey K, typename V>
__attribute__((always_inline)) inline absl::StatusOr<std::optional<V>> Table<K, V>::Get(
    const K& key) const {
  if (table_internal::UnorderedKey(key)) return Check(TableCore::Op::kRead, "lookup", key);
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
  if (absl::Status st = Check(TableCore::Op::kRead, "member", key); !st.ok()) return st;
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
template <typename P>
requires std::predicate<P&, const K&, const V&> absl::StatusOr<size_t> Table<K, V>::SelectCount(
    P&& pred)
const {
  if (absl::Status st = Check(TableCore::Op::kRead, "select_count"); !st.ok()) return st;
  // A null predicate (an empty std::function) accepts every object.
  if constexpr (std::is_constructible_v<bool, const std::remove_cvref_t<P>&>) {
    if (!static_cast<bool>(pred)) return core_->SelectCount(nullptr);
  }
  auto call = [&pred](const K& k, const V& v) -> bool { return pred(k, v); };
  const typename Core::Match match(call);
  return core_->SelectCount(&match);
}

template <TableKey K, typename V>
template <typename P>
requires std::predicate<P&, const K&, const V&> absl::StatusOr<size_t> Table<K, V>::SelectDelete(
    P&& pred) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "select_delete"); !st.ok()) return st;
  // A null predicate (an empty std::function) accepts every object.
  if constexpr (std::is_constructible_v<bool, const std::remove_cvref_t<P>&>) {
    if (!static_cast<bool>(pred)) return core_->SelectDelete(nullptr);
  }
  auto call = [&pred](const K& k, const V& v) -> bool { return pred(k, v); };
  const typename Core::Match match(call);
  return core_->SelectDelete(&match);
}

template <TableKey K, typename V>
template <typename F>
requires std::invocable<F&, const K&, const V&> &&
    std::convertible_to<std::invoke_result_t<F&, const K&, const V&>, std::optional<V>>
        absl::StatusOr<size_t> Table<K, V>::SelectReplace(F&& fn) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "select_replace"); !st.ok()) return st;
  auto call = [&fn](const K& k, const V& v) -> std::optional<V> { return fn(k, v); };
  return core_->SelectReplace(typename Core::Replace(call));
}

template <TableKey K, typename V>
template <typename F>
requires std::invocable<F&, V&> absl::StatusOr<bool> Table<K, V>::Update(const K& key, F&& fn) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "update", key); !st.ok()) return st;
  auto call = [&fn](V& v) { fn(v); };
  return core_->Update(key, absl::FunctionRef<void(V&)>(call), nullptr);
}

template <TableKey K, typename V>
template <typename F>
requires std::invocable<F&, V&> absl::StatusOr<bool> Table<K, V>::Update(const K& key, F&& fn,
                                                                         V default_value) {
  if (absl::Status st = Check(TableCore::Op::kWrite, "update", key); !st.ok()) return st;
  auto call = [&fn](V& v) { fn(v); };
  return core_->Update(key, absl::FunctionRef<void(V&)>(call), &default_value);
}

template <TableKey K, typename V>
template <typename F>
requires std::invocable<F&, const V&>
auto Table<K, V>::LookupElement(const K& key, F&& project) const
    -> absl::StatusOr<std::vector<std::invoke_result_t<F&, const V&>>> {
  if (absl::Status st = Check(TableCore::Op::kRead, "lookup_element", key); !st.ok()) return st;
  std::vector<std::invoke_result_t<F&, const V&>> out;
  auto call = [&](const V& v) { out.push_back(project(v)); };
  absl::Status st =
      core_->ReadValues(key, absl::FunctionRef<void(const V&)>(call), "lookup_element");
  if (!st.ok()) return st;
  return out;
}

template <TableKey K, typename V>
absl::StatusOr<typename Table<K, V>::Chunk> Table<K, V>::Select(Pred pred, size_t limit) const {
  return StartSelect(std::move(pred), limit, table_internal::Direction::kForward,
                     core_ != nullptr && core_->type() == TableType::kOrderedSet, {}, "select");
}

template <TableKey K, typename V>
absl::StatusOr<typename Table<K, V>::Chunk> Table<K, V>::SelectReverse(Pred pred,
                                                                       size_t limit) const {
  return StartSelect(std::move(pred), limit, table_internal::Direction::kBackward,
                     core_ != nullptr && core_->type() == TableType::kOrderedSet, {},
                     "select_reverse");
}

template <TableKey K, typename V>
absl::StatusOr<typename Table<K, V>::Chunk> Table<K, V>::SelectRange(KeyRange<K> range, Pred pred,
                                                                     size_t limit) const {
  if ((range.lo && table_internal::UnorderedKey(*range.lo)) ||
      (range.hi && table_internal::UnorderedKey(*range.hi))) {
    if (absl::Status st = Check(TableCore::Op::kRead, "select_range"); !st.ok()) return st;
    return table_internal::UnorderedKeyError("select_range");
  }
  return StartSelect(std::move(pred), limit, table_internal::Direction::kForward,
                     /*ordered=*/true, std::move(range), "select_range");
}

template <TableKey K, typename V>
absl::StatusOr<typename Table<K, V>::Chunk> Table<K, V>::StartSelect(
    Pred pred, size_t limit, table_internal::Direction direction, bool ordered, KeyRange<K> range,
    const char* what) const {
  if (absl::Status st = Check(TableCore::Op::kRead, what); !st.ok()) return st;
  if (limit == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " on ", core_->ToString(), ": the limit must be at least 1"));
  }
  Continuation c;
  c.table_id_ = core_->id();
  c.pred_ = std::move(pred);
  c.limit_ = limit;
  c.done_ = false;
  c.ordered_ = ordered;
  c.reverse_ = direction == table_internal::Direction::kBackward;
  c.range_ = std::move(range);
  Chunk chunk;
  if (absl::Status st = Fill(c, &chunk.objects, what); !st.ok()) return st;
  chunk.next = std::move(c);
  return chunk;
}

template <TableKey K, typename V>
absl::StatusOr<typename Table<K, V>::Chunk> Table<K, V>::Select(Continuation next) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "select"); !st.ok()) return st;
  // Matches already taken are not handed out from a table deleted since.
  if (core_->deleted()) return core_->DeletedError("select");
  Chunk chunk;
  if (!next.done()) {
    if (next.table_id_ != core_->id()) {
      return absl::InvalidArgumentError(absl::StrCat("select on ", core_->ToString(),
                                                     ": the continuation belongs to table #",
                                                     next.table_id_));
    }
    if (absl::Status st = Fill(next, &chunk.objects, "select"); !st.ok()) return st;
  }
  chunk.next = std::move(next);
  return chunk;
}

template <TableKey K, typename V>
absl::Status Table<K, V>::Fill(Continuation& c, std::vector<Entry>* out, const char* what) const {
  std::optional<typename Core::Match> match;
  if (c.pred_) match.emplace(c.pred_);
  const typename Core::Match* pred = match ? &*match : nullptr;
  if (c.ordered_) {
    bool done = true;
    absl::Status st = core_->ScanOrdered(&c.range_, c.reverse_, pred, c.limit_, out, &done, what);
    if (!st.ok()) return st;
    c.done_ = done;
    return absl::OkStatus();
  }
  while (true) {
    const size_t pending = c.pending_.size() - c.pending_at_;
    const size_t room = c.limit_ - out->size();
    const size_t take = std::min(pending, room);
    auto from = c.pending_.begin() + static_cast<ptrdiff_t>(c.pending_at_);
    out->insert(out->end(), std::make_move_iterator(from),
                std::make_move_iterator(from + static_cast<ptrdiff_t>(take)));
    c.pending_at_ += take;
    if (out->size() == c.limit_ && c.pending_at_ < c.pending_.size()) return absl::OkStatus();
    c.pending_.clear();
    c.pending_at_ = 0;
    absl::StatusOr<size_t> shards = core_->SnapshotShard(c.next_shard_, pred, &c.pending_, what);
    if (!shards.ok()) return shards.status();
    if (c.next_shard_ >= *shards) {
      c.done_ = true;
      return absl::OkStatus();
    }
    ++c.next_shard_;
    if (out->size() == c.limit_) return absl::OkStatus();  // Full; the next call goes on.
  }
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
  return core_->First(table_internal::Direction::kForward);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Last() const {
  if (absl::Status st = Check(TableCore::Op::kRead, "last"); !st.ok()) return st;
  return core_->First(table_internal::Direction::kBackward);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Next(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "next", key); !st.ok()) return st;
  return core_->Next(key, table_internal::Direction::kForward);
}

template <TableKey K, typename V>
absl::StatusOr<std::optional<K>> Table<K, V>::Prev(const K& key) const {
  if (absl::Status st = Check(TableCore::Op::kRead, "prev", key); !st.ok()) return st;
  return core_->Next(key, table_internal::Direction::kBackward);
}

// The kinds most programs use are compiled once, in table_instances.cc: unoptimised builds (the
// tests, the sanitizer configs) then skip generating them again in every file that uses them.
// Optimised builds instantiate them where they are used, so that their calls can be inlined.
// (clang 14 instantiates the members whose constraints fail, UpdateCounter of a string, in an
// explicit instantiation: with clang only the counter tables are compiled once.)
#if !defined(__OPTIMIZE__)
extern template class Table<int64_t, int64_t>;
extern template class Table<std::string, int64_t>;
#if !defined(__clang__)
extern template class Table<int64_t, std::string>;
extern template class Table<std::string, std::string>;
#endif
#endif

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_TABLE_H_
