// The type-erased engine of SharedMap<K, V> (internal): one open segment in this process, its
// locks, repair, resize, allocator and validator. The hot operations (Find, Mutate) are templates
// on the key's and value's word counts, so SharedMap<int64_t, int64_t> probes with constants;
// everything else works from the layout stored in the segment. See shared_map.h for the design.
#ifndef ETSMGR_TABLE_SHARED_INTERNAL_MAP_CORE_H_
#define ETSMGR_TABLE_SHARED_INTERNAL_MAP_CORE_H_

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "etsmgr/base/spin_lock.h"
#include "etsmgr/table/shared/internal/crash_point.h"
#include "etsmgr/table/shared/internal/layout.h"
#include "etsmgr/table/shared/shared_options.h"

namespace etsmgr::shared_internal {

// A key or value type as the segment records it.
struct TypeDesc {
  const char* mangled;  // typeid(T).name(): stable across programs of one ABI
  uint32_t size;
  uint32_t align;
  // Validates a stored value (Check()); null: every bit pattern is valid.
  bool (*valid)(const uint64_t* words);
};

struct LayoutDesc {
  SharedKind kind;
  TypeDesc key;
  TypeDesc value;
};

class MapCore {
 public:
  using Action = SharedMapAction;

  static absl::StatusOr<std::shared_ptr<MapCore>> Open(std::string_view name,
                                                       const SharedMapOptions& options,
                                                       const LayoutDesc& layout);
  // Unlinks the segment's name (processes that have it open keep using it).
  static absl::Status Remove(std::string_view name, const SharedMapOptions& options);
  // The name rule: 1..200 of [A-Za-z0-9._-], not starting with '.'.
  static absl::Status ValidateName(std::string_view name);

  ~MapCore();
  MapCore(const MapCore&) = delete;
  MapCore& operator=(const MapCore&) = delete;

  // --- Reads: optimistic under the shard's seqlock, locked after kReadTries failed tries (which
  // also repairs a shard whose writer was killed). True when the key is present; `value` (VW
  // words, may be null) receives its value.
  template <size_t KW, size_t VW>
  absl::StatusOr<bool> Find(const uint64_t* key, uint64_t* value, const char* what) const;

  // --- The fast paths of a table's hottest calls (inlined into the caller; no Status built).
  // A Find that answers only when its optimistic tries succeed: kFound / kAbsent, or kSlow when
  // the caller must call Find (writers kept the shard busy, or something needs the locked path).
  enum class FastFind { kFound, kAbsent, kSlow };
  template <size_t KW, size_t VW>
  FastFind TryFind(const uint64_t* key, uint64_t* value, int tries) const;
  // A one-word value's read-modify-write of a present key: under the shard's lock, `next(current,
  // &out)` answers whether to store `out`. True when it was stored; false when the caller must
  // take the general path (Mutate) instead: the key is absent, `next` declined, the lock is
  // contended or in repair, or the shard looks wrong (the general path says how).
  template <size_t KW, typename Next>
  bool TryUpdateWord(const uint64_t* key, Next&& next);

  // --- Writes: under the shard's lock, `decide(current, next)` sees the key's value (null when
  // absent) and answers kKeep, kPut (with `next` filled in) or kErase. The change is one slot and
  // the region's counts, made crash-atomic by the shard's intent record; a resize that a new key
  // needs happens first, as its own atomic step.
  template <size_t KW, size_t VW, typename Decide>
  absl::Status Mutate(const uint64_t* key, const char* what, Decide&& decide);

  absl::StatusOr<uint64_t> Size() const;
  // Calls fn(key words, value words) for every entry, shard by shard: each shard's entries are
  // copied under its lock, fn runs without it.
  absl::Status ForEach(const std::function<void(const uint64_t*, const uint64_t*)>& fn,
                       const char* what) const;
  absl::Status Clear();
  absl::Status Check() const;
  absl::Status Sync() const;
  SharedMapInfo Info() const;
  // Only the exact pending mark means "not initialised": a damaged word never makes a filled
  // segment look empty (Check() reports it).
  bool initialised() const { return Load(&Mut()->init_pending) != kInitPendingMark; }
  void SetInitialised(bool done) const {
    Store(&Mut()->init_pending, done ? uint64_t{0} : kInitPendingMark);
  }

  const std::string& name() const { return name_; }
  bool created() const { return created_; }

 private:
  struct RegionView {
    RegionHeader* header;
    uint64_t* slots;
    uint32_t log2cap;
    uint64_t mask;
  };

  class ShardLock {
   public:
    ShardLock(const MapCore* core, size_t s, const char* what)
        : core_(core), s_(s), fork_generation_(fork_generation.load(std::memory_order_relaxed)) {
      ShardHeader* sh = core->Shard(s);
      const uint64_t me = core->Token();
      if (me == 0 || !TryLockWord(&sh->lock, me)) [[unlikely]] {
        status_ = core->LockSlow(s, what);
      } else if (LoadRelaxed(&sh->intent_state) != kIntentIdle) [[unlikely]] {
        // A live writer's operation failed half-way (its segment lock timed out): finish it.
        status_ = core->RepairHeld(s);
      }
    }
    ~ShardLock() {
      // A child forked while this was held (by a `decide` that forked, say) must not release
      // its parent's lock.
      if (status_.ok() && !forked()) UnlockWord(&core_->Shard(s_)->lock);
    }
    // This is a child forked while the lock was held: the lock is the parent's.
    bool forked() const {
      return fork_generation_ != fork_generation.load(std::memory_order_relaxed);
    }
    ShardLock(const ShardLock&) = delete;
    ShardLock& operator=(const ShardLock&) = delete;
    bool ok() const { return status_.ok(); }
    const absl::Status& status() const { return status_; }

   private:
    const MapCore* core_;
    size_t s_;
    uint64_t fork_generation_;
    absl::Status status_;
  };

  class SegmentLock;

  // --- Shard lock words (layout.h, "Shard locks").
  static bool TryLockWord(uint64_t* word, uint64_t token) {
    uint64_t free = 0;
    // Acquire-release, as a mutex's would be.
    return __atomic_compare_exchange_n(word, &free, token, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
  }
  static void UnlockWord(uint64_t* word) { __atomic_store_n(word, uint64_t{0}, __ATOMIC_RELEASE); }
  // This handle's holder token, claimed at open and again in a forked child (whose copy of the
  // parent's holder file lock the fork handler dropped); 0 when a claim failed (ClaimToken says
  // why).
  uint64_t Token() const {
    if (token_fork_generation_.load(std::memory_order_acquire) ==
        fork_generation.load(std::memory_order_relaxed)) [[likely]] {
      return token_.load(std::memory_order_relaxed);
    }
    absl::StatusOr<uint64_t> token = ClaimToken();
    return token.ok() ? *token : 0;
  }
  absl::StatusOr<uint64_t> ClaimToken() const;
  void ReleaseToken();
  bool IsOurFile(int fd) const;  // fd is open on the segment's file
  enum class Holder { kAlive, kDead, kCorrupt };
  Holder HolderState(uint64_t token) const;
  std::string HolderName(uint64_t token) const;
  bool InSomeLockWord(uint64_t token) const;
  struct LoggedWrite {
    uint64_t* word;
    uint64_t value;
  };

  MapCore() = default;
  absl::Status Attach(int fd, bool created, const LayoutDesc& layout);
  absl::Status Reclaim();

  ShardHeader* Shard(size_t s) const {
    return reinterpret_cast<ShardHeader*>(base_ + kShardsOffset + s * shard_stride_);
  }
  static uint64_t* Image(ShardHeader* sh) { return reinterpret_cast<uint64_t*>(sh + 1); }
  ImmutableHeader* Fixed() const { return reinterpret_cast<ImmutableHeader*>(base_); }
  MutableHeader* Mut() const { return reinterpret_cast<MutableHeader*>(base_ + kMutableOffset); }
  size_t ShardOf(uint64_t ctrl) const {
    return shard_bits_ == 0 ? 0 : static_cast<size_t>(ctrl >> (64 - shard_bits_));
  }
  template <typename T>
  T* At(uint64_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }

  // Validates a region word (bounds, mapping it in when another process grew the segment).
  bool View(uint64_t word, RegionView* r) const {
    uint32_t log2cap = RegionLog2(word);
    uint64_t offset = RegionOffset(word);
    if (log2cap < kMinLog2Capacity || log2cap > kMaxLog2Capacity || offset < data_offset_) {
      return false;
    }
    const uint64_t bytes = RegionBytes(log2cap, slot_words_);
    if (offset > reserved_ || bytes > reserved_ - offset) return false;  // no overflow below
    const uint64_t end = offset + bytes;
    if (end > mapped_.load(std::memory_order_acquire) && !EnsureMapped(end)) return false;
    r->header = At<RegionHeader>(offset);
    r->slots = At<uint64_t>(offset + kRegionHeaderBytes);
    r->log2cap = log2cap;
    r->mask = (uint64_t{1} << log2cap) - 1;
    return true;
  }
  bool EnsureMapped(uint64_t end) const;
  // Maps the file's bytes [from, to) at base_ + from (and asks for huge pages).
  bool MapFile(uint64_t from, uint64_t to) const;
  void PrefaultRegion(const RegionView& r) const;

  // Lock words: shard s's, or the segment's (s == kSegment). Both are taken the same way and a
  // dead holder's is taken over and what it guards repaired (the shard, or the segment log).
  static constexpr size_t kSegment = ~size_t{0};
  uint64_t* LockWord(size_t s) const { return s == kSegment ? &Mut()->lock : &Shard(s)->lock; }
  std::string LockName(size_t s) const;
  // An unfinished change is recorded under lock word s (a shard's intent, the segment's log).
  bool Unfinished(size_t s) const;
  absl::Status Repair(size_t s) const { return s == kSegment ? RepairSegment() : RepairShard(s); }
  absl::Status LockSlow(size_t s, const char* what) const;
  // Lock word s held `word`, a dead holder: take it over (false when another locker did first)
  // and repair; a failed repair leaves the word orphaned.
  bool TakeOverDead(size_t s, uint64_t word, uint64_t me, absl::Status* status) const;
  absl::Status RepairHeld(size_t s) const;  // repairs under lock word s taken normally; unlocks
                                            // on error
  absl::Status LockSegment() const;
  absl::Status RepairShard(size_t s) const;
  absl::Status RepairSegment() const;
  absl::Status FinishResizeLocked(size_t s) const;  // caller holds the shard and segment locks
  absl::Status Rebuild(size_t s, uint64_t live_after) const;
  absl::Status ClearShardLocked(size_t s, uint64_t epoch) const;
  absl::StatusOr<uint64_t> AllocRegion(size_t s, uint32_t log2cap) const;  // segment lock held
  absl::Status GrowFile(uint64_t end) const;                               // segment lock held
  void RunLogged(std::initializer_list<LoggedWrite> writes,                // segment lock held
                 bool freeing) const;
  absl::Status CheckLocked() const;
  absl::Status CheckShard(size_t s) const;

  absl::Status Corrupt(const std::string& what) const;
  absl::Status CorruptShard(size_t s, const std::string& what) const;
  // DataLoss: lock word s is neither free, orphaned nor a holder token (`what`: the operation,
  // when one asked).
  absl::Status LockWordNamesNoHolder(size_t s, uint64_t word, const char* what = nullptr) const;
  template <size_t KW, size_t VW>
  absl::StatusOr<bool> FindLocked(const uint64_t* key, uint64_t* value, const char* what) const;

  template <size_t KW>
  static bool KeyEquals(const uint64_t* stored, const uint64_t* key) {
    for (size_t i = 0; i < KW; ++i) {
      if (Load(stored + i) != key[i]) return false;
    }
    return true;
  }

  // The intent record, the odd sequence and the even one around a single-slot change.
  template <size_t kSW>
  static void BeginSlotOp(ShardHeader* sh, const RegionView& r, uint64_t index) {
    const uint64_t* slot = r.slots + index * kSW;
    uint64_t* image = Image(sh);
    Store(&sh->intent_slot, index);
    Store(&sh->intent_count, LoadRelaxed(&r.header->count));
    Store(&sh->intent_tombstones, LoadRelaxed(&r.header->tombstones));
    uint64_t ctrl = LoadRelaxed(slot);
    if (ctrl > kTombstone) {
      for (size_t i = 0; i < kSW; ++i) Store(&image[i], LoadRelaxed(&slot[i]));
    } else {
      Store(&image[0], ctrl);
    }
    Store(&sh->intent_state, kIntentSlot);
    CrashPoint(Crash::kSlotIntent);
    Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
    CrashPoint(Crash::kSlotOdd);
  }
  // The commit (the intent cleared) comes while the sequence is still odd: no reader sees the new
  // slot before it can no longer be rolled back. A kill between the two leaves an idle intent and
  // an odd sequence, which the repair rolls forward (makes even).
  static void EndSlotOp(ShardHeader* sh) {
    CrashPoint(Crash::kSlotWritten);
    Store(&sh->intent_state, kIntentIdle);
    CrashPoint(Crash::kSlotCommitted);
    Store(&sh->seq, LoadRelaxed(&sh->seq) + 1);
  }

  static constexpr int kReadTries = 128;

  std::string name_;
  std::string path_;
  bool file_backed_ = false;
  bool created_ = false;
  int fd_ = -1;
  char* base_ = nullptr;
  uint64_t reserved_ = 0;
  mutable std::atomic<uint64_t> mapped_{0};
  mutable std::mutex map_mu_;  // serialises mapping growth in this process
  uint32_t shard_count_ = 0;
  uint32_t shard_bits_ = 0;
  uint64_t shard_stride_ = 0;
  uint32_t key_words_ = 0;
  uint32_t value_words_ = 0;
  uint32_t slot_words_ = 0;
  uint64_t data_offset_ = 0;
  uint64_t max_bytes_ = 0;
  absl::Duration lock_timeout_;
  LayoutDesc layout_{};
  // Holder identity (Token()): drawn under the process's claim mutex (map_core.cc).
  mutable std::atomic<uint64_t> token_{0};
  mutable std::atomic<uint64_t> token_fork_generation_{~uint64_t{0}};
  mutable std::atomic<int> live_fd_{-1};  // the description holding the token's file lock
  mutable int live_entry_ = -1;           // its entry in the process's fork-handler list
  mutable uint64_t live_generation_ = 0;  // the fork generation it was opened in
  dev_t file_dev_ = 0;                    // the segment file, as Attach found it
  ino_t file_ino_ = 0;

 public:
  // Raised in a forked child (pthread_atfork), whose handles then draw new holder tokens.
  static std::atomic<uint64_t> fork_generation;
  // Lock-free reads of this process that read a slot while its shard was being written (the
  // sequence changed under them: the read is tried again). A statistic, a test's evidence that
  // its readers met its writers; on a cache line of its own (fork_generation is read by every
  // write).
  struct alignas(64) Counter {
    std::atomic<uint64_t> value{0};
  };
  static Counter read_retries;
};

// ---------------------------------------------------------------------------------------------
// Templates.

template <size_t KW, size_t VW>
MapCore::FastFind MapCore::TryFind(const uint64_t* key, uint64_t* value, int tries) const {
  constexpr size_t kSW = 1 + KW + VW;
  const uint64_t ctrl = CtrlOf(HashWordsFixed<KW>(key));
  ShardHeader* sh = Shard(ShardOf(ctrl));
  for (int t = 0; t < tries; ++t) {
    const uint64_t seq = Load(&sh->seq);
    if (seq & 1) {
      CpuRelax();
      continue;
    }
    const uint64_t word = Load(&sh->region);
    bool found = false;
    if (word != 0) {
      RegionView r;
      if (!View(word, &r)) continue;  // corrupt: the locked path says so
      uint64_t i = ctrl & r.mask;
      for (uint64_t n = 0; n <= r.mask; ++n, i = (i + 1) & r.mask) {
        const uint64_t* slot = r.slots + i * kSW;
        const uint64_t c = Load(slot);
        if (c == kEmpty) break;
        if (c == ctrl && KeyEquals<KW>(slot + 1, key)) {
          found = true;
          if (value != nullptr) {
            for (size_t j = 0; j < VW; ++j) value[j] = Load(slot + 1 + KW + j);
          }
          break;
        }
      }
    }
    if (LoadRelaxed(&sh->seq) == seq) return found ? FastFind::kFound : FastFind::kAbsent;
    read_retries.value.fetch_add(1, std::memory_order_relaxed);  // It read during a write.
  }
  return FastFind::kSlow;
}

template <size_t KW, size_t VW>
absl::StatusOr<bool> MapCore::Find(const uint64_t* key, uint64_t* value, const char* what) const {
  switch (TryFind<KW, VW>(key, value, kReadTries)) {
    case FastFind::kFound:
      return true;
    case FastFind::kAbsent:
      return false;
    case FastFind::kSlow:
      break;
  }
  return FindLocked<KW, VW>(key, value, what);
}

template <size_t KW, typename Next>
bool MapCore::TryUpdateWord(const uint64_t* key, Next&& next) {
  constexpr size_t kSW = 2 + KW;
  const uint64_t ctrl = CtrlOf(HashWordsFixed<KW>(key));
  const size_t s = ShardOf(ctrl);
  ShardHeader* sh = Shard(s);
  const uint64_t word = Load(&sh->region);
  if (word == 0) return false;
  RegionView r;
  if (!View(word, &r)) return false;
  // Start the slot's miss before the lock (the region may change meanwhile: re-read under it).
  const uint64_t* home = r.slots + (ctrl & r.mask) * kSW;
  __builtin_prefetch(home, 1);
  __builtin_prefetch(home + kSW - 1, 1);
  // Held (by a live or dead holder), or no token: the general path waits, repairs, says more.
  const uint64_t me = Token();
  if (me == 0 || !TryLockWord(&sh->lock, me)) [[unlikely]] {
    return false;
  }
  bool stored = false;
  if (LoadRelaxed(&sh->intent_state) == kIntentIdle && LoadRelaxed(&sh->region) == word) {
    uint64_t i = ctrl & r.mask;
    for (uint64_t n = 0; n <= r.mask; ++n, i = (i + 1) & r.mask) {
      uint64_t* slot = r.slots + i * kSW;
      const uint64_t c = LoadRelaxed(slot);
      if (c == kEmpty) break;
      if (c == ctrl && KeyEquals<KW>(slot + 1, key)) {
        uint64_t out;
        if (next(LoadRelaxed(slot + 1 + KW), &out)) {
          // One aligned word, as in Mutate: atomic for a kill and for readers.
          Store(slot + 1 + KW, out);
          CrashPoint(Crash::kSlotWritten);
          stored = true;
        }
        break;
      }
    }
  }
  UnlockWord(&sh->lock);
  return stored;
}

template <size_t KW, size_t VW>
absl::StatusOr<bool> MapCore::FindLocked(const uint64_t* key, uint64_t* value,
                                         const char* what) const {
  constexpr size_t kSW = 1 + KW + VW;
  const uint64_t ctrl = CtrlOf(HashWordsFixed<KW>(key));
  const size_t s = ShardOf(ctrl);
  ShardHeader* sh = Shard(s);
  ShardLock lock(this, s, what);
  if (!lock.ok()) return lock.status();
  const uint64_t word = LoadRelaxed(&sh->region);
  if (word == 0) return false;
  RegionView r;
  if (!View(word, &r)) return CorruptShard(s, "the region word is out of bounds");
  uint64_t i = ctrl & r.mask;
  for (uint64_t n = 0; n <= r.mask; ++n, i = (i + 1) & r.mask) {
    const uint64_t* slot = r.slots + i * kSW;
    const uint64_t c = LoadRelaxed(slot);
    if (c == kEmpty) return false;
    if (c == ctrl && KeyEquals<KW>(slot + 1, key)) {
      if (value != nullptr) {
        for (size_t j = 0; j < VW; ++j) value[j] = LoadRelaxed(slot + 1 + KW + j);
      }
      return true;
    }
  }
  return CorruptShard(s, "a probe found no empty slot");
}

template <size_t KW, size_t VW, typename Decide>
absl::Status MapCore::Mutate(const uint64_t* key, const char* what, Decide&& decide) {
  constexpr size_t kSW = 1 + KW + VW;
  constexpr uint64_t kNone = ~uint64_t{0};
  const uint64_t ctrl = CtrlOf(HashWordsFixed<KW>(key));
  const size_t s = ShardOf(ctrl);
  ShardHeader* sh = Shard(s);
  // Start the slot's cache (and TLB) miss before the lock: the lock and unlock then overlap the
  // miss instead of adding to it. A hint only: the region may change.
  if (const uint64_t hint = Load(&sh->region); hint != 0) [[likely]] {
    RegionView h;
    if (View(hint, &h)) [[likely]] {
      const uint64_t* home = h.slots + (ctrl & h.mask) * kSW;
      __builtin_prefetch(home, 1);
      __builtin_prefetch(home + kSW - 1, 1);
    }
  }
  ShardLock lock(this, s, what);
  if (!lock.ok()) return lock.status();

  RegionView r{};
  uint64_t word = LoadRelaxed(&sh->region);
  uint64_t found = kNone;
  uint64_t free_slot = kNone;  // the first tombstone or the empty slot ending the probe
  if (word != 0) {
    if (!View(word, &r)) return CorruptShard(s, "the region word is out of bounds");
    const uint64_t count = LoadRelaxed(&r.header->count);
    const uint64_t tombstones = LoadRelaxed(&r.header->tombstones);
    if (count > r.mask || tombstones > r.mask || count + tombstones > r.mask) {
      return CorruptShard(s, "its region counts more entries than it has slots");
    }
    uint64_t i = ctrl & r.mask;
    for (uint64_t n = 0; n <= r.mask; ++n, i = (i + 1) & r.mask) {
      const uint64_t c = LoadRelaxed(r.slots + i * kSW);
      if (c == kEmpty) {
        if (free_slot == kNone) free_slot = i;
        break;
      }
      if (c == kTombstone) {
        if (free_slot == kNone) free_slot = i;
      } else if (c == ctrl && KeyEquals<KW>(r.slots + i * kSW + 1, key)) {
        found = i;
        break;
      }
    }
    if (found == kNone && free_slot == kNone) return CorruptShard(s, "a probe found no free slot");
  }

  uint64_t current[VW];
  uint64_t next[VW] = {};
  if (found != kNone) {
    for (size_t j = 0; j < VW; ++j) current[j] = LoadRelaxed(r.slots + found * kSW + 1 + KW + j);
  }
  const Action action = decide(found != kNone ? current : nullptr, next);
  if (lock.forked()) [[unlikely]] {
    // `decide` forked and this is the child: the lock is its parent's, which goes on with the
    // write; a second writer of the shard would tear it.
    return absl::FailedPreconditionError(
        absl::StrCat("shared map \"", name_, "\": ", what,
                     ": the decision forked; the child does not write (its parent does)"));
  }
  if (action == Action::kKeep) return absl::OkStatus();

  if (action == Action::kErase) {
    if (found == kNone) return absl::OkStatus();
    uint64_t* slot = r.slots + found * kSW;
    const bool next_empty = LoadRelaxed(r.slots + ((found + 1) & r.mask) * kSW) == kEmpty;
    BeginSlotOp<kSW>(sh, r, found);
    Store(slot, next_empty ? kEmpty : kTombstone);
    Store(&r.header->count, LoadRelaxed(&r.header->count) - 1);
    if (!next_empty) Store(&r.header->tombstones, LoadRelaxed(&r.header->tombstones) + 1);
    EndSlotOp(sh);
    return absl::OkStatus();
  }

  if (found != kNone) {  // replace the value
    uint64_t* slot = r.slots + found * kSW;
    if constexpr (VW == 1) {
      // One aligned word: the store itself is atomic, for a kill (done or not) and for readers
      // (the key stays, so a reader sees the old value or the new one), and the counts do not
      // change. No intent, no odd sequence: a counter update is a lock, a probe and a store.
      Store(slot + 1 + KW, next[0]);
      CrashPoint(Crash::kSlotWritten);
      return absl::OkStatus();
    }
    BeginSlotOp<kSW>(sh, r, found);
    for (size_t j = 0; j < VW; ++j) {
      if constexpr (VW > 1) {
        if (j == VW / 2) CrashPoint(Crash::kSlotHalf);
      }
      Store(slot + 1 + KW + j, next[j]);
    }
    EndSlotOp(sh);
    return absl::OkStatus();
  }

  // A new key: into the first tombstone of its probe, or the empty slot if the region has room
  // for one more entry; otherwise rebuild the region (bigger, or just without tombstones) first.
  bool into_tombstone = word != 0 && LoadRelaxed(r.slots + free_slot * kSW) == kTombstone;
  if (word == 0 ||
      (!into_tombstone && LoadRelaxed(&r.header->count) + LoadRelaxed(&r.header->tombstones) + 1 >
                              MaxLoad(r.log2cap))) {
    const uint64_t live = word == 0 ? 0 : LoadRelaxed(&r.header->count);
    if (absl::Status st = Rebuild(s, live + 1); !st.ok()) return st;
    word = LoadRelaxed(&sh->region);
    if (!View(word, &r)) return CorruptShard(s, "the rebuilt region word is out of bounds");
    free_slot = ctrl & r.mask;
    for (uint64_t n = 0; LoadRelaxed(r.slots + free_slot * kSW) != kEmpty; ++n) {
      if (n > r.mask) return CorruptShard(s, "the rebuilt region has no empty slot");
      free_slot = (free_slot + 1) & r.mask;
    }
    into_tombstone = false;
  }
  uint64_t* slot = r.slots + free_slot * kSW;
  BeginSlotOp<kSW>(sh, r, free_slot);
  for (size_t j = 0; j < KW; ++j) Store(slot + 1 + j, key[j]);
  for (size_t j = 0; j < VW; ++j) Store(slot + 1 + KW + j, next[j]);
  Store(slot, ctrl);
  Store(&r.header->count, LoadRelaxed(&r.header->count) + 1);
  if (into_tombstone) Store(&r.header->tombstones, LoadRelaxed(&r.header->tombstones) - 1);
  EndSlotOp(sh);
  return absl::OkStatus();
}

}  // namespace etsmgr::shared_internal

#endif  // ETSMGR_TABLE_SHARED_INTERNAL_MAP_CORE_H_
