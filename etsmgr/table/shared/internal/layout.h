// The bytes of a shared-map segment (internal): header, shard headers, regions, slots; the
// atomic word access every process uses on them; the stable key hash.
//
// Every field is a 64-bit word at a fixed offset, read and written with
// __atomic builtins: other processes read the words concurrently (seqlock readers) or after the
// writer was killed (repair), so program order of the stores is what makes the structure
// crash-consistent, and the compiler must not reorder or tear them. Release stores and acquire
// loads are plain moves on x86-64.
//
//   offset 0            Header (one page): immutable fields + checksum, then the segment lock,
//                       the allocator (file size, bump end, free lists), the segment undo log,
//                       the clear epoch and the repair counters.
//   kShardsOffset       shard_count ShardHeaders, `shard_stride` bytes each: lock, seqlock
//                       counter, the published region word, the shard's intent record.
//   data_offset         Regions, back to back up to alloc_end: a 64-byte RegionHeader, then
//                       2^log2cap slots of slot_words words: [ctrl][key words][value words].
#ifndef ETSMGR_TABLE_SHARED_INTERNAL_LAYOUT_H_
#define ETSMGR_TABLE_SHARED_INTERNAL_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace etsmgr::shared_internal {

// --- Word access. `p` must be 8-byte aligned (every field and slot word is).
inline uint64_t Load(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline uint64_t LoadRelaxed(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
inline void Store(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
inline void StoreRelaxed(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

// --- Constants of the format.
inline constexpr uint64_t kMagic = 0x3156534752474d45ULL;  // "EMGRGSV1" little-endian
// 3: a shard's lock is a holder-token word (below), not a robust pthread mutex (version 2, a
// holder-slot table between the header and the shards, never left this project's history).
// 4: the segment lock is a holder-token word too (a robust mutex names its holder by thread id:
// two programs in different PID namespaces could both be thread 1, and a mutex saved locked in a
// file names a thread that no longer exists after a reboot, so it never came free).
inline constexpr uint32_t kFormatVersion = 4;
inline constexpr uint64_t kPageBytes = 4096;
inline constexpr uint64_t kHeaderBytes = kPageBytes;
inline constexpr uint64_t kShardsOffset = kHeaderBytes;
inline constexpr uint32_t kMaxShards = 1024;
inline constexpr uint32_t kTypeNameBytes = 64;
// A key or value: at most this many bytes (SharedString<N>: N <= kMaxStorableBytes - 4).
inline constexpr size_t kMaxStorableBytes = 4096;
inline constexpr uint32_t kMinLog2Capacity = 4;   // 16 slots
inline constexpr uint32_t kMaxLog2Capacity = 40;  // bounded further by max_bytes
inline constexpr uint32_t kFreeLists = kMaxLog2Capacity + 1;
inline constexpr uint64_t kMinMaxBytes = 1ULL << 20;
inline constexpr uint64_t kMaxMaxBytes = 1ULL << 40;  // 1 TiB of address space per open
inline constexpr uint64_t kGrowQuantum = 1ULL << 20;  // a new file has whole MiBs
// The file grows by whole 2 MiB huge pages, and each open maps it at a 2 MiB-aligned address, so
// a tmpfs that gives huge pages (mounted huge=always|within_size, or huge=advise: the mappings
// ask with MADV_HUGEPAGE) maps the segment with them: a random access then misses no 4 KiB TLB
// entry (twice the speed of a 4 KiB-page segment under a hypervisor's nested paging).
inline constexpr uint64_t kHugePageBytes = 2ULL << 20;

// Slot control word: empty, tombstone, or the key's hash (never 0 or 1, see CtrlOf).
inline constexpr uint64_t kEmpty = 0;
inline constexpr uint64_t kTombstone = 1;

// Intent record states (ShardHeader::intent_state).
inline constexpr uint64_t kIntentIdle = 0;
inline constexpr uint64_t kIntentSlot = 0x534c4f54;    // "SLOT": one slot + counts, image saved
inline constexpr uint64_t kIntentResize = 0x5253495a;  // "RSIZ": region swap in progress
// Segment undo log states.
inline constexpr uint64_t kLogIdle = 0;
inline constexpr uint64_t kLogActive = 0x4c4f4721;  // "LOG!"
inline constexpr uint32_t kLogEntries = 8;

inline constexpr uint64_t kRegionMagic = 0x5245474e00000000ULL;  // "REGN" << 32 | log2cap
inline constexpr uint64_t kRegionHeaderBytes = 64;

// --- The stable hash (same in every process and build: keys are hashed by their bytes).
inline uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
// Hash of `n` words (a key zero-padded to whole words).
inline uint64_t HashWords(const uint64_t* w, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL * (n + 1);
  for (size_t i = 0; i < n; ++i) h = Mix(h ^ w[i]) + 0x9e3779b97f4a7c15ULL * i;
  return Mix(h);
}
template <size_t kWords>
inline uint64_t HashWordsFixed(const uint64_t* w) {
  if constexpr (kWords == 1) {
    return Mix(Mix(0x9e3779b97f4a7c15ULL * 2 ^ w[0]));
  } else {
    return HashWords(w, kWords);
  }
}
// Bytes hash (checksums, type tags).
inline uint64_t HashBytes(const void* data, size_t n) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x243f6a8885a308d3ULL ^ n;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = Mix(h ^ w);
    p += 8;
    n -= 8;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p, n);
  return Mix(h ^ tail ^ (uint64_t{n} << 56));
}
inline uint64_t CtrlOf(uint64_t hash) { return hash < 2 ? hash + 2 : hash; }

// --- The header page.
struct ImmutableHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t kind;  // SharedKind
  uint32_t shard_count;
  uint32_t shard_stride;
  uint32_t key_size;
  uint32_t key_align;
  uint32_t value_size;
  uint32_t value_align;
  uint32_t key_words;
  uint32_t value_words;
  uint64_t key_tag;    // HashBytes of the key type's name, size and alignment
  uint64_t value_tag;  // the same for the value type
  char key_name[kTypeNameBytes];
  char value_name[kTypeNameBytes];
  uint64_t data_offset;
  uint64_t max_bytes;
  uint64_t created_unix_ns;
  uint64_t checksum;  // HashBytes of every byte above
};
static_assert(sizeof(ImmutableHeader) == 224);

// The segment's undo log: while `state` is kLogActive, the words at `offset[i]` (from the
// segment's base) held `old[i]` before the transaction; repair writes them back in reverse order.
struct SegmentLog {
  uint64_t state;
  uint64_t count;
  uint64_t offset[kLogEntries];
  uint64_t old[kLogEntries];
};

struct alignas(64) MutableHeader {
  uint64_t lock;  // the segment lock (allocator, file growth, the log): as a shard's lock word
  uint64_t lock_spare[4];  // (format 3's robust mutex took 40 bytes: the offsets below stay)
  uint64_t file_size;      // bytes every process may map (the file is at least this long)
  uint64_t alloc_end;      // regions end here
  uint64_t clear_epoch;    // Clear() commits by raising it (see ShardHeader::cleared_epoch)
  alignas(64) uint64_t free_head[kFreeLists];  // per log2 capacity: first free region, 0 = none
  alignas(64) SegmentLog log;
  // Counters (atomic adds; statistics only, never used for decisions).
  alignas(64) uint64_t opens;
  uint64_t slot_rollbacks;
  uint64_t resize_rollbacks;
  uint64_t resize_completions;
  uint64_t clears_completed;
  uint64_t log_rollbacks;
  uint64_t regions_reclaimed;
  // The user's mark (SharedMap::SetInitialised): kInitPendingMark while a filler that said so
  // has not finished; 0 otherwise (a new segment, and every segment of a build before the mark:
  // these bytes were zero). One aligned store: a kill leaves it before or after.
  alignas(64) uint64_t init_pending;
};
inline constexpr uint64_t kInitPendingMark = 0x50454e44494e4954;  // "TINIDNEP"

inline constexpr uint64_t kMutableOffset = 1024;
static_assert(sizeof(ImmutableHeader) <= kMutableOffset);
static_assert(kMutableOffset + sizeof(MutableHeader) <= kHeaderBytes);

// --- Shard locks (and the segment lock, the same kind of word). A shard's lock word holds its
// holder's token, taken with one compare-and-swap and released with one store (a robust pthread
// mutex cost a writer half its speed: its robust list bookkeeping and locked unlock serialise with
// the slot's cache miss). Each open handle (a MapCore) draws a random token and takes an
// open-file-description lock (F_OFD_SETLK) on the token's byte of the segment file, kHolderLockBase
// + its low 40 bits; the kernel releases it when the process dies, however it dies. A holder is
// dead when nobody holds its token's byte: its lock word may then be taken over (compare-and-swap
// from its token) and the shard repaired, as a robust mutex's EOWNERDEAD did. Two live handles
// never share a token (the second's file lock fails and it draws again), and a handle never takes a
// token still in a lock word (a dead holder's, which would then look alive). File locks are the
// kernel's and cross PID namespaces; no pid is compared. Another program's lock on the whole file
// (l_len = 0, from a backup tool, say) covers every token's byte: opens then fail
// (ResourceExhausted) and dead holders look alive while it lasts.
inline constexpr uint64_t kTokenTag = uint64_t{1} << 40;  // every token: tag | 40 bits
inline constexpr uint64_t kTokenBits = kTokenTag - 1;
inline constexpr uint64_t kHolderLockBase = uint64_t{1} << 62;  // file offsets, far past the data
// A lock word left by a repair that failed: taken over and repaired again by the next locker.
inline constexpr uint64_t kLockOrphaned = ~uint64_t{0};
inline constexpr uint64_t TokenByte(uint64_t token) {
  return kHolderLockBase + (token & kTokenBits);
}
inline constexpr bool WellFormedLockWord(uint64_t word) {
  return word == 0 || word == kLockOrphaned || (word >> 40) == 1;
}

// --- A shard: its lock and seqlock counter share the first cache line with the region word
// (what a reader loads); the intent record follows; the slot image closes it.
struct alignas(64) ShardHeader {
  uint64_t lock;           // 0: free; a holder token (see "Shard locks"); or kLockOrphaned
  uint64_t lock_spare[4];  // (format 1's robust mutex took 40 bytes: the offsets below stay)
  uint64_t seq;            // odd while the shard's visible state is being changed
  uint64_t region;         // published region word: offset | log2cap, 0 = no region (empty)
  uint64_t cleared_epoch;  // the last clear epoch applied to this shard
  // The intent record: written (and fenced by the release store of intent_state) before the
  // shard is modified, cleared after.
  uint64_t intent_state;
  uint64_t intent_slot;   // kIntentSlot: the slot's index in the current region
  uint64_t intent_count;  // kIntentSlot: the region's count and tombstones before
  uint64_t intent_tombstones;
  uint64_t intent_old_region;  // kIntentResize: region word before
  uint64_t intent_new_region;  // kIntentResize: region word allocated (0 until allocated)
  uint64_t reserved[2];
  // uint64_t intent_image[slot_words] follows (the slot before; only its ctrl when not full).
};
static_assert(sizeof(ShardHeader) == 128);
inline constexpr uint64_t kShardFixedBytes = sizeof(ShardHeader);

struct RegionHeader {
  uint64_t magic;  // kRegionMagic | log2cap
  uint64_t owner;  // 0: free; s + 1: shard s
  uint64_t next;   // free list link (offset, 0 = end)
  uint64_t count;  // full slots
  uint64_t tombstones;
  uint64_t reserved[3];
};
static_assert(sizeof(RegionHeader) == kRegionHeaderBytes);

inline constexpr uint64_t RoundUp(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

inline uint64_t ShardStride(uint32_t slot_words) {
  return RoundUp(kShardFixedBytes + 8ull * slot_words, 64);
}
inline uint64_t RegionBytes(uint32_t log2cap, uint32_t slot_words) {
  return RoundUp(kRegionHeaderBytes + (uint64_t{1} << log2cap) * 8ull * slot_words, 64);
}
inline uint64_t RegionWord(uint64_t offset, uint32_t log2cap) { return offset | log2cap; }
inline uint64_t RegionOffset(uint64_t word) { return word & ~uint64_t{63}; }
inline uint32_t RegionLog2(uint64_t word) { return static_cast<uint32_t>(word & 63); }
// Most entries a region of 2^log2cap slots holds (full + tombstones) before it is rebuilt.
inline uint64_t MaxLoad(uint32_t log2cap) { return (uint64_t{3} << log2cap) / 4; }

}  // namespace etsmgr::shared_internal

#endif  // ETSMGR_TABLE_SHARED_INTERNAL_LAYOUT_H_
