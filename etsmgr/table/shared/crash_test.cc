// Crash consistency of SharedMap under SIGKILL, from forked writer processes:
//  - every crash point of every kind of write, and of the repair of each (a kill in the middle of
//    repairing a kill), one at a time: the re-opened map shows the write done or not done;
//  - long write sequences killed at the n-th passage of each crash point: a prefix of them done;
//  - seeded random kills of one writer, and of two writers at once (crash_harness.h).
//  - holder tokens (the shard lock words' identities) across fork, and a handle whose descriptors
//    were replaced.
// The parent is single-threaded (gtest's main thread, no runtime) and forks each writer.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/crash_harness.h"
#include "etsmgr/table/shared/internal/crash_point.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using shared_internal::Crash;
using IntMap = SharedMap<int64_t, int64_t>;
using List = std::vector<std::pair<int64_t, int64_t>>;

// How many kills the random runs make (fewer under the sanitizers: see BUILD).
int KillsFor(const char* var, int fallback) {
  const char* v = std::getenv(var);
  return v != nullptr ? std::atoi(v) : fallback;
}

// The child's crash hook: SIGKILL at the n-th crash point (of one kind, or of any kind).
int g_target = 0;
int g_seen = 0;
int g_kind = -1;
void KillAtTarget(Crash point) {
  if (g_kind >= 0 && static_cast<int>(point) != g_kind) return;
  if (++g_seen == g_target) raise(SIGKILL);
}

// Runs `body` in a child that kills itself at its n-th crash point (`kind` < 0: any kind).
// True when the child was killed; false when it finished (fewer than n points). A failing body
// fails the test.
bool RunChildKilledAt(int n, int kind, const std::function<bool()>& body) {
  pid_t pid = fork();
  if (pid == 0) {
    g_target = n;
    g_seen = 0;
    g_kind = kind;
    shared_internal::g_crash_hook.store(&KillAtTarget);
    _exit(body() ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) return true;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  return false;
}

class CrashTest : public ::testing::Test {
 protected:
  CrashTest() {
    name_ = shared_testing::UniqueSegmentName("etsmgr-crash");
    options_.shards = 2;
    options_.max_bytes = uint64_t{1} << 28;
  }
  ~CrashTest() override { (void)IntMap::Remove(name_, options_); }

  IntMap Fresh() {
    (void)IntMap::Remove(name_, options_);
    return IntMap::Open(name_, options_).value();
  }
  absl::StatusOr<IntMap> Reopen() { return IntMap::Open(name_, options_); }
  static List Sorted(const IntMap& m) {
    List l = m.ToList().value();
    std::sort(l.begin(), l.end());
    return l;
  }

  // Sweeps every crash point of `op` (applied to a map prepared by `setup`), and for each, every
  // crash point of the first re-open (the repair): the map is `before` or `after`, never else.
  // `min_points`: an op that rewrites one word in place (a replace or update_counter of an
  // int64 value) has a single point, after its store; every other write has at least four.
  void SweepOp(const std::string& what, const std::function<void(IntMap&)>& setup,
               const std::function<bool(IntMap&)>& op, int min_points = 4) {
    List before;
    List after;
    {
      IntMap m = Fresh();
      setup(m);
      before = Sorted(m);
      ASSERT_TRUE(op(m));
      after = Sorted(m);
    }
    ASSERT_NE(before, after) << what;
    int points = 0;
    for (int n = 1;; ++n) {
      {
        IntMap m = Fresh();
        setup(m);
      }
      bool killed = RunChildKilledAt(n, -1, [&] {
        absl::StatusOr<IntMap> m = Reopen();
        return m.ok() && op(*m);
      });
      if (!killed) {
        absl::StatusOr<IntMap> m = Reopen();
        ASSERT_TRUE(m.ok()) << m.status();
        EXPECT_EQ(Sorted(*m), after) << what << ": finished";
        break;
      }
      ++points;
      ++kills_;
      // A kill of the repairer: every crash point of the re-open that repairs.
      for (int k = 1;; ++k) {
        bool repair_killed = RunChildKilledAt(k, -1, [&] {
          absl::StatusOr<IntMap> m = Reopen();
          return m.ok() && m->Check().ok();
        });
        if (!repair_killed) break;
        ++kills_;
      }
      absl::StatusOr<IntMap> m = Reopen();
      ASSERT_TRUE(m.ok()) << what << " killed at point " << n << ": " << m.status();
      absl::Status check = m->Check();
      ASSERT_TRUE(check.ok()) << what << " killed at point " << n << ": " << check;
      List now = Sorted(*m);
      EXPECT_TRUE(now == before || now == after)
          << what << " killed at crash point " << n << ": neither before nor after";
    }
    EXPECT_GE(points, min_points) << what;
    RecordProperty(what, points);
  }

  // The smallest k such that inserting key k into a map holding [0, k) rebuilds a region after
  // the first few (counted in this process with a hook that only counts).
  int64_t FindGrowingInsert() {
    IntMap m = Fresh();
    static int resizes = 0;
    shared_internal::g_crash_hook.store(
        +[](Crash point) { resizes += point == Crash::kResizeIntent; });
    int64_t found = -1;
    for (int64_t k = 0; k < 10'000 && found < 0; ++k) {
      resizes = 0;
      if (!m.Insert(k, k * 10).ok()) break;
      if (k > 10 && resizes > 0) found = k;
    }
    shared_internal::g_crash_hook.store(nullptr);
    return found;
  }

  static inline int kills_ = 0;
  std::string name_;
  SharedMapOptions options_;
};

void InsertKeys(IntMap& m, int64_t from, int64_t to) {
  for (int64_t k = from; k < to; ++k) ASSERT_TRUE(m.Insert(k, k * 10).ok());
}

TEST_F(CrashTest, EveryPointOfEveryWrite) {
  auto few = [](IntMap& m) { InsertKeys(m, 0, 6); };
  SweepOp(
      "insert (first of its shard)", [](IntMap&) {}, [](IntMap& m) { return m.Insert(1, 1).ok(); });
  SweepOp("insert", few, [](IntMap& m) { return m.Insert(100, 1).ok(); });
  SweepOp(
      "replace", few, [](IntMap& m) { return m.Insert(3, -3).ok(); }, /*min_points=*/1);
  SweepOp("insert_new", few, [](IntMap& m) { return m.InsertNew(101, 7).value_or(false); });
  SweepOp(
      "update_counter", few, [](IntMap& m) { return m.UpdateCounter(2, 5).ok(); },
      /*min_points=*/1);
  SweepOp("update_counter default", few,
          [](IntMap& m) { return m.UpdateCounter(102, 5, {.default_value = 1}).ok(); });
  SweepOp("erase", few, [](IntMap& m) { return m.Erase(4).ok(); });
  SweepOp("take", few, [](IntMap& m) { return m.Take(5).ok(); });
  SweepOp(
      "clear", [](IntMap& m) { InsertKeys(m, 0, 40); }, [](IntMap& m) { return m.Clear().ok(); });
  SweepOp(
      "insert after clear (reuses a free region)",
      [](IntMap& m) {
        InsertKeys(m, 0, 40);
        ASSERT_TRUE(m.Clear().ok());
      },
      [](IntMap& m) { return m.Insert(1, 1).ok(); });
  // Growth: the first key whose insert rebuilds a full region (found with a counting hook).
  const int64_t grows = FindGrowingInsert();
  ASSERT_GT(grows, 10);
  SweepOp(
      "insert that grows a region", [&](IntMap& m) { InsertKeys(m, 0, grows); },
      [&](IntMap& m) { return m.Insert(grows, 1).ok(); });
}

// A value of several words: a write killed half-way through it is rolled back from the intent
// record's image, never left torn.
struct Wide {
  int64_t w[4];
};

TEST_F(CrashTest, HalfWrittenValuesAreRolledBack) {
  using WideMap = SharedMap<int64_t, Wide>;
  const std::string name = absl::StrCat(name_, "-wide");
  for (int kind : {static_cast<int>(Crash::kSlotHalf), static_cast<int>(Crash::kSlotWritten)}) {
    (void)WideMap::Remove(name, options_);
    {
      WideMap m = WideMap::Open(name, options_).value();
      for (int64_t k = 0; k < 10; ++k) ASSERT_TRUE(m.Insert(k, Wide{{k, k, k, k}}).ok());
    }
    ASSERT_TRUE(RunChildKilledAt(1, kind, [&] {
      absl::StatusOr<WideMap> m = WideMap::Open(name, options_);
      return m.ok() && m->Insert(3, Wide{{-1, -1, -1, -1}}).ok();
    }));
    ++kills_;
    WideMap m = WideMap::Open(name, options_).value();
    ASSERT_TRUE(m.Check().ok()) << m.Check();
    Wide v = m.Get(3).value().value();
    EXPECT_TRUE(v.w[0] == v.w[1] && v.w[1] == v.w[2] && v.w[2] == v.w[3])
        << "torn: " << v.w[0] << " " << v.w[1] << " " << v.w[2] << " " << v.w[3];
    EXPECT_EQ(v.w[0], 3);  // killed before the write returned: rolled back
    EXPECT_EQ(m.Info()->slot_rollbacks, 1u);
  }
  (void)WideMap::Remove(name, options_);
}

// What a reader saw after a writer was killed stays: a killed write is either shown by no reader
// and then rolled back, or shown and kept (never seen by a reader through the still-open handle
// and then undone by the repair a later locker makes). Swept over every crash point of a replace,
// an insert and an erase of a multi-word value.
TEST_F(CrashTest, AWriteAReaderSawIsNeverRolledBack) {
  using WideMap = SharedMap<int64_t, Wide>;
  const std::string name = absl::StrCat(name_, "-seen");
  struct Op {
    const char* what;
    int64_t key;
    std::function<bool(WideMap&)> run;
  };
  const std::vector<Op> ops = {
      {"replace", 3,
       [](WideMap& m) {
         return m.Insert(3, Wide{{-1, -1, -1, -1}}).ok();
       }},
      {"insert", 20,
       [](WideMap& m) {
         return m.Insert(20, Wide{{-2, -2, -2, -2}}).ok();
       }},
      {"erase", 5, [](WideMap& m) { return m.Erase(5).ok(); }},
  };
  for (const Op& op : ops) {
    int points = 0;
    for (int n = 1;; ++n) {
      (void)WideMap::Remove(name, options_);
      WideMap reader = WideMap::Open(name, options_).value();
      for (int64_t k = 0; k < 10; ++k) ASSERT_TRUE(reader.Insert(k, Wide{{k, k, k, k}}).ok());
      const bool killed = RunChildKilledAt(n, -1, [&] {
        absl::StatusOr<WideMap> m = WideMap::Open(name, options_);
        return m.ok() && op.run(*m);
      });
      if (!killed) break;
      ++points;
      ++kills_;
      // The reader's handle was open throughout: no re-open repairs anything before it looks.
      absl::StatusOr<std::optional<Wide>> seen = reader.Get(op.key);
      ASSERT_TRUE(seen.ok()) << seen.status();
      ASSERT_TRUE(reader.Check().ok()) << reader.Check();
      absl::StatusOr<std::optional<Wide>> later = reader.Get(op.key);
      ASSERT_TRUE(later.ok()) << later.status();
      ASSERT_EQ(seen->has_value(), later->has_value()) << op.what << ", crash point " << n;
      if (seen->has_value()) {
        EXPECT_EQ((*seen)->w[0], (*later)->w[0]) << op.what << ", crash point " << n;
      }
    }
    EXPECT_GE(points, 4) << op.what;
  }
  (void)WideMap::Remove(name, options_);
}

// A long sequence killed at the n-th passage of each kind of crash point: what the re-opened map
// holds is a state the sequence passes through (every write before the kill, maybe the one in
// flight), and Check() holds. The sequence grows the file, rebuilds regions, leaves tombstones,
// clears and reuses free regions.
constexpr int64_t kKeys = 6000;

bool SequenceBody(IntMap& m) {
  for (int64_t k = 0; k < kKeys; ++k) {
    if (!m.Insert(k, k).ok()) return false;
  }
  for (int64_t k = 0; k < kKeys; k += 2) {
    if (!m.Erase(k).ok()) return false;
  }
  for (int64_t k = kKeys; k < 2 * kKeys; ++k) {
    if (!m.UpdateCounter(k, 1, {.default_value = 0}).ok()) return false;
  }
  return m.Clear().ok() && m.Insert(1, 1).ok();
}

// Whether `l` (sorted) is a state SequenceBody passes through.
std::string SequenceStateError(const List& l) {
  if (l.empty() || l == List{{1, 1}}) return "";  // cleared (or not started), then the last insert
  std::vector<int64_t> low;
  std::vector<int64_t> high;
  for (const auto& [k, v] : l) {
    if (k < kKeys) {
      if (v != k) return absl::StrCat("key ", k, " holds ", v);
      low.push_back(k);
    } else {
      if (v != 1) return absl::StrCat("counter ", k, " holds ", v);
      high.push_back(k);
    }
  }
  for (size_t i = 0; i < high.size(); ++i) {
    if (high[i] != kKeys + static_cast<int64_t>(i)) return "the counters are not a prefix";
  }
  // Phase 1: [0, n). Phase 2: every odd key, and the even keys from some point on.
  bool prefix = true;
  for (size_t i = 0; i < low.size(); ++i) prefix = prefix && low[i] == static_cast<int64_t>(i);
  if (prefix && high.empty()) return "";
  int64_t first_even = kKeys;
  for (int64_t k : low) {
    if (k % 2 == 0) {
      first_even = k;
      break;
    }
  }
  size_t expect = 0;
  for (int64_t k = 1; k < kKeys; k += 2) ++expect;
  for (int64_t k = first_even; k < kKeys; k += 2) ++expect;
  if (low.size() != expect) return absl::StrCat(low.size(), " low keys, expected ", expect);
  if (!high.empty() && first_even != kKeys) return "counters before every even key was erased";
  return "";
}

TEST_F(CrashTest, LongSequencesKilledAtEachKindOfPoint) {
  const int last_kind = static_cast<int>(Crash::kGrowTruncated);
  int killed_runs = 0;
  for (int kind = 0; kind <= last_kind; ++kind) {
    if (kind == static_cast<int>(Crash::kRepairStarted) ||
        kind == static_cast<int>(Crash::kRepairRestored)) {
      continue;  // nothing to repair in these runs
    }
    for (int n : {1, 2, 7, 40, 300}) {
      Fresh();
      bool killed = RunChildKilledAt(n, kind, [&] {
        absl::StatusOr<IntMap> m = Reopen();
        return m.ok() && SequenceBody(*m);
      });
      if (!killed) continue;
      ++killed_runs;
      ++kills_;
      absl::StatusOr<IntMap> m = Reopen();
      ASSERT_TRUE(m.ok()) << m.status();
      absl::Status check = m->Check();
      ASSERT_TRUE(check.ok()) << "crash point kind " << kind << ", passage " << n << ": " << check;
      std::string error = SequenceStateError(Sorted(*m));
      EXPECT_EQ(error, "") << "crash point kind " << kind << ", passage " << n;
    }
  }
  EXPECT_GT(killed_runs, 40);
}

// Repairs the re-opens after the kills made: a kill proves something only when it landed inside
// a write, which the next open then repairs.
uint64_t Repairs(const SharedMapInfo& info) {
  return info.slot_rollbacks + info.resize_rollbacks + info.resize_completions +
         info.clears_completed + info.log_rollbacks;
}

// Random kills until at least one landed inside a write: the run of `o`, then (rarely needed: a
// few in a hundred kills do) runs with further seeds, at most 10. Failures of any run are kept.
shared_testing::KillRunResult RunKillsUntilOneRepaired(shared_testing::KillRunOptions o) {
  shared_testing::KillRunResult total = shared_testing::RunKills(o);
  uint64_t repairs = Repairs(total.info);
  for (int extra = 0; repairs == 0 && total.ok() && extra < 10; ++extra) {
    o.seed += 1000;
    shared_testing::KillRunResult more = shared_testing::RunKills(o);
    total.kills += more.kills;
    total.writes_checked += more.writes_checked;
    total.check_failures += more.check_failures;
    total.lost_writes += more.lost_writes;
    total.harness_failures += more.harness_failures;
    if (total.first_failure.empty() && !more.first_failure.empty()) {
      total.first_failure = absl::StrCat(more.first_failure, " (in the run of seed ", o.seed, ")");
    }
    repairs += Repairs(more.info);
    total.info = more.info;
  }
  if (repairs == 0) {
    ADD_FAILURE() << total.kills
                  << " kills and none landed inside a write (no repair): the run proves nothing";
  }
  return total;
}

TEST_F(CrashTest, SingleWriterRandomKills) {
  shared_testing::KillRunOptions o;
  o.seed = 16;
  o.kills = KillsFor("SHARED_CRASH_KILLS", 400);
  o.writers = 1;
  shared_testing::KillRunResult r = RunKillsUntilOneRepaired(o);
  EXPECT_TRUE(r.ok()) << r.first_failure << " (replay: seed " << o.seed << ")";
  EXPECT_GE(r.kills, o.kills);
  EXPECT_GT(r.writes_checked, r.kills);
  std::cout << "single writer: " << r.kills << " kills, " << r.writes_checked
            << " acknowledged writes checked; repairs (last run): slot " << r.info.slot_rollbacks
            << ", resize rollback " << r.info.resize_rollbacks << ", resize completion "
            << r.info.resize_completions << ", clear " << r.info.clears_completed << ", log "
            << r.info.log_rollbacks << "\n";
}

TEST_F(CrashTest, TwoWritersKilledIndependently) {
  shared_testing::KillRunOptions o;
  o.seed = 1616;
  o.kills = KillsFor("SHARED_CRASH_KILLS_TWO", 200);
  o.writers = 2;
  shared_testing::KillRunResult r = RunKillsUntilOneRepaired(o);
  EXPECT_TRUE(r.ok()) << r.first_failure << " (replay: seed " << o.seed << ")";
  EXPECT_GE(r.kills, o.kills);
  EXPECT_GT(r.writes_checked, r.kills);
  std::cout << "two writers: " << r.kills << " kills, " << r.writes_checked
            << " acknowledged writes checked; repairs (last run): slot " << r.info.slot_rollbacks
            << ", resize rollback " << r.info.resize_rollbacks << ", resize completion "
            << r.info.resize_completions << ", log " << r.info.log_rollbacks << "\n";
}

// Shard locks are held by a handle's holder token (layout.h, "Shard locks"); a forked child
// claims its own. A child killed holding a lock taken through a handle it inherited: the parent,
// using the same handle, sees a dead holder and repairs the shard (with the parent's token in the
// child, the parent took the lock for its own and waited out lock_timeout).
TEST_F(CrashTest, AChildKilledHoldingALockThroughAnInheritedHandleIsRepaired) {
  options_.lock_timeout = absl::Seconds(2);
  IntMap m = Fresh();
  for (int64_t k = 1; k <= 100; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  pid_t pid = fork();
  if (pid == 0) {
    g_target = 1;
    g_seen = 0;
    g_kind = static_cast<int>(Crash::kSlotOdd);
    shared_internal::g_crash_hook.store(&KillAtTarget);
    (void)m.Insert(1000, 555);  // a new key: killed with the lock held, the intent recorded
    _exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  absl::Status st = m.Insert(1000, 1);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(m.Get(1000).value(), std::optional<int64_t>(1));
  EXPECT_TRUE(m.Check().ok());
  EXPECT_EQ(m.Info()->slot_rollbacks, 1u);
}

// A process killed holding a lock while a child it forked (which never used the map) lives on:
// the child's copy of the process's holder file lock must not keep the dead holder looking alive
// (the fork handler drops it), so the next user repairs at once instead of timing out.
TEST_F(CrashTest, AKilledHolderWhoseForkedChildLivesOnIsRepaired) {
  options_.lock_timeout = absl::Seconds(2);
  {
    IntMap m = Fresh();
    for (int64_t k = 1; k <= 100; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  }
  int hold[2];
  ASSERT_EQ(pipe(hold), 0);
  pid_t writer = fork();
  if (writer == 0) {
    close(hold[1]);
    absl::StatusOr<IntMap> m = Reopen();
    if (!m.ok()) _exit(2);
    if (fork() == 0) {  // lives until the test closes the pipe's other end
      char c;
      while (read(hold[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    g_target = 1;
    g_seen = 0;
    g_kind = static_cast<int>(Crash::kSlotOdd);
    shared_internal::g_crash_hook.store(&KillAtTarget);
    (void)m->Insert(1000, 555);
    _exit(1);
  }
  close(hold[0]);
  int status = 0;
  waitpid(writer, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  absl::StatusOr<IntMap> m = Reopen();
  ASSERT_TRUE(m.ok()) << m.status();
  absl::Status st = m->Insert(1000, 1);
  close(hold[1]);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(m->Get(1000).value(), std::optional<int64_t>(1));
  EXPECT_TRUE(m->Check().ok());
}

// A writer that grew the segment past what another handle has mapped, killed while its allocator
// transaction (the free of its old region, out there) was logged: the other handle's repair maps
// the rest of the segment before it checks the log's offsets. Before, it judged them against its
// own older mapping, refused the log as corrupt and left the segment lock unrecoverable: every
// later resize, repair and open failed, the acknowledged data with them.
TEST_F(CrashTest, ARepairMapsWhatAnotherWriterGrewBeforeItUndoesItsLog) {
  options_.lock_timeout = absl::Seconds(2);
  IntMap m = Fresh();
  ASSERT_TRUE(m.Insert(0, 0).ok());
  const uint64_t mapped_before = m.Info()->file_bytes;
  constexpr int64_t kGrown = 200'000;
  pid_t pid = fork();
  if (pid == 0) {
    absl::StatusOr<IntMap> c = Reopen();
    if (!c.ok()) _exit(2);
    for (int64_t k = 1; k <= kGrown; ++k) {
      if (!c->Insert(k, k).ok()) _exit(3);
    }
    g_target = 1;
    g_seen = 0;
    g_kind = static_cast<int>(Crash::kFreeLogged);
    shared_internal::g_crash_hook.store(&KillAtTarget);
    for (int64_t k = kGrown + 1; k <= 8 * kGrown; ++k) {
      if (!c->Insert(k, k).ok()) _exit(4);
    }
    _exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  // The case under test: the freed region lies past what this handle mapped at its open.
  ASSERT_GT(m.Info()->file_bytes, 2 * mapped_before);
  absl::Status checked = m.Check();
  EXPECT_TRUE(checked.ok()) << checked;
  EXPECT_EQ(m.Info()->log_rollbacks, 1u);
  for (int64_t k = 0; k <= kGrown; ++k) {
    ASSERT_EQ(m.Get(k).value(), std::optional<int64_t>(k)) << k;
  }
  ASSERT_TRUE(m.Insert(-1, -1).ok());
  absl::StatusOr<IntMap> again = Reopen();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->Check().ok());
}

// A child forked while a shard's lock is held (here by a `decide` that forks) leaves the lock and
// the write to its parent: the child neither writes (FailedPrecondition) nor releases the lock
// on its way out.
TEST_F(CrashTest, AChildForkedUnderALockNeitherWritesNorReleasesIt) {
  const pid_t parent = getpid();
  IntMap m = Fresh();
  ASSERT_TRUE(m.Insert(7, 1).ok());
  SharedMapOptions quick = options_;
  quick.lock_timeout = absl::Milliseconds(200);
  IntMap other = IntMap::Open(name_, quick).value();
  absl::Status while_held;
  int child_status = -1;
  absl::Status st = m.Mutate(7, [&](const int64_t*, int64_t* next) {
    pid_t pid = fork();
    if (pid == 0) {
      *next = 3;  // the child's write is refused below
      return SharedMapAction::kPut;
    }
    waitpid(pid, &child_status, 0);
    // The lock is still this process's: another handle's write of the key waits and gives up.
    std::thread t([&] { while_held = other.Insert(7, 99); });
    t.join();
    *next = 2;
    return SharedMapAction::kPut;
  });
  if (getpid() != parent) _exit(st.code() == absl::StatusCode::kFailedPrecondition ? 0 : 1);
  EXPECT_TRUE(WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0) << child_status;
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(while_held.code(), absl::StatusCode::kDeadlineExceeded) << while_held;
  EXPECT_EQ(m.Get(7).value(), std::optional<int64_t>(2));
  EXPECT_TRUE(m.Check().ok());
}

// A crash hook that parks the writer at its first kSlotOdd (the shard's lock held, its write half
// done) until the test lets it go.
int g_parked_ready = -1;
int g_parked_go = -1;
void ParkAtSlotOdd(Crash point) {
  if (point != Crash::kSlotOdd || g_parked_ready < 0) return;
  char c = 'p';
  if (write(g_parked_ready, &c, 1) != 1) _exit(3);
  if (read(g_parked_go, &c, 1) != 1) _exit(4);
  g_parked_ready = -1;
}

// A handle whose descriptors someone else closed and reused for another file (a daemon's
// "close every fd" step, say) must never judge a live holder dead: asked about the holder
// through the wrong file, it took a live writer's lock and rolled its write back.
TEST_F(CrashTest, AHandleWhoseDescriptorsWereReplacedNeverTakesALiveHoldersLock) {
  options_.lock_timeout = absl::Milliseconds(300);
  IntMap m = Fresh();
  for (int64_t k = 1; k <= 10; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  int ready[2];
  int go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  pid_t pid = fork();
  if (pid == 0) {
    absl::StatusOr<IntMap> c = Reopen();
    if (!c.ok()) _exit(2);
    g_parked_ready = ready[1];
    g_parked_go = go[0];
    shared_internal::g_crash_hook.store(&ParkAtSlotOdd);
    _exit(c->Insert(1000, 555).ok() ? 0 : 1);
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);  // the child holds key 1000's shard, mid-write
  // Every descriptor of this process on the segment now names another file.
  const std::string path = m.Info()->path;
  const std::string other = absl::StrCat(std::getenv("TEST_TMPDIR"), "/not-the-segment");
  int replacement = open(other.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(replacement, 0);
  int replaced = 0;
  struct stat segment;
  ASSERT_EQ(stat(path.c_str(), &segment), 0);
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    // By identity, not by the link's text: a segment made as a nameless file (O_TMPFILE) keeps
    // that name in its descriptors' links after it was linked in place.
    struct stat st;
    if (stat(entry.path().c_str(), &st) != 0 || st.st_dev != segment.st_dev ||
        st.st_ino != segment.st_ino) {
      continue;
    }
    const int fd = std::stoi(entry.path().filename().string());
    ASSERT_EQ(dup2(replacement, fd), fd);
    ++replaced;
  }
  close(replacement);
  EXPECT_EQ(replaced, 2);  // the handle's own and its holder token's
  absl::Status st = m.Insert(1000, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  ASSERT_EQ(write(go[1], "g", 1), 1);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  absl::StatusOr<IntMap> after = Reopen();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->Get(1000).value(), std::optional<int64_t>(555));
  EXPECT_TRUE(after->Check().ok());
  for (int fd : {ready[0], ready[1], go[0], go[1]}) close(fd);
}

// A handle's holder-token draw that comes up with a dead holder's token still in a lock word
// draws again: holding that token itself, the handle would make the dead holder look alive, and
// the shard would never be repaired (every write of it timed out).
constexpr uint64_t kDeadHoldersDraw = 0x5eed0042;
int g_token_draws = 0;
uint64_t AlwaysTheDeadHoldersToken() { return kDeadHoldersDraw; }
uint64_t TheDeadHoldersTokenFirst() {
  return g_token_draws++ == 0 ? kDeadHoldersDraw : kDeadHoldersDraw + 1;
}

TEST_F(CrashTest, AHandleNeverDrawsADeadHoldersTokenThatIsStillInALockWord) {
  options_.lock_timeout = absl::Milliseconds(500);
  {
    IntMap m = Fresh();
    for (int64_t k = 1; k <= 100; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  }
  pid_t pid = fork();
  if (pid == 0) {
    shared_internal::g_token_draw_hook.store(&AlwaysTheDeadHoldersToken);
    absl::StatusOr<IntMap> m = Reopen();
    if (!m.ok()) _exit(2);
    g_target = 1;
    g_seen = 0;
    g_kind = static_cast<int>(Crash::kSlotOdd);
    shared_internal::g_crash_hook.store(&KillAtTarget);
    (void)m->Insert(1000, 555);  // killed holding the shard's lock: its token stays in the word
    _exit(1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  g_token_draws = 0;
  shared_internal::g_token_draw_hook.store(&TheDeadHoldersTokenFirst);
  absl::StatusOr<IntMap> m = Reopen();
  shared_internal::g_token_draw_hook.store(nullptr);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(g_token_draws, 2);  // the dead holder's token, then another
  absl::Status st = m->Insert(1000, 1);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(m->Get(1000).value(), std::optional<int64_t>(1));
  EXPECT_TRUE(m->Check().ok());
  EXPECT_EQ(m->Info()->slot_rollbacks, 1u);
}

// Stops the calling child at its first crash point of `kind` (SIGSTOP): the parent looks at the
// segment mid-operation, then kills it.
void StopAtFirst(Crash point) {
  if (static_cast<int>(point) == g_kind && ++g_seen == 1) raise(SIGSTOP);
}

// A file-backed segment saved while a writer held the segment lock (a backup copied mid-write,
// or a file written back before a reboot) names a holder that exists nowhere once the writer is
// gone: opening the copy takes the lock over and rolls its log back, as for a killed holder.
// (The segment lock was a robust pthread mutex, which names its holder by thread id: in the copy
// it stayed locked for ever, so every repair and resize timed out; two programs in different PID
// namespaces, both thread 1, made it report the other's hold as its own.)
TEST_F(CrashTest, ACopyOfASegmentSavedUnderItsSegmentLockOpensAndRepairs) {
  SharedMapOptions on_disk = options_;
  on_disk.directory = ::testing::TempDir();
  on_disk.lock_timeout = absl::Seconds(2);
  const std::string copy = absl::StrCat(name_, "-copy");
  (void)IntMap::Remove(name_, on_disk);
  (void)IntMap::Remove(copy, on_disk);
  {
    IntMap m = IntMap::Open(name_, on_disk).value();
    InsertKeys(m, 0, 30);
  }
  pid_t pid = fork();
  if (pid == 0) {
    absl::StatusOr<IntMap> m = IntMap::Open(name_, on_disk);
    if (!m.ok()) _exit(2);
    g_seen = 0;
    g_kind = static_cast<int>(Crash::kAllocLogged);
    shared_internal::g_crash_hook.store(&StopAtFirst);
    for (int64_t k = 30; k < 100'000; ++k) {
      if (!m->Insert(k, k).ok()) _exit(3);
    }
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << status;
  std::error_code error;
  const std::filesystem::path dir(on_disk.directory);
  std::filesystem::copy_file(dir / name_, dir / copy, error);
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  ASSERT_FALSE(error) << error.message();
  std::filesystem::permissions(
      dir / copy, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  {
    absl::StatusOr<IntMap> m = IntMap::Open(copy, on_disk);
    ASSERT_TRUE(m.ok()) << m.status();
    absl::Status checked = m->Check();
    ASSERT_TRUE(checked.ok()) << checked;
    EXPECT_EQ(m->Info()->log_rollbacks, 1u);
    for (int64_t k = 0; k < 30; ++k) {
      ASSERT_EQ(m->Get(k).value(), std::optional<int64_t>(k * 10)) << k;
    }
    // The allocator works again: enough new keys to grow every shard.
    for (int64_t k = 100'000; k < 103'000; ++k) ASSERT_TRUE(m->Insert(k, k).ok()) << k;
    EXPECT_TRUE(m->Check().ok());
  }
  (void)IntMap::Remove(name_, on_disk);
  (void)IntMap::Remove(copy, on_disk);
}

// A program killed while it made a new segment (the file filled in, not yet given its name)
// leaves no file behind, and the next open makes the segment afresh.
TEST_F(CrashTest, ACreatorKilledBeforeNamingTheSegmentLeavesNoFile) {
  (void)IntMap::Remove(name_, options_);
  const std::filesystem::path dir = IntMap::Open(name_, options_).value().Info()->path;
  const std::filesystem::path shm = dir.parent_path();
  ASSERT_TRUE(IntMap::Remove(name_, options_).ok());
  ASSERT_TRUE(
      RunChildKilledAt(1, static_cast<int>(Crash::kSegmentMade), [&] { return Reopen().ok(); }));
  ++kills_;
  for (const auto& entry : std::filesystem::directory_iterator(shm)) {
    EXPECT_EQ(entry.path().filename().string().find(name_), std::string::npos)
        << "left behind: " << entry.path();
  }
  absl::StatusOr<IntMap> m = Reopen();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->created());
  ASSERT_TRUE(m->Insert(1, 1).ok());
}

}  // namespace
}  // namespace etsmgr
