#include "etsmgr/base/mutex.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

TEST(AdaptiveMutex, ExcludesAcrossThreads) {
  AdaptiveMutex mu;
  long counter = 0;  // Plain: TSan reports a race if the mutex ever fails to exclude.
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20'000; ++i) {
        ExclusiveLock lock(mu);
        ++counter;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(counter, 80'000);
}

// The raw lock calls below are unbalanced on purpose (try_lock results checked, not branched on).
template <typename M>
void TryLockFailsWhileHeld() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  M mu;
  mu.lock();
  bool got = true;
  std::thread([&] { got = mu.try_lock(); }).join();
  EXPECT_FALSE(got);
  mu.unlock();
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

// Each lock type excludes writers from each other (a plain counter: TSan reports a race if not).
template <typename M>
long CountUnder(M& mu) {
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20'000; ++i) {
        ExclusiveLock lock(mu);
        ++counter;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return counter;
}

TEST(Mutex, ExcludesAcrossThreads) {
  Mutex mu;
  EXPECT_EQ(CountUnder(mu), 80'000);
}

TEST(SpinLock, ExcludesAcrossThreads) {
  SpinLock mu;
  EXPECT_EQ(CountUnder(mu), 80'000);
}

TEST(AdaptiveMutex, TryLockFailsWhileHeld) { TryLockFailsWhileHeld<AdaptiveMutex>(); }
TEST(SpinLock, TryLockFailsWhileHeld) { TryLockFailsWhileHeld<SpinLock>(); }
TEST(Mutex, TryLockFailsWhileHeld) { TryLockFailsWhileHeld<Mutex>(); }

void ReadersShareAndWritersExclude() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  RwSpinLock mu;
  mu.lock_shared();
  EXPECT_TRUE(mu.try_lock_shared());
  EXPECT_FALSE(mu.try_lock());
  mu.unlock_shared();
  mu.unlock_shared();
  EXPECT_TRUE(mu.try_lock());
  EXPECT_FALSE(mu.try_lock_shared());
  mu.unlock();
}

TEST(RwSpinLock, WritersExcludeWritersAndReaders) {
  RwSpinLock mu;
  EXPECT_EQ(CountUnder(mu), 80'000);
  // Readers share; a writer waits for them and keeps new readers out.
  ReadersShareAndWritersExclude();
}

TEST(RwSpinLock, ReadersSeeWholeWrites) {
  RwSpinLock mu;
  long a = 0;
  long b = 0;  // Written together under the lock: a reader never sees them differ.
  std::atomic<bool> torn{false};
  std::thread writer([&] {
    for (int i = 0; i < 20'000; ++i) {
      ExclusiveLock lock(mu);
      ++a;
      ++b;
    }
  });
  std::thread reader([&] {
    for (int i = 0; i < 20'000; ++i) {
      SharedLock lock(mu);
      if (a != b) torn = true;
    }
  });
  writer.join();
  reader.join();
  EXPECT_FALSE(torn.load());
}

}  // namespace
}  // namespace etsmgr
