// Reads that write no shared word: a reader bias in front of a group of RwSpinLocks (the idea of
// BRAVO, Dice and Kogan, "BRAVO: Biased Locking for Reader-Writer Locks", USENIX ATC 2019).
//
// A shared lock costs its reader a write to the lock's word; two threads reading one table then
// pass that cache line between their CPUs on every read (on this project's 2-vCPU machine a 1M-key
// lookup ran 31M/s on one thread and 26M/s on two: bench/results/design-measurements.md). With
// the bias on, a reader instead announces itself in a slot of a process-wide table chosen by its
// thread and the bias (a line no other thread writes), re-checks the bias, reads, and clears its
// slot. A writer that finds the bias on after taking its lock turns it off and waits until no
// slot names the bias; the bias then stays off for a while (readers take the shared locks), and a
// reader turns it on again only when it can hold every lock of the group shared for a moment (so
// no writer is half-way), the table is alive, and the inhibition has passed. One bias covers many
// locks: a writer holding another lock of the group that arrives while the bias is being revoked
// waits for that revocation to finish (its readers may be reading its shard), so the bias has
// three states, on, revoking and off, and only "off" lets a writer go ahead.
//
//   ReadBias bias;                           // one per table
//   BiasedRwLock shard_lock;                 // per shard; shard_lock.set_bias(&bias) at creation
//   ReadBias::Reader r;
//   if (bias.TryBeginRead(&r)) { ...read any shard without its lock...; bias.EndRead(r); }
//   (a reader that may throw between the two ends its read in a destructor: a slot left set
//   would stop every later writer of the group)
//   else { SharedLock lock(shard_lock); ... ; bias.MaybeEnable(n, lock_at, alive); }
//
// Every exclusive acquisition of a BiasedRwLock (lock, try_lock) revokes the bias first, so code
// that writes under the shard lock needs no change. Ordering: a reader's slot CAS and its second
// look at the bias, and a writer's clearing of the bias and its scan, are sequentially consistent
// (a Dekker pair): either the writer sees the reader's slot and waits for it, or the reader sees
// the bias off and takes the lock. A reader's release of its slot orders its reads before the
// writer's writes; the enabler's release of the bias (made holding every lock) orders every
// earlier write before a biased read.
#ifndef ETSMGR_BASE_READ_BIAS_H_
#define ETSMGR_BASE_READ_BIAS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "etsmgr/base/spin_lock.h"

namespace etsmgr {

class ReadBias {
 public:
  // The slot a biased reader holds; null when not admitted.
  struct Reader {
    std::atomic<const ReadBias*>* slot = nullptr;
  };

  ReadBias() = default;
  ReadBias(const ReadBias&) = delete;
  ReadBias& operator=(const ReadBias&) = delete;

  bool enabled() const { return state_.load(std::memory_order_acquire) == kOn; }

  // True when the caller may read without the locks until EndRead(*reader). False (nothing held)
  // when the bias is off or the thread's slot is taken (the same thread reading this group while
  // already admitted, or another thread's reader hashed to it).
  __attribute__((always_inline)) bool TryBeginRead(Reader* reader) const {
    if (state_.load(std::memory_order_relaxed) != kOn) return false;
    std::atomic<const ReadBias*>* slot = SlotFor(this);
    const ReadBias* expected = nullptr;
    if (!slot->compare_exchange_strong(expected, this, std::memory_order_seq_cst,
                                       std::memory_order_relaxed)) {
      return false;
    }
    if (state_.load(std::memory_order_seq_cst) == kOn) [[likely]] {
      reader->slot = slot;
      return true;
    }
    slot->store(nullptr, std::memory_order_release);  // A writer revoked it meanwhile.
    return false;
  }
  __attribute__((always_inline)) void EndRead(const Reader& reader) const {
    reader.slot->store(nullptr, std::memory_order_release);
  }

  // Called by a writer holding one of the group's locks exclusively: the bias is off when this
  // returns and no admitted reader is still reading.
  __attribute__((always_inline)) void BeforeWrite() const {
    if (state_.load(std::memory_order_acquire) != kOff) [[unlikely]]
      Revoke();
  }

  // Called by a reader after a read under a shared lock (no lock held now). Now and then (every
  // kEnableEvery calls on this thread) looks at the clock and, once the inhibition has passed,
  // tries TryEnable. `lock_at(i)` is the group's i-th lock (i < n); `alive()` is checked holding
  // them all.
  template <typename LockAt, typename Alive>
  __attribute__((always_inline)) void MaybeEnable(size_t n, LockAt&& lock_at, Alive&& alive) const {
    if (state_.load(std::memory_order_relaxed) == kOn) return;
    if (countdown_-- != 0) [[likely]]
      return;
    MaybeEnableNow(n, lock_at, alive);
  }

  // Turns the bias on if every lock of the group can be taken shared at once (none waits) and
  // `alive()` holds under them. True when it is on.
  // No revocation can be under way while this holds every lock (a revoker holds one exclusively),
  // so the state is on or off here.
  template <typename LockAt, typename Alive>
  bool TryEnable(size_t n, LockAt&& lock_at, Alive&& alive) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (enabled()) return true;
    size_t held = 0;
    while (held < n && lock_at(held).try_lock_shared()) ++held;
    const bool all = held == n;
    if (all && alive()) state_.store(kOn, std::memory_order_release);
    while (held > 0) lock_at(--held).unlock_shared();
    return enabled();
  }

  // How long the bias stays off after a revocation: kInhibitFactor times the revocation's own
  // cost, and at least kMinInhibitNs, so that revocations cost writers a small share of their time.
  static constexpr int64_t kInhibitFactor = 16;
  static constexpr int64_t kMinInhibitNs = 200'000;
  // A reader tries to enable about every kEnableEvery of its locked reads (a random count between
  // half and one and a half times that, so that a thread reading several tables in turn does
  // not always try on the same one); a failed try (a writer held a lock) waits kMinInhibitNs.
  static constexpr uint32_t kEnableEvery = 256;
  // The process-wide table of visible readers: 2,048 slots (16 KiB), scanned by each revocation.
  static constexpr size_t kSlots = 2048;

  // Revocations so far in this process (tests check that their writers met biased readers).
  static uint64_t Revocations() { return revocations_.load(std::memory_order_relaxed); }

 private:
  // The calling thread's slot for `bias`: a mix of the thread's (a thread-local's address) and the
  // bias's addresses.
  static std::atomic<const ReadBias*>* SlotFor(const ReadBias* bias) {
    const uint64_t h = Mix(reinterpret_cast<uintptr_t>(&thread_anchor_) * 0x9e3779b97f4a7c15ULL ^
                           reinterpret_cast<uintptr_t>(bias));
    return &visible_readers_[h & (kSlots - 1)];
  }

  template <typename LockAt, typename Alive>
  __attribute__((noinline)) void MaybeEnableNow(size_t n, LockAt& lock_at, Alive& alive) const {
    countdown_ = kEnableEvery / 2 + static_cast<uint32_t>(Mix(++countdown_draws_) % kEnableEvery);
    const int64_t now = MonotonicNowNs();
    if (now < inhibit_until_ns_.load(std::memory_order_relaxed)) return;
    if (!TryEnable(n, lock_at, alive)) {
      inhibit_until_ns_.store(now + kMinInhibitNs, std::memory_order_relaxed);
    }
  }
  static uint64_t Mix(uint64_t x) {  // A 64-bit finalizer (murmur3's).
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
  }

  __attribute__((noinline)) void Revoke() const {
    uint8_t state = state_.load(std::memory_order_acquire);
    while (state == kOn) {  // Claim the revocation (or find another writer's under way).
      if (state_.compare_exchange_weak(state, kRevoking, std::memory_order_seq_cst,
                                       std::memory_order_acquire)) {
        Scan();
        return;
      }
    }
    // Another writer of the group is revoking: its readers may be reading this writer's shard.
    // Its release of "off" follows its scan, which saw every such reader leave.
    int spins = 0;
    while (state_.load(std::memory_order_acquire) != kOff) SpinThenYield(spins);
  }

  // Waits until no slot names this bias, then turns it off.
  void Scan() const {
    const int64_t start = MonotonicNowNs();
    for (std::atomic<const ReadBias*>& slot : visible_readers_) {
      int spins = 0;
      while (slot.load(std::memory_order_seq_cst) == this) SpinThenYield(spins);
    }
    revocations_.fetch_add(1, std::memory_order_relaxed);
    const int64_t now = MonotonicNowNs();
    const int64_t inhibit = (now - start) * kInhibitFactor;
    inhibit_until_ns_.store(now + (inhibit > kMinInhibitNs ? inhibit : kMinInhibitNs),
                            std::memory_order_relaxed);
    state_.store(kOff, std::memory_order_release);
  }

  static constexpr uint8_t kOff = 0;
  static constexpr uint8_t kOn = 1;
  static constexpr uint8_t kRevoking = 2;
  // Off at first: a table only written (or never read twice) never pays for a revocation.
  mutable std::atomic<uint8_t> state_{kOff};
  mutable std::atomic<int64_t> inhibit_until_ns_{0};

  static inline thread_local constinit char thread_anchor_ = 0;
  static inline thread_local constinit uint32_t countdown_ = 0;
  static inline thread_local constinit uint64_t countdown_draws_ = 0;

  alignas(64) static inline std::atomic<const ReadBias*> visible_readers_[kSlots] = {};
  static inline std::atomic<uint64_t> revocations_{0};
};

// An RwSpinLock whose exclusive acquisitions revoke a ReadBias (set once, before the lock is
// shared between threads; none: a plain RwSpinLock).
class ABSL_LOCKABLE BiasedRwLock {
 public:
  void set_bias(const ReadBias* bias) { bias_ = bias; }

  __attribute__((always_inline)) void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    rw_.lock();
    if (bias_ != nullptr) bias_->BeforeWrite();
  }
  __attribute__((always_inline)) bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    if (!rw_.try_lock()) return false;
    if (bias_ != nullptr) bias_->BeforeWrite();
    return true;
  }
  __attribute__((always_inline)) void unlock() ABSL_UNLOCK_FUNCTION() { rw_.unlock(); }
  __attribute__((always_inline)) bool try_lock_shared() ABSL_SHARED_TRYLOCK_FUNCTION(true) {
    return rw_.try_lock_shared();
  }
  __attribute__((always_inline)) void lock_shared() ABSL_SHARED_LOCK_FUNCTION() {
    rw_.lock_shared();
  }
  __attribute__((always_inline)) void unlock_shared() ABSL_UNLOCK_FUNCTION() {
    rw_.unlock_shared();
  }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
  void AssertReaderHeld() const ABSL_ASSERT_SHARED_LOCK() {}

 private:
  RwSpinLock rw_;
  const ReadBias* bias_ = nullptr;
};

}  // namespace etsmgr

#endif  // ETSMGR_BASE_READ_BIAS_H_
