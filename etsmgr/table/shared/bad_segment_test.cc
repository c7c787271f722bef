// Bad names, bad files and corrupted segments: each a typed error naming what is wrong, never a
// crash. The last test flips seeded random bytes of a populated segment (a deterministic
// regression companion of the fuzzer, fuzz_open.cc) and replays the fuzzer's saved findings.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/table/shared/internal/layout.h"
#include "etsmgr/table/shared/shared_map.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using shared_internal::ImmutableHeader;
using shared_internal::kFormatVersion;
using shared_internal::kMutableOffset;
using shared_internal::kShardsOffset;
using shared_internal::MutableHeader;
using shared_internal::ShardHeader;
using ::testing::HasSubstr;
using IntMap = SharedMap<int64_t, int64_t>;

class BadSegmentTest : public ::testing::Test {
 protected:
  BadSegmentTest() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/bad-", getpid(), "-", counter_++);
    std::filesystem::create_directories(dir_);
    options_.directory = dir_;
    options_.shards = 4;
    options_.max_bytes = uint64_t{1} << 28;
    options_.lock_timeout = absl::Milliseconds(20);
  }
  ~BadSegmentTest() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return absl::StrCat(dir_, "/", name); }

  // A segment "m" holding keys [0, n).
  void Populate(int64_t n = 1000) {
    IntMap m = IntMap::Open("m", options_).value();
    for (int64_t k = 0; k < n; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  }
  template <typename T>
  T Read(uint64_t offset) {
    T v;
    int fd = open(Path("m").c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, &v, sizeof(v), static_cast<off_t>(offset)),
              static_cast<ssize_t>(sizeof(v)));
    close(fd);
    return v;
  }
  template <typename T>
  void Write(uint64_t offset, const T& v) {
    int fd = open(Path("m").c_str(), O_WRONLY);
    EXPECT_EQ(pwrite(fd, &v, sizeof(v), static_cast<off_t>(offset)),
              static_cast<ssize_t>(sizeof(v)));
    close(fd);
  }
  uint64_t ShardOffset(size_t s) {
    return kShardsOffset + s * Read<ImmutableHeader>(0).shard_stride;
  }
  absl::Status OpenStatus() { return IntMap::Open("m", options_).status(); }

  static inline int counter_ = 0;
  std::string dir_;
  SharedMapOptions options_;
};

TEST_F(BadSegmentTest, Names) {
  for (const std::string& bad :
       {std::string(), std::string(".hidden"), std::string(".."), std::string("../etc/passwd"),
        std::string("a/b"), std::string("with space"), std::string("nul\0x", 5),
        std::string(201, 'a')}) {
    absl::Status st = IntMap::Open(bad, options_).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << "\"" << bad << "\": " << st;
  }
  EXPECT_TRUE(IntMap::Open(std::string(200, 'a'), options_).ok());
  EXPECT_TRUE(IntMap::Open("A-z_0.9", options_).ok());
  EXPECT_EQ(IntMap::Remove("../x", options_).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BadSegmentTest, CreatedMode0600) {
  Populate(1);
  struct stat st;
  ASSERT_EQ(stat(Path("m").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += e.exists();
  EXPECT_EQ(files, 1);
}

TEST_F(BadSegmentTest, SymlinkIsNotFollowed) {
  Populate(1);
  ASSERT_EQ(symlink(Path("m").c_str(), Path("link").c_str()), 0);
  absl::Status st = IntMap::Open("link", options_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("symbolic link"));
}

TEST_F(BadSegmentTest, NotARegularFile) {
  ASSERT_EQ(mkfifo(Path("fifo").c_str(), 0600), 0);
  absl::Status st = IntMap::Open("fifo", options_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("not a regular file"));
  std::filesystem::create_directory(Path("dir"));
  st = IntMap::Open("dir", options_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
}

TEST_F(BadSegmentTest, NotOwnedByUs) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
  Populate(1);
  if (chown(Path("m").c_str(), 65534, 65534) != 0) {
    GTEST_SKIP() << "chown failed (a sandbox's user namespace maps no other uid): " << errno;
  }
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("owned by uid 65534"));
}

TEST_F(BadSegmentTest, WritableByOthers) {
  Populate(1);
  ASSERT_EQ(chmod(Path("m").c_str(), 0666), 0);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr("0666"));
}

TEST_F(BadSegmentTest, Truncated) {
  Populate();
  ASSERT_EQ(truncate(Path("m").c_str(), 100), 0);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("truncated"));
  ASSERT_EQ(truncate(Path("m").c_str(), 0), 0);
  EXPECT_EQ(OpenStatus().code(), absl::StatusCode::kDataLoss);
}

TEST_F(BadSegmentTest, TruncatedBodyKeepingTheHeader) {
  Populate();
  ASSERT_EQ(truncate(Path("m").c_str(), 8192), 0);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("truncated"));
}

TEST_F(BadSegmentTest, BadMagic) {
  Populate();
  Write<uint64_t>(offsetof(ImmutableHeader, magic), 0x1234);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("not a shared-map segment"));
}

TEST_F(BadSegmentTest, OtherFormatVersion) {
  Populate();
  Write<uint32_t>(offsetof(ImmutableHeader, version), kFormatVersion + 1);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_THAT(st.message(), HasSubstr(absl::StrCat("format version ", kFormatVersion + 1)));
}

TEST_F(BadSegmentTest, CorruptedHeaderChecksum) {
  Populate();
  Write<char>(offsetof(ImmutableHeader, key_name) + 1, 'X');
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("checksum"));
}

TEST_F(BadSegmentTest, OtherLayoutOrTypes) {
  Populate();
  auto expect_wrong = [&](absl::Status st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << what << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr("holds <long (8 bytes), long (8 bytes)>")) << what;
  };
  expect_wrong(SharedMap<int32_t, int64_t>::Open("m", options_).status(), "key size");
  expect_wrong(SharedMap<uint64_t, int64_t>::Open("m", options_).status(), "key type");
  expect_wrong(SharedMap<int64_t, double>::Open("m", options_).status(), "value type");
  expect_wrong(SharedMap<int64_t, SharedString<4>>::Open("m", options_).status(), "string value");
  // SharedStrings of two capacities are two types.
  {
    auto s = SharedMap<SharedString<16>, int64_t>::Open("s", options_);
    ASSERT_TRUE(s.ok());
  }
  absl::Status st = SharedMap<SharedString<24>, int64_t>::Open("s", options_).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
}

TEST_F(BadSegmentTest, CorruptedLock) {
  Populate();
  // A lock word that is no holder token.
  Write<uint64_t>(ShardOffset(2) + offsetof(ShardHeader, lock), uint64_t{0xdead} << 40 | 7);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("shard 2"));
  EXPECT_THAT(st.message(), HasSubstr("names no holder"));
}

TEST_F(BadSegmentTest, CorruptedAllocatorBounds) {
  Populate();
  Write<uint64_t>(kMutableOffset + offsetof(MutableHeader, alloc_end), uint64_t{1} << 40);
  absl::Status st = OpenStatus();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
}

TEST_F(BadSegmentTest, CorruptedRegionWordIsDataLossOnUse) {
  Populate();
  const uint64_t region = ShardOffset(1) + offsetof(ShardHeader, region);
  Write<uint64_t>(region, (uint64_t{1} << 27) | 20);  // far beyond the file
  IntMap m = IntMap::Open("m", options_).value();
  EXPECT_EQ(m.Check().code(), absl::StatusCode::kDataLoss);
  int data_loss = 0;
  for (int64_t k = 0; k < 100; ++k) {
    absl::StatusOr<std::optional<int64_t>> got = m.Get(k);
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
      ++data_loss;
      EXPECT_EQ(m.Insert(k, 1).code(), absl::StatusCode::kDataLoss);
    }
  }
  EXPECT_GT(data_loss, 0);
}

TEST_F(BadSegmentTest, CorruptedSlotsAndCountsFailCheck) {
  Populate();
  const uint64_t region = Read<uint64_t>(ShardOffset(0) + offsetof(ShardHeader, region));
  const uint64_t base = shared_internal::RegionOffset(region);
  {
    // Count off by one.
    const uint64_t count = base + offsetof(shared_internal::RegionHeader, count);
    Write<uint64_t>(count, Read<uint64_t>(count) + 1);
    absl::Status st = IntMap::Open("m", options_)->Check();
    EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
    EXPECT_THAT(st.message(), HasSubstr("counts"));
    Write<uint64_t>(count, Read<uint64_t>(count) - 1);
    EXPECT_TRUE(IntMap::Open("m", options_)->Check().ok());
  }
  // A key changed under its hash: find a full slot, flip a key byte.
  const uint64_t slots = base + shared_internal::kRegionHeaderBytes;
  for (uint64_t i = 0;; ++i) {
    const uint64_t slot = slots + i * 24;
    if (Read<uint64_t>(slot) > shared_internal::kTombstone) {
      Write<uint64_t>(slot + 8, Read<uint64_t>(slot + 8) ^ 0x40);
      break;
    }
  }
  absl::Status st = IntMap::Open("m", options_)->Check();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("hash"));
}

// The initialised mark: only the exact pending value means "not initialised" (a damaged word
// never makes a filled segment look new), and Check() names a damaged one.
TEST_F(BadSegmentTest, CorruptedInitialisedMark) {
  Populate();
  Write<uint64_t>(kMutableOffset + offsetof(MutableHeader, init_pending), 0xdead);
  absl::StatusOr<IntMap> m = IntMap::Open("m", options_);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->initialised());
  absl::Status st = m->Check();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("initialised mark"));
  m->SetInitialised(false);
  EXPECT_FALSE(m->initialised());
  EXPECT_TRUE(m->Check().ok());
}

TEST_F(BadSegmentTest, CorruptedIntentRecord) {
  Populate();
  Write<uint64_t>(ShardOffset(3) + offsetof(ShardHeader, intent_state), 77);
  absl::Status st = OpenStatus();  // open repairs what it can lock: this one it cannot
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("intent"));
}

TEST_F(BadSegmentTest, FreeListCycle) {
  {
    IntMap m = IntMap::Open("m", options_).value();
    for (int64_t k = 0; k < 2000; ++k) ASSERT_TRUE(m.Insert(k, k).ok());
  }
  // Point every non-empty free list's first region at itself.
  const uint64_t heads = kMutableOffset + offsetof(MutableHeader, free_head);
  bool made = false;
  for (uint32_t l = 0; l < shared_internal::kFreeLists && !made; ++l) {
    const uint64_t head = Read<uint64_t>(heads + 8 * l);
    if (head == 0) continue;
    Write<uint64_t>(head + offsetof(shared_internal::RegionHeader, next), head);
    made = true;
  }
  ASSERT_TRUE(made);
  absl::Status st = IntMap::Open("m", options_)->Check();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("free list"));
}

// The shape of what the fuzzer does, deterministically: seeded byte flips anywhere in a populated
// segment, then open, Check() and a few operations. Each either works or fails with a typed
// error; none crashes (the sanitizer configs run this too).
TEST_F(BadSegmentTest, RandomCorruptionsGiveTypedErrors) {
  Populate(3000);
  std::vector<char> pristine;
  {
    uintmax_t size = std::filesystem::file_size(Path("m"));
    pristine.resize(size);
    int fd = open(Path("m").c_str(), O_RDONLY);
    ASSERT_EQ(pread(fd, pristine.data(), size, 0), static_cast<ssize_t>(size));
    close(fd);
  }
  const uint64_t used = Read<MutableHeader>(kMutableOffset).alloc_end;
  std::mt19937_64 rng(16);
  int typed = 0;
  for (int round = 0; round < 400; ++round) {
    std::vector<char> bytes = pristine;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header and shard headers, where a flip matters most.
      const uint64_t limit = rng() % 2 ? 8192 : used;
      bytes[rng() % limit] ^= static_cast<char>(1 << (rng() % 8));
    }
    int fd = open(Path("m").c_str(), O_WRONLY | O_TRUNC);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(fd);
    absl::StatusOr<IntMap> m = IntMap::Open("m", options_);
    std::vector<absl::Status> results;
    results.push_back(m.status());
    if (m.ok()) {
      results.push_back(m->Check());
      results.push_back(m->Size().status());
      results.push_back(m->Get(7).status());
      results.push_back(m->Insert(5000 + round, 1));
      results.push_back(m->UpdateCounter(11, 1, {.default_value = 0}).status());
      results.push_back(m->Erase(12).status());
      results.push_back(m->ToList().status());
    }
    for (const absl::Status& st : results) {
      if (st.ok()) continue;
      ++typed;
      EXPECT_THAT(
          st.code(),
          ::testing::AnyOf(absl::StatusCode::kDataLoss, absl::StatusCode::kFailedPrecondition,
                           absl::StatusCode::kInvalidArgument, absl::StatusCode::kDeadlineExceeded,
                           absl::StatusCode::kResourceExhausted))
          << "round " << round << ": " << st;
    }
  }
  EXPECT_GT(typed, 50);
}

// Fills the file system holding `path` (a file of 64 KiB writes until one fails).
bool FillUp(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::vector<char> chunk(64 << 10, 'x');
  while (write(fd, chunk.data(), chunk.size()) > 0) {
  }
  const bool full = errno == ENOSPC;
  close(fd);
  return full;
}

// A full file system: the open that would make the segment and the write that would grow it are
// ResourceExhausted, never a SIGBUS on a page of a sparse file (a failed posix_fallocate used to
// fall back to ftruncate, whatever its error). In a child with its own mount namespace, over a
// 4 MiB tmpfs mounted on the test's directory.
TEST_F(BadSegmentTest, AFullFileSystemIsResourceExhaustedNotSigbus) {
  enum Exit {
    kOk = 0,
    kNoNamespace = 77,
    kCreateNotExhausted = 10,
    kFillFailed,
    kNoOpen,
    kGrowNotExhausted,
    kLost
  };
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("etsmgr-test", dir_.c_str(), "tmpfs", 0, "size=4m,mode=0700") != 0) {
      _exit(kNoNamespace);
    }
    const std::string filler = Path("filler");
    if (!FillUp(filler)) _exit(kFillFailed);
    absl::StatusOr<IntMap> none = IntMap::Open("m", options_);
    if (none.ok() || none.status().code() != absl::StatusCode::kResourceExhausted) {
      _exit(kCreateNotExhausted);
    }
    unlink(filler.c_str());
    absl::StatusOr<IntMap> m = IntMap::Open("m", options_);
    if (!m.ok()) _exit(kNoOpen);
    if (!FillUp(filler)) _exit(kFillFailed);
    int64_t k = 0;
    absl::Status st;
    for (; k < 10'000'000 && st.ok(); ++k) st = m->Insert(k, k);
    if (st.code() != absl::StatusCode::kResourceExhausted) _exit(kGrowNotExhausted);
    for (int64_t i = 0; i + 1 < k; ++i) {
      if (m->Get(i).value_or(std::nullopt) != std::optional<int64_t>(i)) _exit(kLost);
    }
    _exit(m->Check().ok() ? kOk : kLost);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == kNoNamespace) {
    GTEST_SKIP() << "no mount namespace for a small tmpfs here (needs CAP_SYS_ADMIN)";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), kOk);
}

}  // namespace
}  // namespace etsmgr
