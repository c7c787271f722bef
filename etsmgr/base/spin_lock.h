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

// A one-word reader-writer lock. Uncontended costs: one CAS to lock and a plain store to unlock
// for writers; a CAS and a fetch_sub for readers. Writers have priority: a waiting writer stops
// new readers from entering, so a stream of readers cannot starve it.
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
  // CAS from states without kWriter), except a waiting writer's kWriterWaiting bit, which it
  // sets again after this store clears it.
  __attribute__((always_inline)) void unlock() ABSL_UNLOCK_FUNCTION() {
    state_.store(0, std::memory_order_release);
  }
  // One attempt, no waiting.
  __attribute__((always_inline)) bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, kWriter, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  __attribute__((always_inline)) bool try_lock_shared() ABSL_SHARED_TRYLOCK_FUNCTION(true) {
    uint32_t s = state_.load(std::memory_order_relaxed);
    return (s & (kWriter | kWriterWaiting)) == 0 &&
           state_.compare_exchange_strong(s, s + kReader, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  __attribute__((always_inline)) void lock_shared() ABSL_SHARED_LOCK_FUNCTION() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    if ((s & (kWriter | kWriterWaiting)) != 0 ||
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
  static constexpr uint32_t kReader = 4;

  static void Backoff(int& spins) {
    if (++spins < 64) {
      CpuRelax();
    } else {
      std::this_thread::yield();  // The holder may be descheduled: give it the CPU.
    }
  }

  __attribute__((noinline)) void LockSlow() {
    int spins = 0;
    while (true) {
      uint32_t s = state_.load(std::memory_order_relaxed);
      if ((s & ~kWriterWaiting) == 0) {
        if (state_.compare_exchange_weak(s, kWriter, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
          return;
        }
        continue;
      }
      if ((s & kWriterWaiting) == 0) state_.fetch_or(kWriterWaiting, std::memory_order_relaxed);
      Backoff(spins);
    }
  }

  __attribute__((noinline)) void LockSharedSlow() {
    int spins = 0;
    while (true) {
      uint32_t s = state_.load(std::memory_order_relaxed);
      if ((s & (kWriter | kWriterWaiting)) == 0 &&
          state_.compare_exchange_weak(s, s + kReader, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return;
      }
      Backoff(spins);
    }
  }

  std::atomic<uint32_t> state_{0};
};

}  // namespace etsmgr

#endif  // ETSMGR_BASE_SPIN_LOCK_H_
