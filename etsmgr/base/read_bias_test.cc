#include "etsmgr/base/read_bias.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "etsmgr/base/mutex.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

// A group of locks sharing one bias, as a table's shards do.
struct Group {
  Group() {
    for (BiasedRwLock& l : locks) l.set_bias(&bias);
  }
  bool Enable(bool alive = true) {
    return bias.TryEnable(
        4, [this](size_t i) -> BiasedRwLock& { return locks[i]; }, [alive] { return alive; });
  }
  ReadBias bias;
  BiasedRwLock locks[4];
};

// Waits (spinning, with a deadline) until `done()`.
template <typename Done>
bool SpinUntil(Done done, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// Whether a reader could take `l` now (a writer would revoke the bias: this does not).
bool FreeForReaders(BiasedRwLock& l) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (!l.try_lock_shared()) return false;
  l.unlock_shared();
  return true;
}

TEST(ReadBias, OffUntilEnabledAndOnlyWithEveryLockFreeAndTheGroupAlive) {
  Group g;
  ReadBias::Reader r;
  EXPECT_FALSE(g.bias.TryBeginRead(&r));  // Off at first.
  g.locks[2].lock();
  EXPECT_FALSE(g.Enable());  // A writer is half-way: refused.
  g.locks[2].unlock();
  EXPECT_FALSE(g.Enable(/*alive=*/false));
  g.locks[1].lock_shared();  // Readers under the locks do not stop it.
  EXPECT_TRUE(g.Enable());
  g.locks[1].unlock_shared();
  for (BiasedRwLock& l : g.locks) EXPECT_TRUE(FreeForReaders(l));  // The enabler let go.
  ASSERT_TRUE(g.bias.TryBeginRead(&r));
  ReadBias::Reader again;
  EXPECT_FALSE(g.bias.TryBeginRead(&again));  // The thread's slot is taken: the locked path.
  g.bias.EndRead(r);
}

TEST(ReadBias, AWriterRevokesTheBiasAndWaitsForAdmittedReaders) {
  Group g;
  ASSERT_TRUE(g.Enable());
  ReadBias::Reader r;
  ASSERT_TRUE(g.bias.TryBeginRead(&r));
  const uint64_t revocations = ReadBias::Revocations();
  std::atomic<bool> writing{false};
  std::thread writer([&] {
    ExclusiveLock lock(g.locks[3]);
    writing.store(true);
  });
  // The writer has turned the bias off and now waits for this admitted reader: it cannot be
  // writing until EndRead, however long we look.
  ASSERT_TRUE(SpinUntil([&] { return !g.bias.enabled(); }));
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_FALSE(writing.load()) << "a writer went ahead of an admitted reader";
    std::this_thread::yield();
  }
  g.bias.EndRead(r);
  ASSERT_TRUE(SpinUntil([&] { return writing.load(); }));
  writer.join();
  EXPECT_EQ(ReadBias::Revocations(), revocations + 1);
  EXPECT_FALSE(g.bias.TryBeginRead(&r));  // Off after a revocation.
  g.locks[3].lock();                      // A writer that finds it off scans nothing.
  g.locks[3].unlock();
  EXPECT_EQ(ReadBias::Revocations(), revocations + 1);
}

// One bias covers many locks: a second writer, on another lock, that arrives while the first is
// still revoking must wait too (the admitted reader may be reading its lock's data).
TEST(ReadBias, AWriterOnAnotherLockWaitsForTheRevocationUnderWay) {
  Group g;
  ASSERT_TRUE(g.Enable());
  ReadBias::Reader r;
  ASSERT_TRUE(g.bias.TryBeginRead(&r));
  std::atomic<int> written{0};
  std::thread first([&] {
    ExclusiveLock lock(g.locks[0]);
    written.fetch_add(1);
  });
  ASSERT_TRUE(SpinUntil([&] { return !g.bias.enabled(); }));  // The first is revoking.
  std::atomic<bool> second_started{false};
  std::thread second([&] {
    second_started.store(true);
    ExclusiveLock lock(g.locks[1]);
    written.fetch_add(1);
  });
  ASSERT_TRUE(SpinUntil([&] { return second_started.load(); }));
  for (int i = 0; i < 10'000; ++i) {
    ASSERT_EQ(written.load(), 0) << "a writer went ahead of an admitted reader";
    std::this_thread::yield();
  }
  g.bias.EndRead(r);
  ASSERT_TRUE(SpinUntil([&] { return written.load() == 2; }));
  first.join();
  second.join();
}

// Readers read multi-word records that two writers (each on its own locks) rewrite; a biased
// read must never see a torn record. Plain (non-atomic) words: TSan reports a race if the bias
// ever lets a reader overlap a writer.
TEST(ReadBias, BiasedReadsNeverOverlapWrites) {
  Group g;
  struct Record {
    uint64_t a = 0, b = 0, c = 0;
  };
  Record records[4];
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> biased_reads{0}, torn{0};
  const uint64_t revocations = ReadBias::Revocations();
  std::thread reader([&] {
    uint64_t biased = 0;
    for (uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
      const size_t i = n % 4;
      ReadBias::Reader r;
      Record copy;
      if (g.bias.TryBeginRead(&r)) {
        copy = records[i];
        g.bias.EndRead(r);
        ++biased;
      } else {
        {
          SharedLock lock(g.locks[i]);
          copy = records[i];
        }
        g.Enable();  // Every time: the test wants many revocations.
      }
      if (copy.a != copy.b || copy.b != copy.c) torn.fetch_add(1);
    }
    biased_reads.store(biased);
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  auto write = [&](size_t first) {  // locks `first` and `first + 2`
    for (uint64_t v = 1; v <= 20'000 || ReadBias::Revocations() < revocations + 100; ++v) {
      const size_t i = first + 2 * (v % 2);
      {
        ExclusiveLock lock(g.locks[i]);
        records[i].a = v;
        records[i].b = v;
        records[i].c = v;
      }
      if (v % 16 == 0) {
        std::this_thread::yield();  // A moment without a writer, for the reader to enable.
        if (std::chrono::steady_clock::now() > deadline) break;
      }
    }
  };
  std::thread other_writer(write, 1);
  write(0);
  other_writer.join();
  stop.store(true);
  reader.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(biased_reads.load(), 0u);
  EXPECT_GE(ReadBias::Revocations(), revocations + 100);  // Writers met the bias on, often.
}

}  // namespace
}  // namespace etsmgr
