// RwSpinLock: a one-word reader-writer lock for table shards (internal).
//
// Table critical sections are a few hash-map operations, so waiting spins (with `pause`) and then
// yields the thread; nothing blocks in the kernel. Uncontended costs: one CAS to lock, a plain
// store to unlock for writers; a CAS and a fetch_sub for readers. Writers have priority: a
// waiting writer stops new readers from entering, so a stream of readers cannot starve it.
// Built on std::atomic only, so ThreadSanitizer sees every acquire and release.
// Not reentrant: a thread holding it must not lock it again.
#ifndef ETSMGR_TABLE_INTERNAL_RW_SPIN_LOCK_H_
#define ETSMGR_TABLE_INTERNAL_RW_SPIN_LOCK_H_

#include <atomic>
#include <cstdint>
#include <thread>

namespace etsmgr::table_internal {

class RwSpinLock {
 public:
  __attribute__((always_inline)) void lock() {
    uint32_t expected = 0;
    if (!state_.compare_exchange_weak(expected, kWriter, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      LockSlow();
    }
  }
  // While a writer holds the lock nobody else may change the word (readers and writers only
  // CAS from states without kWriter), except a waiting writer's kWriterWaiting bit, which it
  // sets again after this store clears it.
  __attribute__((always_inline)) void unlock() { state_.store(0, std::memory_order_release); }
  // One attempt, no waiting.
  __attribute__((always_inline)) bool try_lock() {
    uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, kWriter, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  __attribute__((always_inline)) bool try_lock_shared() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    return (s & (kWriter | kWriterWaiting)) == 0 &&
           state_.compare_exchange_strong(s, s + kReader, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }

  __attribute__((always_inline)) void lock_shared() {
    uint32_t s = state_.load(std::memory_order_relaxed);
    if ((s & (kWriter | kWriterWaiting)) != 0 ||
        !state_.compare_exchange_weak(s, s + kReader, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      LockSharedSlow();
    }
  }
  __attribute__((always_inline)) void unlock_shared() {
    state_.fetch_sub(kReader, std::memory_order_release);
  }

 private:
  static constexpr uint32_t kWriter = 1;
  static constexpr uint32_t kWriterWaiting = 2;
  static constexpr uint32_t kReader = 4;

  static void Pause(int& spins) {
    if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
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
      Pause(spins);
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
      Pause(spins);
    }
  }

  std::atomic<uint32_t> state_{0};
};

}  // namespace etsmgr::table_internal

#endif  // ETSMGR_TABLE_INTERNAL_RW_SPIN_LOCK_H_
