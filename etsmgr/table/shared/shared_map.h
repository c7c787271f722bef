// SharedMap<K, V>: a crash-consistent hash map (ETS `set`: one value per key) in a named
// shared-memory segment, shared by the threads and processes that open the same name, and kept
// when they all die.
//
//   auto hits = etsmgr::SharedMap<int64_t, int64_t>::Open("hits").value();
//   hits.Insert(7, 0).IgnoreError();
//   absl::StatusOr<int64_t> n = hits.UpdateCounter(7, 1);  // atomic, from any process
//   // ... the program is killed; on restart:
//   auto again = etsmgr::SharedMap<int64_t, int64_t>::Open("hits").value();  // *again.Get(7) == 1
//
// Keys and values: fixed-size trivially copyable types of at most 4096 bytes and 8-byte
// alignment, without pointers (SharedStorable; the compiler rejects the rest). Keys are hashed and
// compared by their bytes, so they must have no padding and one representation per value
// (SharedKey: integers, enums, arrays and padding-free structs of those, SharedString<N>; not
// floating point). SharedString<N> (shared_string.h) holds up to N <= 4092 bytes. A struct holding
// a pointer compiles but is meaningless in another process: don't.
//
// Contract. A SharedMap is a cheap, copyable handle; copies share one mapping, which goes with the
// last copy. Every call may be made from any thread of any process at once. Errors: DataLoss for a
// corrupted segment (naming what is wrong), FailedPrecondition for a segment of another format
// version or a file that is not ours (symlink, not regular, another owner, writable by others),
// InvalidArgument for a bad name or a segment of other key/value types or another kind,
// NotFound / AlreadyExists from Open's modes, ResourceExhausted when the segment or /dev/shm is
// full or a process has 4096 handles open (or no holder token can be locked: see layout.h),
// DeadlineExceeded when a live process holds a lock past options.lock_timeout,
// OutOfRange on counter overflow, FailedPrecondition on a null handle.
//
// ---------------------------------------------------------------------------------------------
// Design.
//
// Layout (internal/layout.h). One file: /dev/shm/<name> or <directory>/<name>, mode 0600. Page 0
// is the header: magic, format version, kind, shard count, the key and value types (a hash of
// the mangled type name with size and alignment, plus the printable name) and sizes, max_bytes,
// all under a checksum; then the segment lock and allocator state. Then `shards` shard headers
// (a lock word, a seqlock counter, the *region word*, an intent record).
// Then regions: a region is an open-addressing (linear probing) array of 2^k slots
// [ctrl = key hash | key words | value words] with a small header (its count, tombstones, free
// list link). A shard's whole state is its region word (offset | log2 capacity) and that region.
// Each open reserves max_bytes of address space once (PROT_NONE) and maps the file at its start,
// so growth never moves the base; a process maps the new tail when it meets an offset beyond
// what it mapped.
//
// Shard locks. A shard's lock is one word holding its holder's token: a compare-and-swap takes it,
// a store releases it (a robust pthread mutex halved a writer's speed). Each open handle draws a
// random token and holds an open-file-description lock on the token's byte of the file (far past
// its data), which the kernel releases when the process dies, however it dies; a waiter judges
// the holder dead when that byte is unlocked, takes the lock word over and repairs the shard
// (layout.h, "Shard locks"). A forked child drops its copies of its parent's token locks
// (pthread_atfork) and draws its own. The segment lock (allocator, file growth) is a word of the
// same kind: no lock in the segment names a thread, so programs in different PID namespaces share
// a segment, and a file saved while a lock was held (a copy, a reboot) opens and is repaired.
//
// Crash consistency. Writers lock the shard. A write changes one slot and
// the region's two counters: it first saves the slot's old image and the old counters in the
// shard's intent record and publishes the record with one release store of its state; then
// marks the seqlock odd, writes the slot, clears the intent (the commit), and marks it even. If the
// writer is killed at any instruction, its token's file lock goes with it; the next locker (a
// writer, a reader that met an odd sequence too often, or any Open, which looks at every shard's
// lock) sees a dead holder, takes the lock over and rolls the slot back from the image if the
// intent is set: the operation is then not done; if the intent was already cleared it is done (and
// no reader saw the new slot before the commit: the sequence was odd until after it). Writes return
// only after clearing the intent, so every returned write stays. A resize builds a new region
// privately, publishes it with one 8-byte store of the region word, and frees the old one; its
// intent names both, so a repair frees whichever is not the shard's region word (a kill leaves the
// old array valid until the publishing store). Allocator changes (free lists, the bump pointer, a
// region's owner) run under the segment lock as transactions with an undo log of (offset, old word)
// pairs, so a killed allocation or free is undone before any shard's intent is read. Clear() locks
// every shard, marks each odd, and commits with one store of a clear epoch; a kill after that store
// is finished by the repair of each shard still locked (roll forward), before it no shard changed.
// Stores are release stores and loads acquire loads (plain moves on x86-64), so the compiler keeps
// program order and every process sees a dead writer's stores in order.
//
// Readers take no lock: they read the shard's sequence, the region word and the slots, and retry
// if the sequence was odd or changed; after 128 tries they lock the shard (which repairs it if
// its writer is dead). A region freed under a reader is never unmapped, only reused; the reader's
// sequence check then fails and it retries. Every offset read from the file is bounds-checked
// before use, every probe is bounded, every lock word is checked at open: a corrupted file
// gives DataLoss, not a crash (fuzzed: fuzz_open.cc).
//
// What survives what. A thread or process killed at any instruction (SIGKILL, a segfault, the
// OOM killer), or all of them (the whole program): yes, with every returned write. A reboot or
// power loss: only the file-backed mode, and only what was written before the last Sync() with no
// write in flight ( /dev/shm is memory).
//
// Huge pages. Each open maps the segment 2 MiB-aligned with MADV_HUGEPAGE and the file grows by
// 2 MiB, so a segment on a tmpfs that gives huge pages (mount -o huge=within_size, or huge=advise)
// is mapped with them; on /dev/shm as most systems mount it (huge=never) it gets 4 KiB pages. Under
// a hypervisor's nested paging that is most of a write's cost: measured here, insert into a 1M-key
// segment runs at 0.4-0.6x the in-process table with 4 KiB pages and 0.9x with huge pages
// (shared_map_benchmark --shared_dir=DIR).
//
// Limits. set only (no bag, ordered_set); fixed-size keys and values up to 4096 bytes; one segment
// grows up to max_bytes (default 16 GiB, chosen at creation) and never shrinks: freed regions go to
// per-size free lists for reuse. Rebuilding a shard copies it under its lock (writers of that
// shard wait; readers do not). A lock held by a live but stopped process blocks its shard's
// writers until lock_timeout (DeadlineExceeded). /proc must be mounted (a handle's token lock is
// taken through /proc/self/fd; a process that gave up the rights to open the file cannot use a
// handle it inherited); every forked child that uses an inherited handle draws a token of its
// own. A child made without fork() (clone, vfork without exec) must not
// use its parent's handles: it would share their holder token. Closing a descriptor a handle
// owns (a "close every fd" loop, say) is not defended against, except right after fork() before
// the child uses a handle (the handle then answers FailedPrecondition): a closed holder
// descriptor makes its live handle look dead to other processes, which take its locks. Segments of
// format version 1 to 3 (robust mutexes, holder slots) are refused as another format version.
// Truncating the file under a running process, or writing to it from outside, is not defended
// against (SIGBUS / garbage). Segments from another ABI or byte order are refused only through
// their type hashes, not detected as such.
#ifndef ETSMGR_TABLE_SHARED_SHARED_MAP_H_
#define ETSMGR_TABLE_SHARED_SHARED_MAP_H_

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/internal/layout.h"
#include "etsmgr/table/shared/internal/map_core.h"
#include "etsmgr/table/shared/shared_options.h"
#include "etsmgr/table/shared/shared_string.h"

namespace etsmgr {

template <typename T>
concept SharedStorable =
    std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
    !std::is_reference_v<T> && !std::is_empty_v<T> && alignof(T) <= 8 &&
    sizeof(T) <= shared_internal::kMaxStorableBytes;

template <typename T>
concept SharedKey = SharedStorable<T> && std::has_unique_object_representations_v<T>;

template <SharedKey K, SharedStorable V>
class SharedMap;
namespace table_internal {
template <SharedKey K, SharedStorable V>
class SharedCore;
}  // namespace table_internal

template <SharedKey K, SharedStorable V>
class SharedMap {
 public:
  using Entry = std::pair<K, V>;

  SharedMap() = default;  // A null handle: every call answers FailedPrecondition.

  // Opens (or creates, per options.mode) the segment `name`; repairs what killed processes left.
  static absl::StatusOr<SharedMap> Open(std::string_view name,
                                        const SharedMapOptions& options = {});
  // Unlinks the segment's name; open handles keep working on it.
  static absl::Status Remove(std::string_view name, const SharedMapOptions& options = {}) {
    return shared_internal::MapCore::Remove(name, options);
  }

  bool valid() const { return core_ != nullptr; }
  bool created() const { return core_ != nullptr && core_->created(); }
  // The user's "initialised" mark, kept in the segment: true unless someone called
  // SetInitialised(false) and not yet SetInitialised(true). A program that creates a segment
  // and must fill it before it counts calls SetInitialised(false) first and SetInitialised(true)
  // when done, so the next program can tell a filled segment from one whose filler was killed
  // half-way (created() is false for both). One atomic store; survives what the data survives.
  bool initialised() const { return core_ != nullptr && core_->initialised(); }
  void SetInitialised(bool done) const {
    if (core_ != nullptr) core_->SetInitialised(done);
  }

  // --- Writes: each is atomic with respect to a kill of the caller at any instruction.
  // Inserts, or replaces the value of an existing key.
  absl::Status Insert(const K& key, const V& value);
  // Inserts only when the key is absent; yields whether it did.
  absl::StatusOr<bool> InsertNew(const K& key, const V& value);
  // Removes the key; yields how many entries went (0 or 1).
  absl::StatusOr<size_t> Erase(const K& key);
  // Removes the key only if it holds `value` (V's ==); yields how many entries went (0 or 1).
  absl::StatusOr<size_t> EraseObject(const K& key,
                                     const V& value) requires std::equality_comparable<V>;
  // Removes the key and yields its value (std::nullopt when absent).
  absl::StatusOr<std::optional<V>> Take(const K& key);
  // Adds `incr` atomically and yields the new value. NotFound for a missing key unless
  // options.default_value; OutOfRange on overflow without a threshold.
  absl::StatusOr<V> UpdateCounter(
      const K& key, V incr, const SharedCounterOptions<V>& options = {}) requires std::integral<V>;
  // Empties the map: atomic as a whole (readers see every shard before or after it).
  absl::Status Clear();
  // A read-modify-write of one key, crash-atomic like every write: under the shard's lock,
  // `decide(current, next)` sees the key's value (null when absent) and answers kKeep, kPut (with
  // *next filled in) or kErase. `decide` must be short and must not call this map (the lock is
  // not reentrant: such a call waits lock_timeout and fails with DeadlineExceeded) nor block. A
  // child that `decide` forks gets FailedPrecondition and writes nothing (the parent writes).
  // `what` names the operation in errors.
  using Action = SharedMapAction;
  template <typename F>
  requires std::is_invocable_r_v<Action, F&, const V*, V*> absl::Status Mutate(
      const K& key, F&& decide, const char* what = "mutate") {
    if (core_ == nullptr) return Null(what);
    KeyWords k(key);
    return core_->template Mutate<KW, VW>(k.w, what, [&](const uint64_t* cur, uint64_t* next) {
      std::optional<V> current;
      if (cur != nullptr) current = FromWords<V>(cur);
      V out{};
      const Action action = decide(current ? &*current : nullptr, &out);
      if (action == Action::kPut) ToWords(out, next);
      return action;
    });
  }

  // --- Reads.
  absl::StatusOr<std::optional<V>> Get(const K& key) const;
  absl::StatusOr<bool> Member(const K& key) const;
  absl::StatusOr<size_t> Size() const;
  // Shard by shard: each shard's entries are copied under its lock, `fn` runs without it (it may
  // use the map); it sees each shard as of one moment, not the whole map.
  absl::Status ForEach(const std::function<void(const K&, const V&)>& fn) const;
  absl::StatusOr<std::vector<Entry>> ToList() const;

  // Walks the whole structure under every lock: header, allocator, free lists, every region and
  // slot (hashes, probe paths, duplicates, counts, SharedString lengths); the first inconsistency
  // is a DataLoss naming it. Repairs what killed writers left first, as every lock does.
  absl::Status Check() const;
  // File-backed: msync + fsync (what a reboot will find). /dev/shm: nothing to do.
  absl::Status Sync() const;
  absl::StatusOr<SharedMapInfo> Info() const;

 private:
  static constexpr size_t KW = (sizeof(K) + 7) / 8;
  static constexpr size_t VW = (sizeof(V) + 7) / 8;
  using Core = shared_internal::MapCore;

  // The inlined fast paths of a table with shared storage (Table<K, V>::Get and UpdateCounter):
  // true when answered, false when the general call must run (no Status is built here).
  friend class table_internal::SharedCore<K, V>;
  static constexpr int kFastReadTries = 4;
  __attribute__((always_inline)) bool TryGetFast(const K& key, std::optional<V>* out) const {
    KeyWords k(key);
    uint64_t value[VW];
    switch (core_->template TryFind<KW, VW>(k.w, value, kFastReadTries)) {
      case Core::FastFind::kFound:
        out->emplace(FromWords<V>(value));
        return true;
      case Core::FastFind::kAbsent:
        out->reset();
        return true;
      case Core::FastFind::kSlow:
        break;
    }
    return false;
  }
  // A present key, no overflow; everything else is UpdateCounter's.
  __attribute__((always_inline)) bool TryUpdateCounterFast(const K& key, V incr,
                                                           V* result) requires std::integral<V> {
    if constexpr (VW != 1) {
      return false;
    } else {
      KeyWords k(key);
      return core_->template TryUpdateWord<KW>(k.w, [&](uint64_t current, uint64_t* next) {
        if (__builtin_add_overflow(FromWords<V>(&current), incr, result)) return false;
        ToWords(*result, next);
        return true;
      });
    }
  }

  struct KeyWords {
    explicit KeyWords(const K& key) { std::memcpy(static_cast<void*>(w), &key, sizeof(K)); }
    uint64_t w[KW] = {};
  };
  static void ToWords(const V& value, uint64_t* out) {
    std::memset(out, 0, VW * 8);
    std::memcpy(static_cast<void*>(out), &value, sizeof(V));
  }
  template <typename T>
  static T FromWords(const uint64_t* words) {
    T out;
    std::memcpy(static_cast<void*>(&out), words, sizeof(T));
    return out;
  }
  template <typename T>
  static bool Valid(const uint64_t* words) {
    return FromWords<T>(words).SharedValid();
  }
  template <typename T>
  static shared_internal::TypeDesc Desc() {
    shared_internal::TypeDesc d{typeid(T).name(), sizeof(T), alignof(T), nullptr};
    if constexpr (requires(const T& t) {
                    { t.SharedValid() } -> std::same_as<bool>;
                  }) {
      d.valid = &Valid<T>;
    }
    return d;
  }
  static absl::Status Null(const char* what) {
    return absl::FailedPreconditionError(absl::StrCat(what, " on a null SharedMap handle"));
  }

  explicit SharedMap(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  std::shared_ptr<Core> core_;
};

// ---------------------------------------------------------------------------------------------
// Implementation.

template <SharedKey K, SharedStorable V>
absl::StatusOr<SharedMap<K, V>> SharedMap<K, V>::Open(std::string_view name,
                                                      const SharedMapOptions& options) {
  shared_internal::LayoutDesc layout{SharedKind::kSet, Desc<K>(), Desc<V>()};
  absl::StatusOr<std::shared_ptr<Core>> core = Core::Open(name, options, layout);
  if (!core.ok()) return core.status();
  return SharedMap(*std::move(core));
}

template <SharedKey K, SharedStorable V>
absl::Status SharedMap<K, V>::Insert(const K& key, const V& value) {
  if (core_ == nullptr) return Null("insert");
  KeyWords k(key);
  return core_->template Mutate<KW, VW>(k.w, "insert", [&](const uint64_t*, uint64_t* next) {
    ToWords(value, next);
    return Action::kPut;
  });
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<bool> SharedMap<K, V>::InsertNew(const K& key, const V& value) {
  if (core_ == nullptr) return Null("insert_new");
  KeyWords k(key);
  bool inserted = false;
  absl::Status st =
      core_->template Mutate<KW, VW>(k.w, "insert_new", [&](const uint64_t* cur, uint64_t* next) {
        if (cur != nullptr) return Action::kKeep;
        ToWords(value, next);
        inserted = true;
        return Action::kPut;
      });
  if (!st.ok()) return st;
  return inserted;
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<size_t> SharedMap<K, V>::Erase(const K& key) {
  if (core_ == nullptr) return Null("erase");
  KeyWords k(key);
  size_t erased = 0;
  absl::Status st =
      core_->template Mutate<KW, VW>(k.w, "erase", [&](const uint64_t* cur, uint64_t*) {
        erased = cur != nullptr;
        return Action::kErase;
      });
  if (!st.ok()) return st;
  return erased;
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<size_t> SharedMap<K, V>::EraseObject(
    const K& key, const V& value) requires std::equality_comparable<V> {
  if (core_ == nullptr) return Null("erase_object");
  KeyWords k(key);
  size_t erased = 0;
  absl::Status st =
      core_->template Mutate<KW, VW>(k.w, "erase_object", [&](const uint64_t* cur, uint64_t*) {
        if (cur == nullptr || !(FromWords<V>(cur) == value)) return Action::kKeep;
        erased = 1;
        return Action::kErase;
      });
  if (!st.ok()) return st;
  return erased;
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<std::optional<V>> SharedMap<K, V>::Take(const K& key) {
  if (core_ == nullptr) return Null("take");
  KeyWords k(key);
  std::optional<V> taken;
  absl::Status st =
      core_->template Mutate<KW, VW>(k.w, "take", [&](const uint64_t* cur, uint64_t*) {
        if (cur != nullptr) taken = FromWords<V>(cur);
        return Action::kErase;
      });
  if (!st.ok()) return st;
  return taken;
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<V> SharedMap<K, V>::UpdateCounter(
    const K& key, V incr, const SharedCounterOptions<V>& options) requires std::integral<V> {
  if (core_ == nullptr) return Null("update_counter");
  if (!options.threshold) [[likely]] {  // A present key without overflow: the short path.
    V fast;
    if (TryUpdateCounterFast(key, incr, &fast)) [[likely]]
      return fast;
  }
  KeyWords k(key);
  V result{};
  V old{};
  bool missing = false;
  bool overflow = false;
  absl::Status st = core_->template Mutate<KW, VW>(
      k.w, "update_counter", [&](const uint64_t* cur, uint64_t* next) {
        if (cur != nullptr) {
          old = FromWords<V>(cur);
        } else if (options.default_value) {
          old = *options.default_value;
        } else {
          missing = true;
          return Action::kKeep;
        }
        overflow = __builtin_add_overflow(old, incr, &result);
        if (options.threshold) [[unlikely]] {
          const bool up = incr >= V{0};
          if (overflow || (up ? result > *options.threshold : result < *options.threshold)) {
            result = options.set_value;
            overflow = false;
          }
        }
        if (overflow) return Action::kKeep;
        ToWords(result, next);
        return Action::kPut;
      });
  if (!st.ok()) [[unlikely]]
    return st;
  if (missing) [[unlikely]] {
    return absl::NotFoundError(absl::StrCat("update_counter on shared map \"", core_->name(),
                                            "\": the key is not in the map"));
  }
  if (overflow) [[unlikely]] {
    return absl::OutOfRangeError(absl::StrCat("update_counter on shared map \"", core_->name(),
                                              "\": the counter would overflow; left at ", old));
  }
  return result;
}

template <SharedKey K, SharedStorable V>
absl::Status SharedMap<K, V>::Clear() {
  if (core_ == nullptr) return Null("clear");
  return core_->Clear();
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<std::optional<V>> SharedMap<K, V>::Get(const K& key) const {
  if (core_ == nullptr) return Null("lookup");
  KeyWords k(key);
  uint64_t value[VW];
  absl::StatusOr<bool> found = core_->template Find<KW, VW>(k.w, value, "lookup");
  if (!found.ok()) [[unlikely]]
    return found.status();
  if (!*found) return std::optional<V>();
  return std::optional<V>(FromWords<V>(value));
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<bool> SharedMap<K, V>::Member(const K& key) const {
  if (core_ == nullptr) return Null("member");
  KeyWords k(key);
  return core_->template Find<KW, VW>(k.w, nullptr, "member");
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<size_t> SharedMap<K, V>::Size() const {
  if (core_ == nullptr) return Null("size");
  absl::StatusOr<uint64_t> n = core_->Size();
  if (!n.ok()) return n.status();
  return static_cast<size_t>(*n);
}

template <SharedKey K, SharedStorable V>
absl::Status SharedMap<K, V>::ForEach(const std::function<void(const K&, const V&)>& fn) const {
  if (core_ == nullptr) return Null("for_each");
  return core_->ForEach([&](const uint64_t* key,
                            const uint64_t* value) { fn(FromWords<K>(key), FromWords<V>(value)); },
                        "for_each");
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<std::vector<typename SharedMap<K, V>::Entry>> SharedMap<K, V>::ToList() const {
  if (core_ == nullptr) return Null("to_list");
  std::vector<Entry> out;
  absl::Status st = core_->ForEach(
      [&](const uint64_t* key, const uint64_t* value) {
        out.emplace_back(FromWords<K>(key), FromWords<V>(value));
      },
      "to_list");
  if (!st.ok()) return st;
  return out;
}

template <SharedKey K, SharedStorable V>
absl::Status SharedMap<K, V>::Check() const {
  if (core_ == nullptr) return Null("check");
  return core_->Check();
}

template <SharedKey K, SharedStorable V>
absl::Status SharedMap<K, V>::Sync() const {
  if (core_ == nullptr) return Null("sync");
  return core_->Sync();
}

template <SharedKey K, SharedStorable V>
absl::StatusOr<SharedMapInfo> SharedMap<K, V>::Info() const {
  if (core_ == nullptr) return Null("info");
  return core_->Info();
}

}  // namespace etsmgr

#endif  // ETSMGR_TABLE_SHARED_SHARED_MAP_H_
