// Typed table storage behind TableCore (internal).
//
// One class serves all four table types: MapCore<K, V, Map, kBag> keeps a power-of-two array of
// shards, each a RwSpinLock and a map, allocated on the first write (an empty table stays
// small). set: 16 (or 1) shards of absl::flat_hash_map<K, V>; bag / duplicate_bag: the same with
// a vector of values per key; ordered_set: one shard holding an absl::btree_map<K, V>.
// A key's shard comes from the top bits of its hash (the map itself uses the low ones).
// Every operation takes one shard lock (reads shared, writes exclusive), checks deleted() under
// it, and never calls user code other than K's and V's own constructors, hashing and comparison
// while holding it. Multi-key writes lock their shards in index order, so they are atomic.
// Memory is counted exactly by a per-shard counting allocator.
// The select family (SelectCount, SelectDelete, SelectReplace, the chunked scans), Update,
// ReadValues and SaveScan are the exception: they run the caller's function on each object under
// the shard's lock, which is how they avoid copying the table (table.h states the rule for users).
#ifndef ETSMGR_TABLE_INTERNAL_STORAGE_H_
#define ETSMGR_TABLE_INTERNAL_STORAGE_H_

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <typeindex>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/function_ref.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/large_block.h"
#include "etsmgr/base/read_bias.h"
#include "etsmgr/table/table_core.h"

namespace etsmgr {

namespace table_internal {

// Which way an ordered walk goes: First(kBackward) is the last key, Next(k, kBackward) the one
// before k (ets:last/2, ets:prev/2).
enum class Direction { kForward, kBackward };

// Adds every allocation's size to a counter owned by the shard (guarded by the shard's lock).
template <typename T>
struct CountingAllocator {
  using value_type = T;
  size_t* bytes;
  explicit CountingAllocator(size_t* counter) : bytes(counter) {}
  template <typename U>
  CountingAllocator(const CountingAllocator<U>& other) : bytes(other.bytes) {}  // NOLINT
  // A large table's hash array (one block of megabytes) goes on huge pages: see large_block.h.
  // Counted once allocated: an allocation that throws (bad_alloc) counts nothing.
  T* allocate(size_t n) {
    if (large_block::Wanted(n * sizeof(T))) {
      T* p = static_cast<T*>(large_block::Allocate(n * sizeof(T)));
      *bytes += large_block::Footprint(n * sizeof(T));
      return p;
    }
    T* p = std::allocator<T>().allocate(n);
    *bytes += n * sizeof(T);
    return p;
  }
  void deallocate(T* p, size_t n) {
    if (large_block::Wanted(n * sizeof(T))) {
      *bytes -= large_block::Footprint(n * sizeof(T));
      large_block::Free(p, n * sizeof(T));
      return;
    }
    *bytes -= n * sizeof(T);
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  friend bool operator==(const CountingAllocator& a, const CountingAllocator<U>& b) {
    return a.bytes == b.bytes;
  }
};

template <typename K, typename V>
class TypedCore : public TableCore {
 public:
  using Entry = std::pair<K, V>;
  // A chunk of entries copied out under a lock; the visitor runs without it. Return false to stop.
  using Visitor = std::function<bool(std::vector<Entry>& chunk)>;

  virtual absl::Status Insert(K key, V value) = 0;
  virtual absl::Status InsertMany(std::vector<Entry> entries) = 0;
  virtual absl::StatusOr<bool> InsertNew(std::vector<Entry> entries) = 0;
  virtual absl::StatusOr<std::vector<V>> Lookup(const K& key) const = 0;
  virtual absl::StatusOr<std::optional<V>> Get(const K& key) const = 0;
  virtual absl::StatusOr<bool> Member(const K& key) const = 0;
  virtual absl::StatusOr<size_t> Erase(const K& key) = 0;
  virtual absl::StatusOr<size_t> EraseObject(const K& key, const V& value) = 0;
  virtual absl::StatusOr<std::vector<V>> Take(const K& key) = 0;
  virtual absl::StatusOr<V> UpdateCounter(const K& key, V incr,
                                          const CounterOptions<V>& options) = 0;
  virtual absl::Status Visit(const Visitor& visitor, const char* what) const = 0;
  virtual absl::StatusOr<std::optional<K>> First(Direction direction) const = 0;
  virtual absl::StatusOr<std::optional<K>> Next(const K& key, Direction direction) const = 0;

  // --- The select family. A null `pred` matches every object. Each runs `pred` / `fn` under the
  // shard's lock (read lock for reads, write lock for writes), one shard at a time.
  using Match = absl::FunctionRef<bool(const K&, const V&)>;
  using Replace = absl::FunctionRef<std::optional<V>(const K&, const V&)>;
  virtual absl::StatusOr<size_t> SelectCount(const Match* pred) const = 0;
  virtual absl::StatusOr<size_t> SelectDelete(const Match* pred) = 0;
  virtual absl::StatusOr<size_t> SelectReplace(Replace fn) = 0;
  // Hash types: appends the matches of shard `shard` (as of one moment) to `out` and yields the
  // number of shards (0 while the table has no storage).
  virtual absl::StatusOr<size_t> SnapshotShard(size_t shard, const Match* pred,
                                               std::vector<Entry>* out, const char* what) const = 0;
  // ordered_set: appends up to `limit` matches within `range` in key order (descending when
  // `reverse`), then narrows `range` to what is left after the last key looked at; `*done` once
  // the range is exhausted. InvalidArgument on other types.
  virtual absl::Status ScanOrdered(KeyRange<K>* range, bool reverse, const Match* pred,
                                   size_t limit, std::vector<Entry>* out, bool* done,
                                   const char* what) const = 0;
  // Applies `fn` to the value of `key` under the write lock (set, ordered_set). A missing key is
  // first inserted with `*default_value` when given; yields false when the key is missing and
  // there is no default.
  virtual absl::StatusOr<bool> Update(const K& key, absl::FunctionRef<void(V&)> fn,
                                      const V* default_value) = 0;
  // Calls `fn` on each value of `key` under the read lock.
  virtual absl::Status ReadValues(const K& key, absl::FunctionRef<void(const V&)> fn,
                                  const char* what) const = 0;
  // Calls `fn` on every object under a read lock held for one shard at a time (ordered_set: for
  // one run of kSaveRun keys at a time), and `between` with no lock held after each; stops at the
  // first error `between` returns.
  static constexpr size_t kSaveRun = 4096;
  virtual absl::Status SaveScan(absl::FunctionRef<void(const K&, const V&)> fn,
                                absl::FunctionRef<absl::Status()> between,
                                const char* what) const = 0;
  // Inserts many objects shard by shard (not atomic: for filling a table nobody else uses yet);
  // yields how many objects were added (a set's repeated key, a bag's identical object: none).
  virtual absl::StatusOr<size_t> InsertBulk(std::vector<Entry> entries, const char* what) = 0;

 protected:
  using TableCore::TableCore;
};

template <typename K, typename V>
struct FlatMapOf {
  template <typename Slot>
  using Map = absl::flat_hash_map<K, Slot, absl::Hash<K>, std::equal_to<K>,
                                  CountingAllocator<std::pair<const K, Slot>>>;
  static constexpr bool kOrdered = false;
};

template <typename K, typename V>
struct BtreeMapOf {
  // absl::btree_map with 1 KB nodes instead of its fixed 256 B: a 1M-key tree is then ~3.3 levels
  // deep, not ~5, and a lookup is a chain of that many cache misses (1 KB is the fastest of
  // 256 B, 1 KB and 2 KB: bench/results/design-measurements.md). The node
  // size is a parameter of absl's internal btree only (this is btree_map's own definition with
  // another TargetNodeSize), so it is pinned to the Abseil the project builds with.
  static constexpr int kNodeBytes = 1024;
  template <typename Slot>
  using Map = absl::container_internal::btree_map_container<
      absl::container_internal::btree<absl::container_internal::map_params<
          K, Slot, std::less<K>, CountingAllocator<std::pair<const K, Slot>>, kNodeBytes,
          /*IsMulti=*/false>>>;
  static constexpr bool kOrdered = true;
};

template <typename K, typename V, typename MapOf, bool kBag>
class MapCore final : public TypedCore<K, V> {
 public:
  using Entry = std::pair<K, V>;
  using Values = std::vector<V, CountingAllocator<V>>;
  using Slot = std::conditional_t<kBag, Values, V>;
  using Map = typename MapOf::template Map<Slot>;
  using Visitor = typename TypedCore<K, V>::Visitor;
  using Match = typename TypedCore<K, V>::Match;

  explicit MapCore(const TableOptions& options)
      : TypedCore<K, V>(options, typeid(K), typeid(V)),
        shard_bits_(MapOf::kOrdered || !options.write_concurrency ? 0 : 4),
        shard_shift_(shard_bits_ == 0 ? 0 : 64 - shard_bits_),
        shard_mask_((size_t{1} << shard_bits_) - 1),
        duplicates_(options.type == TableType::kDuplicateBag) {}

  ~MapCore() override { delete[] ShardArray(); }

  absl::Status Insert(K key, V value) override {
    Shard* shards = WritableShards();
    if (shards == nullptr) return this->DeletedError("insert");
    Shard& s = shards[ShardOf(key)];
    ExclusiveLock lock(s.lock);
    if (this->deleted()) return this->DeletedError("insert");
    InsertLocked(s, std::move(key), std::move(value));
    return absl::OkStatus();
  }

  absl::Status InsertMany(std::vector<Entry> entries) override {
    Shard* shards = WritableShards();
    if (shards == nullptr) return this->DeletedError("insert");
    MultiLock lock(this, shards, entries);
    if (this->deleted()) return this->DeletedError("insert");
    for (Entry& e : entries) {
      Shard& s = shards[ShardOf(e.first)];
      s.lock.AssertHeld();  // MultiLock holds every shard of `entries`.
      InsertLocked(s, std::move(e.first), std::move(e.second));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> InsertNew(std::vector<Entry> entries) override {
    Shard* shards = WritableShards();
    if (shards == nullptr) return this->DeletedError("insert_new");
    MultiLock lock(this, shards, entries);
    if (this->deleted()) return this->DeletedError("insert_new");
    for (const Entry& e : entries) {
      const Shard& s = shards[ShardOf(e.first)];
      s.lock.AssertHeld();
      if (s.map.contains(e.first)) return false;
    }
    // Keys repeated inside `entries` behave as consecutive inserts (the last value wins in a set).
    for (Entry& e : entries) {
      Shard& s = shards[ShardOf(e.first)];
      s.lock.AssertHeld();  // MultiLock holds every shard of `entries`.
      InsertLocked(s, std::move(e.first), std::move(e.second));
    }
    return true;
  }

  absl::StatusOr<std::vector<V>> Lookup(const K& key) const override {
    std::vector<V> out;
    absl::Status st = ReadKey(key, "lookup", [&](const Slot* slot) {
      if (slot == nullptr) return;
      if constexpr (kBag) {
        out.assign(slot->begin(), slot->end());
      } else {
        out.push_back(*slot);
      }
    });
    if (!st.ok()) return st;
    return out;
  }

  // (Table<K, V>::Get tries TryGetFast first on set and ordered_set.)
  absl::StatusOr<std::optional<V>> Get(const K& key) const override {
    std::optional<V> out;
    absl::Status st = ReadKey(key, "lookup", [&](const Slot* slot) {
      if (slot == nullptr) return;
      if (const V* first = FirstOf(*slot)) out.emplace(*first);
    });
    if (!st.ok()) return st;
    return out;
  }

  absl::StatusOr<bool> Member(const K& key) const override {
    bool found = false;
    absl::Status st = ReadKey(key, "member", [&](const Slot* slot) { found = slot != nullptr; });
    if (!st.ok()) return st;
    return found;
  }

  absl::StatusOr<size_t> Erase(const K& key) override {
    size_t removed = 0;
    absl::Status st = WriteKey(key, "erase", [&](Shard& s, size_t hash) {
      s.lock.AssertHeld();  // WriteKey runs this under the shard lock.
      auto it = FindIn(s.map, key, hash);
      if (it == s.map.end()) return;
      removed = CountOf(it->second);
      s.objects -= removed;
      s.map.erase(it);
    });
    if (!st.ok()) return st;
    return removed;
  }

  absl::StatusOr<size_t> EraseObject(const K& key, const V& value) override {
    if constexpr (!std::equality_comparable<V>) {
      return absl::InvalidArgumentError(
          absl::StrCat("erase_object on ", this->ToString(), ": the value type has no operator=="));
    } else {
      size_t removed = 0;
      absl::Status st = WriteKey(key, "erase_object", [&](Shard& s, size_t hash) {
        s.lock.AssertHeld();  // WriteKey runs this under the shard lock.
        auto it = FindIn(s.map, key, hash);
        if (it == s.map.end()) return;
        if constexpr (kBag) {
          Values& values = it->second;
          // Every object is compared before any moves: an == that throws leaves them as they were.
          Marks drop;
          drop.reserve(values.size());
          for (const V& v : values) drop.push_back(v == value);
          removed = DropMarked(values, drop);
          if (values.empty()) s.map.erase(it);
        } else {
          if (!(it->second == value)) return;
          removed = 1;
          s.map.erase(it);
        }
        s.objects -= removed;
      });
      if (!st.ok()) return st;
      return removed;
    }
  }

  absl::StatusOr<std::vector<V>> Take(const K& key) override {
    std::vector<V> out;
    absl::Status st = WriteKey(key, "take", [&](Shard& s, size_t hash) {
      s.lock.AssertHeld();  // WriteKey runs this under the shard lock.
      auto it = FindIn(s.map, key, hash);
      if (it == s.map.end()) return;
      if constexpr (kBag) {
        out.assign(std::make_move_iterator(it->second.begin()),
                   std::make_move_iterator(it->second.end()));
      } else {
        out.push_back(std::move(it->second));
      }
      s.objects -= out.size();
      s.map.erase(it);
    });
    if (!st.ok()) return st;
    return out;
  }

  // update_counter's and get's common case, inlined into the caller (Table<K, V> calls it first):
  // the shard lock free at the first try, the table alive, the key present and (update_counter)
  // no overflow. True when done; false when nothing was done and the full call must decide.
  // A loop of these over a big table overlaps more of its cache misses (the full call takes about
  // twice the instructions of a bare locked map update: bench/results/design-measurements.md).
  __attribute__((always_inline)) bool TryUpdateCounterFast(const K& key, V incr, V* result)
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Shard* shards = ShardArray();
    if (shards == nullptr) return false;
    size_t hash = HashOf(key);
    Shard& s = shards[ShardOfHash(hash)];
    if (!s.lock.try_lock()) return false;
    // Unlocks however the update leaves: K's comparison may throw, and a shard lock left held
    // would stop every later writer of the shard.
    struct Unlock {
      BiasedRwLock& lock;
      ~Unlock() ABSL_NO_THREAD_SAFETY_ANALYSIS { lock.unlock(); }
    } unlock{s.lock};
    if (this->deleted()) return false;
    auto it = FindIn(s.map, key, hash);
    if (it == s.map.end() || __builtin_add_overflow(it->second, incr, result)) return false;
    it->second = *result;
    return true;
  }
  // With the table's read bias on, the read takes no lock and writes no shared word (two threads
  // reading one table no longer pass a lock's cache line back and forth); otherwise it takes the
  // shard's lock shared and now and then offers to turn the bias back on.
  __attribute__((always_inline)) bool TryGetFast(const K& key, std::optional<V>* out) const
      ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Shard* shards = ShardArray();
    if (shards == nullptr) return false;
    size_t hash = HashOf(key);
    const Shard& s = shards[ShardOfHash(hash)];
    // Ends the read however it leaves (K's comparison or V's copy may throw): a biased read's
    // slot left set would stop every later writer of the table, a shared lock its shard's.
    struct EndOfRead {
      const ReadBias& bias;
      BiasedRwLock& lock;
      ReadBias::Reader reader;
      enum { kNothing, kBiased, kShared } held = kNothing;
      ~EndOfRead() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        if (held == kBiased) bias.EndRead(reader);
        if (held == kShared) lock.unlock_shared();
      }
    };
    bool done = false;
    bool biased = false;
    {
      EndOfRead end{bias_, s.lock};
      if (bias_.TryBeginRead(&end.reader)) {
        end.held = EndOfRead::kBiased;
        biased = true;
      } else if (s.lock.try_lock_shared()) {
        end.held = EndOfRead::kShared;
      } else {
        return false;
      }
      if (!this->deleted()) {
        auto it = FindIn(s.map, key, hash);
        if (it != s.map.end()) {
          if (const V* first = FirstOf(it->second)) out->emplace(*first);
        }
        done = true;
      }
    }
    if (!biased) {
      bias_.MaybeEnable(
          shard_count(), [shards](size_t i) -> BiasedRwLock& { return shards[i].lock; },
          [this] { return !this->deleted(); });
    }
    return done;
  }

  // The common case (key present, no threshold, no overflow) is a short path with no Status
  // built and every rare case out of line: a loop of updates over a big table then overlaps its
  // cache misses (figures: bench/results/design-measurements.md).
  absl::StatusOr<V> UpdateCounter(const K& key, V incr, const CounterOptions<V>& options) override {
    if constexpr (kBag || !std::integral<V>) {
      return absl::InvalidArgumentError(
          absl::StrCat("update_counter on ", this->ToString(), ": needs a ",
                       kBag ? "set or ordered_set (this is a bag)" : "an integer value type"));
    } else {
      Shard* shards = WritableShards();
      if (shards == nullptr) [[unlikely]]
        return this->DeletedError("update_counter");
      size_t hash = HashOf(key);
      Shard& s = shards[ShardOfHash(hash)];
      ExclusiveLock lock(s.lock);
      if (this->deleted()) [[unlikely]]
        return this->DeletedError("update_counter");
      auto it = FindIn(s.map, key, hash);
      if (it == s.map.end()) [[unlikely]]
        return UpdateMissingCounter(s, key, incr, options);
      V& counter = it->second;
      V result;
      if (!options.threshold && !__builtin_add_overflow(counter, incr, &result)) [[likely]] {
        counter = result;
        return result;
      }
      return UpdateCounterSlow(counter, incr, options);
    }
  }

  absl::Status Visit(const Visitor& visitor, const char* what) const override {
    Shard* shards = ShardArray();
    if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
    std::vector<Entry> chunk;
    for (size_t i = 0; i < shard_count(); ++i) {
      chunk.clear();
      {
        SharedLock lock(shards[i].lock);
        if (this->deleted()) return this->DeletedError(what);
        chunk.reserve(shards[i].objects);
        for (const auto& [key, slot] : shards[i].map) {
          if constexpr (kBag) {
            for (const V& v : slot) chunk.emplace_back(key, v);
          } else {
            chunk.emplace_back(key, slot);
          }
        }
      }
      if (!chunk.empty() && !visitor(chunk)) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<K>> First(Direction direction) const override {
    const bool last = direction == Direction::kBackward;
    const char* what = last ? "last" : "first";
    Shard* shards = ShardArray();
    if (shards == nullptr) {
      if (this->deleted()) return this->DeletedError(what);
      return std::optional<K>();
    }
    for (size_t i = 0; i < shard_count(); ++i) {
      SharedLock lock(shards[i].lock);
      if (this->deleted()) return this->DeletedError(what);
      if (shards[i].map.empty()) continue;
      if constexpr (MapOf::kOrdered) {
        if (last) return std::optional<K>(std::prev(shards[i].map.end())->first);
      }
      return std::optional<K>(shards[i].map.begin()->first);
    }
    return std::optional<K>();
  }

  absl::StatusOr<std::optional<K>> Next(const K& key, Direction direction) const override {
    const bool previous = direction == Direction::kBackward;
    const char* what = previous ? "prev" : "next";
    Shard* shards = ShardArray();
    if (shards == nullptr) {
      if (this->deleted()) return this->DeletedError(what);
      if constexpr (MapOf::kOrdered) return std::optional<K>();
      return MissingKey(key, what);
    }
    if constexpr (MapOf::kOrdered) {
      const Shard& s = shards[0];
      SharedLock lock(s.lock);
      if (this->deleted()) return this->DeletedError(what);
      if (previous) {
        auto it = s.map.lower_bound(key);
        if (it == s.map.begin()) return std::optional<K>();
        return std::optional<K>(std::prev(it)->first);
      }
      auto it = s.map.upper_bound(key);
      if (it == s.map.end()) return std::optional<K>();
      return std::optional<K>(it->first);
    } else {
      // Hash order (ETS: prev on an unordered table is next). Valid while no rehash intervenes.
      size_t i = ShardOf(key);
      {
        const Shard& s = shards[i];
        SharedLock lock(s.lock);
        if (this->deleted()) return this->DeletedError(what);
        auto it = s.map.find(key);
        if (it == s.map.end()) return MissingKey(key, what);
        if (++it != s.map.end()) return std::optional<K>(it->first);
      }
      for (++i; i < shard_count(); ++i) {
        SharedLock lock(shards[i].lock);
        if (this->deleted()) return this->DeletedError(what);
        if (!shards[i].map.empty()) return std::optional<K>(shards[i].map.begin()->first);
      }
      return std::optional<K>();
    }
  }

  absl::StatusOr<size_t> Size(const char* what) const override {
    Shard* shards = ShardArray();
    if (shards == nullptr) {
      if (this->deleted()) return this->DeletedError(what);
      return size_t{0};
    }
    size_t total = 0;
    for (size_t i = 0; i < shard_count(); ++i) {
      SharedLock lock(shards[i].lock);
      if (this->deleted()) return this->DeletedError(what);
      total += shards[i].objects;
    }
    return total;
  }

  absl::Status Clear(const char* what) override {
    Shard* shards = ShardArray();
    if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
    // One shard at a time (as ETS delete_all_objects with write_concurrency).
    for (size_t i = 0; i < shard_count(); ++i) {
      ExclusiveLock lock(shards[i].lock);
      if (this->deleted()) return this->DeletedError(what);
      EmptyLocked(shards[i]);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> SelectCount(const Match* pred) const override {
    size_t count = 0;
    absl::Status st = ForShards<false>("select_count", [&](Shard& s) {
      s.lock.AssertReaderHeld();  // ForShards<false> holds it shared.
      if (pred == nullptr) {
        count += s.objects;
        return;
      }
      for (const auto& [key, slot] : s.map) {
        if constexpr (kBag) {
          for (const V& v : slot) count += (*pred)(key, v);
        } else {
          count += (*pred)(key, slot);
        }
      }
    });
    if (!st.ok()) return st;
    return count;
  }

  absl::StatusOr<size_t> SelectDelete(const Match* pred) override {
    size_t removed = 0;
    absl::Status st = ForShards<true>("select_delete", [&](Shard& s) {
      s.lock.AssertHeld();  // ForShards<true> holds it exclusively.
      if (pred == nullptr) {
        removed += s.objects;
        EmptyLocked(s);
        return;
      }
      size_t before = s.objects;
      for (auto it = s.map.begin(); it != s.map.end();) {
        bool erase;
        if constexpr (kBag) {
          Values& values = it->second;
          const K& key = it->first;
          // Every value is judged before any moves: a predicate that throws leaves the key's
          // objects as they were.
          Marks drop;
          drop.reserve(values.size());
          for (const V& v : values) drop.push_back((*pred)(key, v));
          s.objects -= DropMarked(values, drop);
          erase = values.empty();
        } else {
          erase = (*pred)(it->first, it->second);
          s.objects -= erase;
        }
        it = EraseAndAdvance(s.map, it, erase);
      }
      removed += before - s.objects;
    });
    if (!st.ok()) return st;
    return removed;
  }

  absl::StatusOr<size_t> SelectReplace(typename TypedCore<K, V>::Replace fn) override {
    size_t replaced = 0;
    absl::Status st = ForShards<true>("select_replace", [&](Shard& s) {
      s.lock.AssertHeld();  // ForShards<true> holds it exclusively.
      for (auto it = s.map.begin(); it != s.map.end(); ++it) {
        const K& key = it->first;
        if constexpr (kBag) {
          Values& values = it->second;
          // Every replacement is computed, and every duplicate found, before anything is stored:
          // a function or an == that throws leaves the key's objects as they were (and no
          // duplicates behind). What follows the judging only moves (noexcept).
          absl::InlinedVector<std::optional<V>, 4> fresh;
          fresh.reserve(values.size());
          bool changed = false;
          for (const V& v : values) {
            fresh.push_back(fn(key, v));
            changed = changed || fresh.back().has_value();
          }
          Marks drop(values.size(), false);
          if constexpr (std::equality_comparable<V>) {
            // A bag keeps one copy of identical objects: replacements that made two of a key's
            // objects identical leave the first (the key's other objects keep their order).
            if (changed && !duplicates_) {
              auto after = [&](size_t i) -> const V& { return fresh[i] ? *fresh[i] : values[i]; };
              for (size_t i = 1; i < values.size(); ++i) {
                for (size_t j = 0; j < i && !drop[i]; ++j)
                  drop[i] = !drop[j] && after(j) == after(i);
              }
            }
          }
          for (size_t i = 0; i < values.size(); ++i) {
            if (!fresh[i]) continue;
            values[i] = std::move(*fresh[i]);
            ++replaced;
          }
          s.objects -= DropMarked(values, drop);
        } else {
          std::optional<V> fresh = fn(key, std::as_const(it->second));
          if (!fresh) continue;
          it->second = std::move(*fresh);
          ++replaced;
        }
      }
    });
    if (!st.ok()) return st;
    return replaced;
  }

  absl::StatusOr<size_t> SnapshotShard(size_t shard, const Match* pred, std::vector<Entry>* out,
                                       const char* what) const override {
    Shard* shards = ShardArray();
    if (shards == nullptr) {
      if (this->deleted()) return this->DeletedError(what);
      return size_t{0};
    }
    if (shard >= shard_count()) return shard_count();
    const Shard& s = shards[shard];
    SharedLock lock(s.lock);
    if (this->deleted()) return this->DeletedError(what);
    if (pred == nullptr) out->reserve(out->size() + s.objects);
    for (const auto& [key, slot] : s.map) {
      if constexpr (kBag) {
        for (const V& v : slot) {
          if (pred == nullptr || (*pred)(key, v)) out->emplace_back(key, v);
        }
      } else {
        if (pred == nullptr || (*pred)(key, slot)) out->emplace_back(key, slot);
      }
    }
    return shard_count();
  }

  absl::Status ScanOrdered(KeyRange<K>* range, bool reverse, const Match* pred, size_t limit,
                           std::vector<Entry>* out, bool* done, const char* what) const override {
    *done = true;
    if constexpr (!MapOf::kOrdered) {
      return absl::InvalidArgumentError(absl::StrCat(what, " on ", this->ToString(),
                                                     ": key ranges need an ordered_set (this is a ",
                                                     etsmgr::ToString(this->type()), ")"));
    } else {
      Shard* shards = ShardArray();
      if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
      const Shard& s = shards[0];
      SharedLock lock(s.lock);
      if (this->deleted()) return this->DeletedError(what);
      if (range->lo && range->hi &&
          (*range->hi < *range->lo ||
           (!(*range->lo < *range->hi) && !(range->lo_inclusive && range->hi_inclusive)))) {
        return absl::OkStatus();  // Empty (and lo above hi would put `first` past `last`).
      }
      const Map& map = s.map;
      // [first, last): the range's objects in key order.
      auto first = !range->lo            ? map.begin()
                   : range->lo_inclusive ? map.lower_bound(*range->lo)
                                         : map.upper_bound(*range->lo);
      auto last = !range->hi            ? map.end()
                  : range->hi_inclusive ? map.upper_bound(*range->hi)
                                        : map.lower_bound(*range->hi);
      size_t matched = 0;
      if (!reverse) {
        for (auto it = first; it != last; ++it) {
          if (pred == nullptr || (*pred)(it->first, it->second)) {
            out->emplace_back(it->first, it->second);
            if (++matched == limit) {
              if (std::next(it) != last) {
                range->lo = it->first;
                range->lo_inclusive = false;
                *done = false;
              }
              break;
            }
          }
        }
      } else {
        for (auto it = last; it != first;) {
          --it;
          if (pred == nullptr || (*pred)(it->first, it->second)) {
            out->emplace_back(it->first, it->second);
            if (++matched == limit) {
              if (it != first) {
                range->hi = it->first;
                range->hi_inclusive = false;
                *done = false;
              }
              break;
            }
          }
        }
      }
      return absl::OkStatus();
    }
  }

  absl::StatusOr<bool> Update(const K& key, absl::FunctionRef<void(V&)> fn,
                              const V* default_value) override {
    if constexpr (kBag) {
      return absl::InvalidArgumentError(absl::StrCat(
          "update on ", this->ToString(),
          ": needs a set or ordered_set (a bag's objects are not addressed by key alone)"));
    } else {
      Shard* shards = default_value != nullptr ? WritableShards() : ShardArray();
      if (shards == nullptr) {
        if (this->deleted()) return this->DeletedError("update");
        return false;
      }
      size_t hash = HashOf(key);
      Shard& s = shards[ShardOfHash(hash)];
      ExclusiveLock lock(s.lock);
      if (this->deleted()) return this->DeletedError("update");
      auto it = FindIn(s.map, key, hash);
      const bool inserted = it == s.map.end();
      if (inserted) {
        if (default_value == nullptr) return false;
        // Copied before the map makes room: Abseil's maps count a slot before constructing in it,
        // so a copy that throws inside them would leave a slot counted and never made.
        std::pair<K, V> entry(key, *default_value);
        it = s.map.insert(std::move(entry)).first;
        ++s.objects;
      }
      try {
        fn(it->second);
      } catch (...) {
        // The call failed: the default object it added goes with it.
        if (inserted) {
          s.map.erase(it);
          --s.objects;
        }
        throw;
      }
      return true;
    }
  }

  absl::Status ReadValues(const K& key, absl::FunctionRef<void(const V&)> fn,
                          const char* what) const override {
    return ReadKey(key, what, [&](const Slot* slot) {
      if (slot == nullptr) return;
      if constexpr (kBag) {
        for (const V& v : *slot) fn(v);
      } else {
        fn(*slot);
      }
    });
  }

  absl::Status SaveScan(absl::FunctionRef<void(const K&, const V&)> fn,
                        absl::FunctionRef<absl::Status()> between,
                        const char* what) const override {
    Shard* shards = ShardArray();
    if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
    if constexpr (MapOf::kOrdered) {
      const Shard& s = shards[0];
      std::optional<K> after;  // The last key written: the next run starts above it.
      while (true) {
        bool more = false;
        {
          SharedLock lock(s.lock);
          if (this->deleted()) return this->DeletedError(what);
          auto it = after ? s.map.upper_bound(*after) : s.map.begin();
          for (size_t n = 0; it != s.map.end() && n < this->kSaveRun; ++it, ++n)
            fn(it->first, it->second);
          if (it != s.map.end()) {
            after = std::prev(it)->first;
            more = true;
          }
        }
        if (absl::Status st = between(); !st.ok()) return st;
        if (!more) return absl::OkStatus();
      }
    } else {
      for (size_t i = 0; i < shard_count(); ++i) {
        {
          const Shard& s = shards[i];
          SharedLock lock(s.lock);
          if (this->deleted()) return this->DeletedError(what);
          for (const auto& [key, slot] : s.map) {
            if constexpr (kBag) {
              for (const V& v : slot) fn(key, v);
            } else {
              fn(key, slot);
            }
          }
        }
        if (absl::Status st = between(); !st.ok()) return st;
      }
      return absl::OkStatus();
    }
  }

  absl::StatusOr<size_t> InsertBulk(std::vector<Entry> entries, const char* what) override {
    Shard* shards = WritableShards();
    if (shards == nullptr) return this->DeletedError(what);
    std::vector<std::vector<Entry>> parts(shard_count());
    if (shard_count() == 1) {
      parts[0] = std::move(entries);
    } else {
      for (Entry& e : entries) parts[ShardOf(e.first)].push_back(std::move(e));
    }
    size_t added = 0;
    for (size_t i = 0; i < shard_count(); ++i) {
      Shard& s = shards[i];
      ExclusiveLock lock(s.lock);
      if (this->deleted()) return this->DeletedError(what);
      const size_t before = s.objects;
      if constexpr (!MapOf::kOrdered) s.map.reserve(s.map.size() + parts[i].size());
      for (Entry& e : parts[i]) InsertLocked(s, std::move(e.first), std::move(e.second));
      added += s.objects - before;
    }
    return added;
  }

  bool Footprint(size_t* size, size_t* memory) const override {
    *size = 0;
    *memory = sizeof(*this);
    Shard* shards = ShardArray();
    if (shards == nullptr) return !this->deleted();
    *memory += shard_count() * sizeof(Shard);
    for (size_t i = 0; i < shard_count(); ++i) {
      SharedLock lock(shards[i].lock);
      if (this->deleted()) return false;
      *size += shards[i].objects;
      *memory += shards[i].bytes;
    }
    return true;
  }

  size_t StorageMemory() const override {
    size_t bytes = sizeof(*this);
    Shard* shards = ShardArray();
    if (shards == nullptr) return bytes;
    bytes += shard_count() * sizeof(Shard);
    for (size_t i = 0; i < shard_count(); ++i) {
      SharedLock lock(shards[i].lock);
      bytes += shards[i].bytes;
    }
    return bytes;
  }

 protected:
  void DropStorage() override {
    Shard* shards = ShardArray();
    if (shards == nullptr) return;
    for (size_t i = 0; i < shard_count(); ++i) {
      ExclusiveLock lock(shards[i].lock);
      EmptyLocked(shards[i]);
    }
    // The shard array itself stays until the core goes: another thread may hold a pointer into
    // it, about to lock a shard and find the table deleted.
  }

 private:
  struct alignas(64) Shard {
    Shard() : map(CountingAllocator<std::pair<const K, Slot>>(&bytes)) {}
    mutable BiasedRwLock lock;  // Its exclusive acquisitions revoke the table's read bias.
    size_t bytes ABSL_GUARDED_BY(lock) = 0;    // Heap held by `map` (and bag value vectors).
    size_t objects ABSL_GUARDED_BY(lock) = 0;  // Entries (bags: values).
    Map map ABSL_GUARDED_BY(lock);
  };

  static CountingAllocator<std::pair<const K, Slot>> Alloc(Shard& s)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.lock) {
    return CountingAllocator<std::pair<const K, Slot>>(&s.bytes);
  }

  // Drops every entry and the map's memory (not just its contents). s.lock also guards the byte
  // counter the old storage updates as it is freed.
  static void EmptyLocked(Shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.lock) {
    Map empty(Alloc(s));
    s.map.swap(empty);
    s.objects = 0;
  }

  // Locks the shards of `entries` exclusively, in index order (deadlock-free across writers).
  class MultiLock {
   public:
    MultiLock(const MapCore* core, Shard* shards, const std::vector<Entry>& entries)
        : shards_(shards) {
      for (const Entry& e : entries) indices_.push_back(core->ShardOf(e.first));
      std::sort(indices_.begin(), indices_.end());
      indices_.erase(std::unique(indices_.begin(), indices_.end()), indices_.end());
      for (size_t i : indices_) shards_[i].lock.lock();
    }
    ~MultiLock() {
      for (auto it = indices_.rbegin(); it != indices_.rend(); ++it) shards_[*it].lock.unlock();
    }
    MultiLock(const MultiLock&) = delete;
    MultiLock& operator=(const MultiLock&) = delete;

   private:
    Shard* shards_;
    std::vector<size_t> indices_;
  };

  size_t shard_count() const { return size_t{1} << shard_bits_; }

  // The key's hash, computed once per operation: its top bits pick the shard and the map reuses
  // it (find(key, hash)). Ordered tables do not hash.
  static size_t HashOf(const K& key) {
    if constexpr (MapOf::kOrdered) {
      return 0;
    } else {
      return absl::Hash<K>{}(key);
    }
  }
  size_t ShardOfHash(size_t hash) const {
    return static_cast<size_t>(hash >> shard_shift_) &
           shard_mask_;  // No branch: one shard has mask 0.
  }
  size_t ShardOf(const K& key) const { return ShardOfHash(HashOf(key)); }
  template <typename M>
  static auto FindIn(M& map, const K& key, size_t hash) {
    if constexpr (MapOf::kOrdered) {
      return map.find(key);
    } else {
      return map.find(key, hash);
    }
  }

  // The shard array, allocated on first use; null when the table is deleted.
  // The shard array: the core's storage root (null until the first write).
  Shard* ShardArray() const { return static_cast<Shard*>(this->storage()); }

  Shard* WritableShards() {
    Shard* shards = ShardArray();
    if (shards != nullptr) return shards;
    if (this->deleted()) return nullptr;
    auto fresh = std::make_unique<Shard[]>(shard_count());
    for (size_t i = 0; i < shard_count(); ++i) fresh[i].lock.set_bias(&bias_);
    void* installed = this->PublishStorage(fresh.get());
    if (installed == fresh.get()) return fresh.release();
    return static_cast<Shard*>(installed);  // Another writer installed one first.
  }

  // A bag key's objects judged one by one (true: drop it).
  using Marks = absl::InlinedVector<bool, 16>;
  // Removes the marked objects, the others keeping their order; yields how many went. Only moves
  // (noexcept): judge everything first, then call this, and a throw leaves the objects whole.
  static size_t DropMarked(Values& values, const Marks& drop) {
    size_t kept = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      if (drop[i]) continue;
      if (kept != i) values[kept] = std::move(values[i]);
      ++kept;
    }
    const size_t dropped = values.size() - kept;
    values.erase(values.begin() + static_cast<ptrdiff_t>(kept), values.end());
    return dropped;
  }

  void InsertLocked(Shard& s, K key, V value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.lock) {
    if constexpr (kBag) {
      auto [it, inserted] =
          s.map.try_emplace(std::move(key), Values(CountingAllocator<V>(&s.bytes)));
      Values& values = it->second;
      try {
        if constexpr (std::equality_comparable<V>) {
          if (!duplicates_ && std::find(values.begin(), values.end(), value) != values.end()) {
            return;  // A bag keeps one copy of each identical object.
          }
        }
        values.push_back(std::move(value));
      } catch (...) {
        // V's == or the memory failed: a key new here is not left behind with no object.
        if (inserted) s.map.erase(it);
        throw;
      }
      ++s.objects;
    } else {
      auto [it, inserted] = s.map.insert_or_assign(std::move(key), std::move(value));
      if (inserted) ++s.objects;
    }
  }

  // The value Get reports for a key: a bag's first, or null for an empty bag.
  static const V* FirstOf(const Slot& slot) {
    if constexpr (kBag) {
      return slot.empty() ? nullptr : &slot.front();
    } else {
      return &slot;
    }
  }

  static size_t CountOf(const Slot& slot) {
    if constexpr (kBag) {
      return slot.size();
    } else {
      return 1;
    }
  }

  // Runs f(shard) on every shard in turn under its lock (exclusive when kWrite).
  template <bool kWrite, typename F>
  absl::Status ForShards(const char* what, F&& f) const {
    Shard* shards = ShardArray();
    if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
    for (size_t i = 0; i < shard_count(); ++i) {
      Shard& s = shards[i];
      if constexpr (kWrite) {
        ExclusiveLock lock(s.lock);
        if (this->deleted()) return this->DeletedError(what);
        f(s);
      } else {
        SharedLock lock(s.lock);
        if (this->deleted()) return this->DeletedError(what);
        f(s);
      }
    }
    return absl::OkStatus();
  }

  // Erases `it` when `erase` and yields the iterator after it (absl's flat maps keep iterators to
  // other elements valid on erase; its btree hands back the next one).
  static typename Map::iterator EraseAndAdvance(Map& map, typename Map::iterator it, bool erase) {
    if (!erase) return ++it;
    if constexpr (MapOf::kOrdered) {
      return map.erase(it);
    } else {
      map.erase(it++);
      return it;
    }
  }

  template <typename F>
  absl::Status ReadKey(const K& key, const char* what, F&& f) const {
    Shard* shards = ShardArray();
    if (shards == nullptr) {
      if (this->deleted()) return this->DeletedError(what);
      f(static_cast<const Slot*>(nullptr));
      return absl::OkStatus();
    }
    size_t hash = HashOf(key);
    const Shard& s = shards[ShardOfHash(hash)];
    SharedLock lock(s.lock);
    if (this->deleted()) return this->DeletedError(what);
    auto it = FindIn(s.map, key, hash);
    f(it == s.map.end() ? static_cast<const Slot*>(nullptr) : &it->second);
    return absl::OkStatus();
  }

  template <typename F>
  absl::Status WriteKey(const K& key, const char* what, F&& f) {
    Shard* shards = ShardArray();
    if (shards == nullptr) return this->deleted() ? this->DeletedError(what) : absl::OkStatus();
    size_t hash = HashOf(key);
    Shard& s = shards[ShardOfHash(hash)];
    ExclusiveLock lock(s.lock);
    if (this->deleted()) return this->DeletedError(what);
    f(s, hash);
    return absl::OkStatus();
  }

  // UpdateCounter's rare cases.
  [[gnu::noinline, gnu::cold]] absl::StatusOr<V> UpdateMissingCounter(
      Shard& s, const K& key, V incr, const CounterOptions<V>& options)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.lock) {
    if (!options.default_value) return MissingKey(key, "update_counter");
    // Computed on a copy first: a call that fails (the default's increment overflows) inserts
    // nothing, as ETS's update_counter/4 has no effect when it fails.
    V counter = *options.default_value;
    absl::StatusOr<V> result = UpdateCounterSlow(counter, incr, options);
    if (!result.ok()) return result;
    K copy(key);  // Before the map makes room (see Update).
    s.map.try_emplace(std::move(copy), counter);
    ++s.objects;
    return result;
  }
  [[gnu::noinline]] absl::StatusOr<V> UpdateCounterSlow(V& counter, V incr,
                                                        const CounterOptions<V>& options) {
    V result;
    bool overflow = __builtin_add_overflow(counter, incr, &result);
    if (options.threshold) {
      bool up = incr >= V{0};
      if (overflow || (up ? result > *options.threshold : result < *options.threshold)) {
        result = options.set_value;
        overflow = false;
      }
    }
    if (overflow) {
      return absl::OutOfRangeError(absl::StrCat("update_counter on ", this->ToString(),
                                                ": the counter would overflow; left at ", counter));
    }
    counter = result;
    return result;
  }

  absl::Status MissingKey(const K& key, const char* what) const {
    if constexpr (requires(const K& k) { absl::StrCat(k); }) {
      return absl::NotFoundError(
          absl::StrCat(what, " on ", this->ToString(), ": no key ", key, " in the table"));
    } else {
      return absl::NotFoundError(
          absl::StrCat(what, " on ", this->ToString(), ": the key is not in the table"));
    }
  }

  const int shard_bits_;
  const int shard_shift_;
  const size_t shard_mask_;
  const bool duplicates_;
  // Lets TryGetFast read without writing a shard lock's word (etsmgr/base/read_bias.h).
  ReadBias bias_;
};

}  // namespace table_internal
}  // namespace etsmgr

#endif  // ETSMGR_TABLE_INTERNAL_STORAGE_H_
