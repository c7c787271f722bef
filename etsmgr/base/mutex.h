// Lock types whose rules the compiler checks: clang's -Wthread-safety (the `clang` config of the
// test command builds with it as an error) follows ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED
// through these. libstdc++'s std::mutex and std::lock_guard carry no annotations, so project code
// uses:
//
//   Mutex mu_;                                   // std::mutex underneath (TSan sees it)
//   std::vector<int> items_ ABSL_GUARDED_BY(mu_);
//   void Add(int i) { ExclusiveLock lock(mu_); items_.push_back(i); }
//   void AddLocked(int i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
//
// ExclusiveLock and SharedLock are the scoped guards for every lockable type of the project
// (Mutex, AdaptiveMutex, SpinLock, RwSpinLock); a condition variable waits on a Mutex through
// std::condition_variable_any (`cv.wait(mu_, pred)` with mu_ held).
#ifndef ETSMGR_BASE_MUTEX_H_
#define ETSMGR_BASE_MUTEX_H_

#include <mutex>

#include "absl/base/thread_annotations.h"
#include "etsmgr/base/spin_lock.h"

namespace etsmgr {

class ABSL_LOCKABLE Mutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // For code that knows the lock is held where the analysis cannot follow (callbacks).
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  std::mutex mu_;
};

// A std::mutex that spins briefly before it sleeps, for short critical sections contended across
// threads (the manager's directory, taken by clients on every scheduler): a waiter that sleeps
// costs a futex wait and a futex wake-up on the holder's unlock -- tens of microseconds across
// vCPUs -- while the section itself takes a microsecond. Up to kSpins try_locks first keep waiters
// off the kernel (kSpins chosen by context switches counted under load:
// bench/results/design-measurements.md). A holder that takes longer still gets its waiters asleep.
class ABSL_LOCKABLE AdaptiveMutex {
 public:
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    for (int i = 0; i < kSpins; ++i) {
      if (mu_.try_lock()) return;
      CpuRelax();
    }
    mu_.lock();
  }
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // For code that knows the lock is held where the analysis cannot follow (a guard object that
  // holds it across member functions); checks nothing at run time.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  static constexpr int kSpins = 1000;
  std::mutex mu_;
};

// Holds `mu` exclusively for its scope.
template <typename M>
class ABSL_SCOPED_LOCKABLE ExclusiveLock {
 public:
  explicit ExclusiveLock(M& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_.lock(); }
  ~ExclusiveLock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;

 private:
  M& mu_;
};

// Holds `mu` shared (lock_shared) for its scope.
template <typename M>
class ABSL_SCOPED_LOCKABLE SharedLock {
 public:
  explicit SharedLock(M& mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_.lock_shared(); }
  ~SharedLock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }
  SharedLock(const SharedLock&) = delete;
  SharedLock& operator=(const SharedLock&) = delete;

 private:
  M& mu_;
};

}  // namespace etsmgr

#endif  // ETSMGR_BASE_MUTEX_H_
