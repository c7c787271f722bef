// The project's spin locks, for critical sections of a few instructions where a futex wait would
// cost more than the section (both are plain atomics: ThreadSanitizer sees every acquire and
// release; clang's -Wthread-safety sees the capability annotations).
//
//   SpinLock mu;                       // one byte: link/monitor state of a process
//   int n ABSL_GUARDED_BY(mu);
//   { ExclusiveLock lock(mu); ++n; }   // etsmgr/base/mutex.h
//
//   RwSpinLock shard;                  // one word: a table shard, readers share it
//   { SharedLock lock(shard); ... }
//
// Neither is reentrant, neither sleeps in the kernel: waiting spins with CpuRelax() and, for
// RwSpinLock, yields the thread after a while (its holder may be descheduled).
#ifndef ETSMGR_BASE_SPIN_LOCK_H_
#define ETSMGR_BASE_SPIN_LOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"

namespace etsmgr {

// The CPU's spin-wait hint (`pause` on x86): one per iteration of every busy-wait loop.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// One round of a wait whose other side may be descheduled (a lock's holder, a reader to leave):
// CpuRelax for the first kSpinRounds rounds, then yield the thread. Counts up to the limit only
// (no overflow however long the wait). Start each wait with spins = 0.
inline constexpr int kSpinRounds = 64;
inline void SpinThenYield(int& spins) {
  if (spins < kSpinRounds) {
    ++spins;
    CpuRelax();
  } else {
    std::this_thread::yield();
  }
}

// The monotonic clock in nanoseconds, for waits that judge their own length.
inline int64_t MonotonicNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A test-and-test-and-set lock: one byte instead of std::mutex's forty, which matters at a million
// processes. For rarely contended state.
class ABSL_LOCKABLE SpinLock {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) CpuRelax();
    }
  }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() ABSL_UNLOCK_FUNCTION() { locked_.store(false, std::memory_order_release); }
  // Tells the analysis the caller holds it where it cannot follow (locks taken in a dynamic
  // order); checks nothing at run time.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  std::atomic<bool> locked_{false};
};

// A one-word reader-writer lock. Uncontended costs: one CAS to lock and a load and a plain store to
// unlock for writers; a CAS and a fetch_sub for readers. Writers have priority: a waiting writer
// stops new readers from entering, so a stream of readers cannot starve it. Nor can a writer that
// releases and retakes the lock at once (a select_delete loop on a one-shard ordered table)
// starve another writer: the lock is free for a few nanoseconds between its holds, and a waiter
// that yielded its CPU never sees it free. A waiter that has waited kStarvingAfterNs (0.5 ms) marks
// the lock "starving"; from then on the word, once released, is reserved for a waiter that has
// waited that long (the release keeps the mark; a new writer, a try_lock or a reader waits).
class ABSL_LOCKABLE RwSpinLock {
 public:
  __attribute__((always_inline)) void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    uint32_t expected = 0;
    if (!state_.compare_exchange_weak(expected, kWriter, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      LockSlow();
    }
  }
  // While a writer holds the lock nobody else may change the word (readers and writers only
  // CAS from states without kWriter), except a waiting writer's kWriterWaiting and kStarving
  // bits: the release clears the first (its waiter sets it again) and keeps the second.
  // The load reads a line this thread owns; a starving mark set between it and the store is lost
  // and set again by its waiter at its next look (the lock is held again by then, or it is free).
  __attribute__((always_inline)) void unlock() ABSL_UNLOCK_FUNCTION() {
    state_.store(state_.load(std::memory_order_relaxed) & kStarving, std::memory_order_release);
  }
  // One attempt, no waiting.
  __attribute__((always_inline)) bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, kWriter, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  __attribute__((always_inline)) bool try_lock_shared() ABSL_SHARED_TRYLOCK_FUNCTION(true) {
    uint32_t s = state_.load(std::memory_order_relaxed);
    return (s & kKeepsReadersOut) == 0 &&
           state_.compare_exchange_strong(s, s + kReader, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  __attribute__((always_inline)) void lock_shared() ABSL_SHARED_LOCK_FUNCTION() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    if ((s & kKeepsReadersOut) != 0 ||
        !state_.compare_exchange_weak(s, s + kReader, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      LockSharedSlow();
    }
  }
  __attribute__((always_inline)) void unlock_shared() ABSL_UNLOCK_FUNCTION() {
    state_.fetch_sub(kReader, std::memory_order_release);
  }
  // Tell the analysis the caller holds it (a callback run under the lock); check nothing.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
  void AssertReaderHeld() const ABSL_ASSERT_SHARED_LOCK() {}

 private:
  static constexpr uint32_t kWriter = 1;
  static constexpr uint32_t kWriterWaiting = 2;
  static constexpr uint32_t kStarving = 4;  // Free only for a waiter that has waited long.
  static constexpr uint32_t kReader = 8;    // Readers are counted from this bit up.
  static constexpr uint32_t kKeepsReadersOut = kWriter | kWriterWaiting | kStarving;
  // How long a writer waits before it marks the lock starving. A count of rounds would not do:
  // two writers that both want the lock all the time (a select_delete loop and an inserter) then
  // hand it over on every acquisition, each waiting the other's whole hold plus its own rounds;
  // by the clock, the one holding it keeps it for streaks of about this long.
  static constexpr int64_t kStarvingAfterNs = 500'000;

  // Taking the lock clears both marks: another starving waiter sets its mark again.
  __attribute__((noinline)) void LockSlow() {
    int spins = 0;
    uint32_t relaxes = 0;
    int64_t waiting_since = 0;  // Read once the spins are over: a short wait reads no clock.
    bool starving = false;
    while (true) {
      if (spins >= kSpinRounds && !starving) {
        const int64_t now = MonotonicNowNs();
        if (waiting_since == 0) waiting_since = now;
        starving = now - waiting_since >= kStarvingAfterNs;
      }
      const uint32_t ignored = starving ? kWriterWaiting | kStarving : kWriterWaiting;
      uint32_t s = state_.load(std::memory_order_relaxed);
      if ((s & ~ignored) == 0) {
        if (state_.compare_exchange_weak(s, kWriter, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
          return;
        }
        continue;
      }
      const uint32_t marks = starving ? kWriterWaiting | kStarving : kWriterWaiting;
      if ((s & marks) != marks) state_.fetch_or(marks, std::memory_order_relaxed);
      // A starving waiter mostly spins: the lock it reserved stays idle while it is off its CPU.
      if (starving && (++relaxes & 127) != 0) {
        CpuRelax();
      } else {
        SpinThenYield(spins);
      }
    }
  }

  __attribute__((noinline)) void LockSharedSlow() {
    int spins = 0;
    while (true) {
      uint32_t s = state_.load(std::memory_order_relaxed);
      if ((s & kKeepsReadersOut) == 0 &&
          state_.compare_exchange_weak(s, s + kReader, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return;
      }
      SpinThenYield(spins);
    }
  }

  std::atomic<uint32_t> state_{0};
};

}  // namespace etsmgr

#endif  // ETSMGR_BASE_SPIN_LOCK_H_
