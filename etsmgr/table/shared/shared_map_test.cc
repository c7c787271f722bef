#include "etsmgr/table/shared/shared_map.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using IntMap = SharedMap<int64_t, int64_t>;

// A unique segment name, removed at the end of the test. `file` puts it in TEST_TMPDIR instead of
// /dev/shm.
class Segment {
 public:
  explicit Segment(bool file = false) {
    name_ = shared_testing::UniqueSegmentName("etsmgr-test");
    if (file) {
      const char* dir = std::getenv("TEST_TMPDIR");
      options_.directory = dir != nullptr ? dir : "/tmp";
    }
    options_.shards = 8;
    options_.max_bytes = uint64_t{1} << 30;
  }
  ~Segment() { (void)IntMap::Remove(name_, options_); }
  const std::string& name() const { return name_; }
  const SharedMapOptions& options() const { return options_; }
  SharedMapOptions& options() { return options_; }

 private:
  std::string name_;
  SharedMapOptions options_;
};

class SharedMapTest : public ::testing::TestWithParam<bool> {
 protected:
  Segment seg_{GetParam()};
};

INSTANTIATE_TEST_SUITE_P(Backing, SharedMapTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "File" : "Shm";
                         });

TEST_P(SharedMapTest, InsertGetReplaceMember) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  EXPECT_TRUE(m.created());
  EXPECT_EQ(m.Get(1).value(), std::nullopt);
  EXPECT_FALSE(m.Member(1).value());
  ASSERT_TRUE(m.Insert(1, 10).ok());
  EXPECT_EQ(m.Get(1).value(), 10);
  EXPECT_TRUE(m.Member(1).value());
  ASSERT_TRUE(m.Insert(1, 11).ok());  // set: replaces
  EXPECT_EQ(m.Get(1).value(), 11);
  EXPECT_EQ(m.Size().value(), 1u);
  EXPECT_TRUE(m.Check().ok());
}

TEST_P(SharedMapTest, InsertNew) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  EXPECT_TRUE(m.InsertNew(5, 50).value());
  EXPECT_FALSE(m.InsertNew(5, 51).value());
  EXPECT_EQ(m.Get(5).value(), 50);
}

TEST_P(SharedMapTest, MutateSeesTheValueAndPutsKeepsOrErases) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  using Action = IntMap::Action;
  bool saw_absent = false;
  ASSERT_TRUE(m.Mutate(4, [&](const int64_t* cur, int64_t* next) {
                 saw_absent = cur == nullptr;
                 *next = 40;
                 return Action::kPut;
               }).ok());
  EXPECT_TRUE(saw_absent);
  EXPECT_EQ(m.Get(4).value(), 40);
  ASSERT_TRUE(m.Mutate(4, [](const int64_t* cur, int64_t* next) {
                 *next = *cur + 2;
                 return Action::kPut;
               }).ok());
  EXPECT_EQ(m.Get(4).value(), 42);
  ASSERT_TRUE(m.Mutate(4, [](const int64_t*, int64_t*) { return Action::kKeep; }).ok());
  EXPECT_EQ(m.Get(4).value(), 42);
  ASSERT_TRUE(m.Mutate(4, [](const int64_t*, int64_t*) { return Action::kErase; }).ok());
  EXPECT_EQ(m.Get(4).value(), std::nullopt);
  EXPECT_TRUE(m.Check().ok());
  EXPECT_EQ(IntMap().Mutate(1, [](const int64_t*, int64_t*) { return Action::kKeep; }).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(SharedMapTest, EraseAndTake) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  ASSERT_TRUE(m.Insert(1, 10).ok());
  ASSERT_TRUE(m.Insert(2, 20).ok());
  EXPECT_EQ(m.Erase(1).value(), 1u);
  EXPECT_EQ(m.Erase(1).value(), 0u);
  EXPECT_EQ(m.Get(1).value(), std::nullopt);
  ASSERT_TRUE(m.Insert(3, 30).ok());
  EXPECT_EQ(m.EraseObject(3, 31).value(), 0u);
  EXPECT_EQ(m.EraseObject(3, 30).value(), 1u);
  EXPECT_EQ(m.Get(3).value(), std::nullopt);
  EXPECT_EQ(m.Take(2).value(), 20);
  EXPECT_EQ(m.Take(2).value(), std::nullopt);
  EXPECT_EQ(m.Size().value(), 0u);
  EXPECT_TRUE(m.Check().ok());
}

TEST_P(SharedMapTest, UpdateCounter) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  EXPECT_EQ(m.UpdateCounter(1, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.UpdateCounter(1, 5, {.default_value = 100}).value(), 105);
  EXPECT_EQ(m.UpdateCounter(1, -6).value(), 99);
  // Threshold: past it the counter is set to set_value (ETS update_counter {Pos, Incr, Thr, Set}).
  EXPECT_EQ(m.UpdateCounter(1, 2, {.threshold = 100, .set_value = 0}).value(), 0);
  EXPECT_EQ(m.UpdateCounter(1, -1, {.threshold = -1, .set_value = 7}).value(), -1);
  EXPECT_EQ(m.UpdateCounter(1, -1, {.threshold = -1, .set_value = 7}).value(), 7);
  ASSERT_TRUE(m.Insert(2, std::numeric_limits<int64_t>::max()).ok());
  absl::StatusOr<int64_t> over = m.UpdateCounter(2, 1);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kOutOfRange) << over.status();
  EXPECT_EQ(m.Get(2).value(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(m.UpdateCounter(2, 1, {.threshold = 0, .set_value = 3}).value(), 3);
}

TEST_P(SharedMapTest, SmallIntegerCounters) {
  Segment seg(GetParam());
  auto m = SharedMap<int32_t, uint8_t>::Open(seg.name(), seg.options()).value();
  EXPECT_EQ(m.UpdateCounter(1, 200, {.default_value = 0}).value(), 200);
  EXPECT_EQ(m.UpdateCounter(1, 100).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(m.Get(1).value(), 200);
  (void)SharedMap<int32_t, uint8_t>::Remove(seg.name(), seg.options());
}

TEST_P(SharedMapTest, ManyKeysResizeAndSurviveReopen) {
  std::map<int64_t, int64_t> model;
  std::mt19937_64 rng(1);
  {
    IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
    for (int i = 0; i < 50'000; ++i) {
      int64_t k = static_cast<int64_t>(rng() % 20'000);
      switch (rng() % 4) {
        case 0:
        case 1:
          ASSERT_TRUE(m.Insert(k, i).ok());
          model[k] = i;
          break;
        case 2:
          ASSERT_TRUE(m.Erase(k).ok());
          model.erase(k);
          break;
        case 3: {
          int64_t v = m.UpdateCounter(k, 3, {.default_value = 0}).value();
          EXPECT_EQ(v, model[k] += 3);
          break;
        }
      }
    }
    ASSERT_TRUE(m.Check().ok()) << m.Check();
    SharedMapInfo info = m.Info().value();
    EXPECT_GT(info.allocated_bytes, 0u);
  }
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  EXPECT_FALSE(m.created());
  ASSERT_TRUE(m.Check().ok()) << m.Check();
  EXPECT_EQ(m.Size().value(), model.size());
  std::vector<std::pair<int64_t, int64_t>> list = m.ToList().value();
  std::sort(list.begin(), list.end());
  std::vector<std::pair<int64_t, int64_t>> expected(model.begin(), model.end());
  EXPECT_EQ(list, expected);
  size_t visited = 0;
  ASSERT_TRUE(m.ForEach([&](const int64_t& k, const int64_t& v) {
                 EXPECT_EQ(model.at(k), v);
                 ++visited;
               }).ok());
  EXPECT_EQ(visited, model.size());
}

TEST_P(SharedMapTest, ClearThenReuse) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  for (int64_t k = 0; k < 5000; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  uint64_t allocated = m.Info()->allocated_bytes;
  ASSERT_TRUE(m.Clear().ok());
  EXPECT_EQ(m.Size().value(), 0u);
  EXPECT_EQ(m.Get(7).value(), std::nullopt);
  ASSERT_TRUE(m.Check().ok()) << m.Check();
  for (int64_t k = 0; k < 5000; ++k) ASSERT_TRUE(m.Insert(k, -k).ok());
  EXPECT_EQ(m.Get(7).value(), -7);
  // The freed regions were reused: the segment did not grow by a second copy.
  EXPECT_EQ(m.Info()->allocated_bytes, allocated);
  ASSERT_TRUE(m.Check().ok()) << m.Check();
}

TEST_P(SharedMapTest, SharedStringKeysAndValues) {
  Segment seg(GetParam());
  using Name = SharedString<24>;
  using Text = SharedString<200>;
  auto m = SharedMap<Name, Text>::Open(seg.name(), seg.options()).value();
  ASSERT_TRUE(m.Insert("alpha", Text::Make(std::string(200, 'x')).value()).ok());
  ASSERT_TRUE(m.Insert("beta", "b").ok());
  EXPECT_EQ(m.Get("alpha").value()->view(), std::string(200, 'x'));
  EXPECT_EQ(m.Get("beta").value()->str(), "b");
  EXPECT_EQ(m.Get("gamma").value(), std::nullopt);
  EXPECT_FALSE(Name::Make(std::string(25, 'y')).ok());
  Name empty;
  ASSERT_TRUE(m.Insert(empty, "empty key").ok());
  EXPECT_EQ(m.Get(Name()).value()->view(), "empty key");
  EXPECT_TRUE(m.Check().ok()) << m.Check();
  EXPECT_EQ(m.Size().value(), 3u);
  (void)SharedMap<Name, Text>::Remove(seg.name(), seg.options());
}

TEST_P(SharedMapTest, TwoHandlesOneSegment) {
  IntMap a = IntMap::Open(seg_.name(), seg_.options()).value();
  IntMap b = IntMap::Open(seg_.name(), seg_.options()).value();
  EXPECT_FALSE(b.created());
  // Growth by one mapping is seen by the other (which maps the new tail on demand).
  for (int64_t k = 0; k < 100'000; ++k) ASSERT_TRUE(a.Insert(k, k * 2).ok());
  for (int64_t k = 0; k < 100'000; k += 997) EXPECT_EQ(b.Get(k).value(), k * 2);
  ASSERT_TRUE(b.Insert(-1, 5).ok());
  EXPECT_EQ(a.Get(-1).value(), 5);
  EXPECT_TRUE(b.Check().ok()) << b.Check();
}

// Each open handle holds its own random token's file lock, so many handles (here more than a page
// of holder slots would have held; a process may have 4096) have one segment open, every one of
// them writing.
TEST(SharedMapHoldersTest, ManyHandlesHoldOneSegmentAtOnce) {
  rlimit files;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_max != RLIM_INFINITY && files.rlim_max < 1400) {
    GTEST_SKIP() << "needs 1400 file descriptors (two per handle); the hard limit is "
                 << files.rlim_max;
  }
  const rlimit before = files;
  files.rlim_cur = files.rlim_max == RLIM_INFINITY ? 4096 : std::min<rlim_t>(files.rlim_max, 4096);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  Segment seg;
  seg.options().max_bytes = uint64_t{4} << 20;
  std::vector<IntMap> handles;
  for (int i = 0; i < 600; ++i) {
    absl::StatusOr<IntMap> m = IntMap::Open(seg.name(), seg.options());
    ASSERT_TRUE(m.ok()) << i << ": " << m.status();
    ASSERT_TRUE(m->UpdateCounter(1, 1, {.default_value = 0}).ok());
    handles.push_back(*std::move(m));
  }
  EXPECT_EQ(handles.front().Get(1).value(), std::optional<int64_t>(600));
  EXPECT_TRUE(handles.back().Check().ok());
  handles.clear();
  setrlimit(RLIMIT_NOFILE, &before);
}

TEST(SharedMapOptionsTest, MaxBytesMustBeWholePages) {
  Segment seg;
  seg.options().max_bytes = (uint64_t{1} << 20) + 100;
  absl::Status st = IntMap::Open(seg.name(), seg.options()).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("a multiple of 4096"), std::string::npos) << st;
}

TEST_P(SharedMapTest, ModesAndRemove) {
  SharedMapOptions open_only = seg_.options();
  open_only.mode = SharedMapOptions::Mode::kOpen;
  EXPECT_EQ(IntMap::Open(seg_.name(), open_only).status().code(), absl::StatusCode::kNotFound);
  SharedMapOptions create = seg_.options();
  create.mode = SharedMapOptions::Mode::kCreate;
  ASSERT_TRUE(IntMap::Open(seg_.name(), create).ok());
  EXPECT_EQ(IntMap::Open(seg_.name(), create).status().code(), absl::StatusCode::kAlreadyExists);
  IntMap kept = IntMap::Open(seg_.name(), open_only).value();
  ASSERT_TRUE(kept.Insert(1, 1).ok());
  ASSERT_TRUE(IntMap::Remove(seg_.name(), seg_.options()).ok());
  EXPECT_EQ(IntMap::Remove(seg_.name(), seg_.options()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kept.Get(1).value(), 1);  // an open handle keeps its segment
}

TEST_P(SharedMapTest, SyncAndInfo) {
  IntMap m = IntMap::Open(seg_.name(), seg_.options()).value();
  ASSERT_TRUE(m.Insert(1, 1).ok());
  EXPECT_TRUE(m.Sync().ok());
  SharedMapInfo info = m.Info().value();
  EXPECT_EQ(info.name, seg_.name());
  EXPECT_EQ(info.file_backed, GetParam());
  EXPECT_EQ(info.shards, 8u);
  EXPECT_GE(info.opens, 1u);
  EXPECT_EQ(info.slot_rollbacks, 0u);
}

// A creator killed between creating its temporary file and linking it leaves the file behind; a
// restarted program often has the same pid (a container's, a sandbox's). Such leftovers, for every
// counter value a pid-only name could take, do not stop the next create.
TEST_P(SharedMapTest, LeftoverTemporaryFilesOfTheSamePidDoNotBlockCreation) {
  const std::string dir =
      seg_.options().directory.empty() ? std::string("/dev/shm") : seg_.options().directory;
  std::vector<std::string> planted;
  for (int i = 0; i < 1000; ++i) {
    planted.push_back(absl::StrCat(dir, "/.", seg_.name(), ".", getpid(), ".", i, ".tmp"));
    const int fd = open(planted.back().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << planted.back();
    close(fd);
  }
  absl::StatusOr<IntMap> map = IntMap::Open(seg_.name(), seg_.options());
  for (const std::string& path : planted) unlink(path.c_str());
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_TRUE(map->created());
  EXPECT_TRUE(map->Insert(1, 2).ok());
}

TEST(SharedMapNullTest, EveryCallOnANullHandleFails) {
  IntMap m;
  EXPECT_FALSE(m.valid());
  EXPECT_EQ(m.Insert(1, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Get(1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.UpdateCounter(1, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Check().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Size().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SharedMapHashTest, FixedAndGenericHashesAgree) {
  // Readers hash with the fixed-width form, Check() with the generic one.
  for (uint64_t w : {uint64_t{0}, uint64_t{1}, ~uint64_t{0}, uint64_t{0x123456789}}) {
    EXPECT_EQ(shared_internal::HashWordsFixed<1>(&w), shared_internal::HashWords(&w, 1));
  }
  uint64_t two[2] = {3, 4};
  EXPECT_EQ(shared_internal::HashWordsFixed<2>(two), shared_internal::HashWords(two, 2));
}

// Types a segment can hold, and a few it cannot (these must not compile).
struct Point {
  int32_t x;
  int32_t y;
};
struct Padded {
  int8_t a;
  int64_t b;
};
static_assert(SharedKey<int64_t> && SharedKey<Point> && SharedKey<SharedString<5>>);
static_assert(SharedStorable<double> && !SharedKey<double>);
static_assert(SharedStorable<Padded> && !SharedKey<Padded>);
static_assert(!SharedStorable<std::string> && !SharedStorable<int*>);
static_assert(!SharedStorable<char[5000]>);

}  // namespace
}  // namespace etsmgr
