// Save and load (tab2file / file2tab / tabfile_info): round trips for every table type and the
// built-in and user codecs, and damaged, cut short and foreign files (every truncation and every
// byte flipped of a small file, plus crafted files with valid checksums), which must answer
// DataLoss or InvalidArgument and create no table.
#include "etsmgr/table/table_file.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/testing/test_owner.h"
#include "gtest/gtest.h"

namespace etsmgr {

struct Point {
  int32_t x = 0;
  int32_t y = 0;
  bool operator==(const Point&) const = default;
  auto operator<=>(const Point&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Point& p) {
    return H::combine(std::move(h), p.x, p.y);
  }
};

template <>
struct TableCodec<Point> {
  static std::string Tag() { return "test.Point/1"; }
  static void Encode(const Point& p, TableEncoder& out) {
    out.Put(p.x);
    out.Put(p.y);
  }
  static bool Decode(TableDecoder& in, Point* p) { return in.Get(&p->x) && in.Get(&p->y); }
};

// A value whose decoding runs out of memory while g_decode_out_of_memory is set (a decoder that
// allocates, as std::string's does, meeting a memory limit).
std::atomic<bool> g_decode_out_of_memory{false};
struct Hungry {
  int64_t v = 0;
  bool operator==(const Hungry&) const = default;
};

template <>
struct TableCodec<Hungry> {
  static std::string Tag() { return "test.Hungry/1"; }
  static void Encode(const Hungry& h, TableEncoder& out) { out.Put(h.v); }
  static bool Decode(TableDecoder& in, Hungry* h) {
    if (g_decode_out_of_memory.load()) throw std::bad_alloc();
    return in.Get(&h->v);
  }
};

namespace {

using IntTable = Table<int64_t, int64_t>;
using Entries = std::vector<std::pair<int64_t, int64_t>>;

bool IsBag(TableType t) { return t == TableType::kBag || t == TableType::kDuplicateBag; }

std::string TestDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Files in `dir` whose name starts with `prefix`.
std::vector<std::string> FilesStartingWith(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0) out.push_back(e->d_name);
  }
  closedir(d);
  return out;
}

absl::StatusOr<IntTable> LoadInts(const std::string& path, LoadOptions options = {}) {
  return LoadTable<int64_t, int64_t>(path, std::move(options));
}

template <typename E>
std::vector<E> Sorted(std::vector<E> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class TableFileTest : public ::testing::TestWithParam<TableType> {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 1}).value(); }
  void Run(std::function<void(Process&)> fn) { RunInProcess(*node_, std::move(fn)); }
  std::string Path(const std::string& name) {
    return TestDir() + "/" + name + "_" + std::to_string(static_cast<int>(GetParam())) + ".tab";
  }
  std::unique_ptr<Node> node_;
};

TEST_P(TableFileTest, RoundTrip) {
  const std::string path = Path("round_trip");
  Entries saved;
  Run([&](Process&) {
    TableOptions options;
    options.type = GetParam();
    options.access = Access::kPublic;
    options.name = "scores";
    IntTable t = IntTable::New(options).value();
    for (int64_t k = 0; k < 10000; ++k) {
      ASSERT_TRUE(t.Insert(k * 7919 % 100003 - 500, k).ok());
      if (IsBag(GetParam()) && k % 3 == 0) {
        ASSERT_TRUE(t.Insert(k * 7919 % 100003 - 500, -k).ok());
      }
    }
    if (GetParam() == TableType::kDuplicateBag) {
      ASSERT_TRUE(t.Insert(-500, 0).ok());  // A twin.
    }
    saved = t.ToList().value();
    ASSERT_TRUE(SaveTable(t, path).ok());
    // The info answers from the header alone.
    TableFileInfo info = TabFileInfo(path).value();
    EXPECT_EQ(info.name, "scores");
    EXPECT_EQ(info.type, GetParam());
    EXPECT_EQ(info.access, Access::kPublic);
    EXPECT_EQ(info.key_tag, "i64");
    EXPECT_EQ(info.value_tag, "i64");
    EXPECT_EQ(info.objects, saved.size());
    EXPECT_EQ(info.body_bytes, saved.size() * 16);
    EXPECT_EQ(info.version, 1u);
    ASSERT_TRUE(t.Delete().ok());  // Frees the name for the load.
  });
  EXPECT_TRUE(
      FilesStartingWith(TestDir(),
                        "round_trip_" + std::to_string(static_cast<int>(GetParam())) + ".tab.tmp")
          .empty())
      << "a temporary file was left behind";
  Run([&](Process& self) {
    IntTable t = LoadInts(path).value();
    TableInfo info = t.Info().value();
    EXPECT_EQ(info.name, "scores");
    EXPECT_EQ(info.type, GetParam());
    EXPECT_EQ(info.access, Access::kPublic);
    EXPECT_EQ(info.owner, self.self());
    EXPECT_EQ(Sorted(t.ToList().value()), Sorted(saved));
    if (GetParam() == TableType::kOrderedSet) {
      EXPECT_EQ(t.ToList().value(), saved);  // In order.
    }
    // The name is taken now: a second load fails cleanly, unless renamed by the options.
    EXPECT_EQ(LoadInts(path).status().code(), absl::StatusCode::kAlreadyExists);
    LoadOptions options;
    options.name = "";
    options.access = Access::kPrivate;
    IntTable copy = LoadInts(path, options).value();
    EXPECT_EQ(copy.Info().value().name, "");
    EXPECT_EQ(copy.Info().value().access, Access::kPrivate);
    EXPECT_EQ(copy.Size().value(), saved.size());
  });
}

TEST_P(TableFileTest, EmptyTableAndOverwrite) {
  const std::string path = Path("empty");
  Run([&](Process&) {
    TableOptions options;
    options.type = GetParam();
    IntTable t = IntTable::New(options).value();
    ASSERT_TRUE(SaveTable(t, path).ok());
    EXPECT_EQ(TabFileInfo(path).value().objects, 0u);
    EXPECT_EQ(LoadInts(path).value().Size().value(), 0u);
    ASSERT_TRUE(t.Insert(1, 2).ok());
    ASSERT_TRUE(SaveTable(t, path).ok());  // Replaces the old file.
    EXPECT_EQ(LoadInts(path).value().Get(1).value(), 2);
  });
}

TEST_P(TableFileTest, StringsAndUserTypes) {
  const std::string path = Path("types");
  Run([&](Process&) {
    TableOptions options;
    options.type = GetParam();
    auto strings = Table<std::string, std::string>::New(options).value();
    std::string binary("a\0b\xff", 4);
    ASSERT_TRUE(strings.Insert("", "empty key").ok());
    ASSERT_TRUE(strings.Insert("binary", binary).ok());
    ASSERT_TRUE(strings.Insert(std::string(100000, 'x'), "").ok());
    ASSERT_TRUE(SaveTable(strings, path).ok());
    EXPECT_EQ(TabFileInfo(path).value().key_tag, "string");
    auto loaded = LoadTable<std::string, std::string>(path).value();
    EXPECT_EQ(Sorted(loaded.ToList().value()), Sorted(strings.ToList().value()));
    EXPECT_EQ(loaded.Get("binary").value(), binary);

    auto points = Table<Point, std::vector<std::pair<double, bool>>>::New(options).value();
    ASSERT_TRUE(points.Insert(Point{1, -2}, {{0.5, true}, {-1e300, false}}).ok());
    ASSERT_TRUE(points.Insert(Point{3, 4}, {}).ok());
    ASSERT_TRUE(SaveTable(points, path).ok());
    TableFileInfo info = TabFileInfo(path).value();
    EXPECT_EQ(info.key_tag, "test.Point/1");
    EXPECT_EQ(info.value_tag, "vector<pair<f64,bool>>");
    auto loaded_points = LoadTable<Point, std::vector<std::pair<double, bool>>>(path).value();
    EXPECT_EQ(Sorted(loaded_points.ToList().value()), Sorted(points.ToList().value()));
    // The same file read as other types: refused, naming both.
    absl::StatusOr<IntTable> wrong = LoadInts(path);
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << wrong.status();
    EXPECT_NE(wrong.status().message().find("test.Point/1"), std::string::npos) << wrong.status();
    EXPECT_NE(wrong.status().message().find("<i64, i64>"), std::string::npos) << wrong.status();
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, TableFileTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag),
                         [](const ::testing::TestParamInfo<TableType>& info) {
                           std::string name = ToString(info.param);
                           name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
                           return name;
                         });

// Saving needs read access; a deleted table, a null handle and a missing directory are errors.
TEST(TableFileErrorsTest, AccessAndPaths) {
  auto node = Node::Create({.schedulers = 1}).value();
  const std::string path = TestDir() + "/access.tab";
  TableOptions options;
  options.access = Access::kPrivate;
  OwnedTable owned = SpawnOwner(*node, options, /*seed=*/10);
  IntTable t = IntTable::Attach(owned.table).value();
  RunInProcess(*node, [&](Process&) {
    absl::Status denied = SaveTable(t, path);
    EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
    EXPECT_NE(denied.message().find("tab2file"), std::string::npos) << denied;
    EXPECT_EQ(SaveTable(IntTable(), path).code(), absl::StatusCode::kFailedPrecondition);
    IntTable mine = IntTable::New().value();
    absl::Status no_dir = SaveTable(mine, TestDir() + "/no/such/dir/x.tab");
    EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound) << no_dir;
    EXPECT_NE(no_dir.message().find("no/such/dir/x.tab"), std::string::npos) << no_dir;
    ASSERT_TRUE(mine.Delete().ok());
    EXPECT_EQ(SaveTable(mine, path).code(), absl::StatusCode::kNotFound);
    absl::StatusOr<IntTable> missing = LoadInts(TestDir() + "/missing.tab");
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
    EXPECT_EQ(TabFileInfo(TestDir() + "/missing.tab").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(LoadInts(TestDir()).status().code(),
              absl::StatusCode::kInvalidArgument);  // A directory.
  });
  // Outside a process a file can be saved (a read) but not loaded (nobody would own the table).
  absl::Status from_thread = SaveTable(t, path);
  EXPECT_EQ(from_thread.code(), absl::StatusCode::kPermissionDenied);  // Private.
  Send(owned.owner, StopOwner{});
}

// Review findings: a FIFO does not hang a load, a huge foreign file is refused before it is read
// (no allocation of its size), a saved file is its owner's alone (0600).
TEST(TableFileErrorsTest, FifoHugeFileAndMode) {
  auto node = Node::Create({.schedulers = 1}).value();
  const std::string fifo = TestDir() + "/fifo.tab";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string huge = TestDir() + "/huge.tab";
  {
    std::ofstream out(huge, std::ios::binary | std::ios::trunc);
    out << "not a table file";
  }
  ASSERT_EQ(::truncate(huge.c_str(), off_t{1} << 40), 0);  // 1 TiB, sparse.
  const std::string saved = TestDir() + "/mode.tab";
  RunInProcess(*node, [&](Process&) {
    absl::StatusOr<IntTable> from_fifo = LoadInts(fifo);
    EXPECT_EQ(from_fifo.status().code(), absl::StatusCode::kInvalidArgument) << from_fifo.status();
    EXPECT_NE(from_fifo.status().message().find("not a regular file"), std::string::npos);
    EXPECT_EQ(TabFileInfo(fifo).status().code(), absl::StatusCode::kInvalidArgument);
    absl::StatusOr<IntTable> from_huge = LoadInts(huge);
    EXPECT_FALSE(from_huge.ok());
    EXPECT_NE(from_huge.status().code(), absl::StatusCode::kResourceExhausted)
        << "read before its header was checked: " << from_huge.status();
    IntTable t = IntTable::New().value();
    ASSERT_TRUE(t.Insert(1, 2).ok());
    ASSERT_TRUE(SaveTable(t, saved).ok());
    struct stat st;
    ASSERT_EQ(::stat(saved.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    ASSERT_TRUE(t.Delete().ok());
  });
  ::unlink(fifo.c_str());
  ::unlink(huge.c_str());
}

// A valid header over a body that is not what it checksums (say a sparse file of zeros) is
// refused by its checksum before the file's size is allocated; a file larger than the machine's
// memory is refused before it is read at all (review findings: allocating first ended a damaged
// file's load in the OOM killer).
// Memory running out while the objects are decoded (or the table is filled) is an error, as
// for the file's bytes: ResourceExhausted naming the file, no exception out of LoadTable.
TEST(TableFileErrorsTest, OutOfMemoryWhileDecodingIsResourceExhausted) {
  auto node = Node::Create({.schedulers = 1}).value();
  const std::string path = TestDir() + "/hungry.tab";
  RunInProcess(*node, [&](Process&) {
    auto t = Table<int64_t, Hungry>::New().value();
    ASSERT_TRUE(t.Insert(1, Hungry{2}).ok());
    ASSERT_TRUE(SaveTable(t, path).ok());
    ASSERT_TRUE(t.Delete().ok());
    g_decode_out_of_memory = true;
    absl::StatusOr<Table<int64_t, Hungry>> loaded = LoadTable<int64_t, Hungry>(path);
    g_decode_out_of_memory = false;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted) << loaded.status();
    EXPECT_NE(loaded.status().message().find("file2tab(\"" + path + "\")"), std::string::npos)
        << loaded.status();
    // And the same file loads once memory is there again.
    loaded = LoadTable<int64_t, Hungry>(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->Get(1).value(), Hungry{2});
  });
}

TEST(TableFileErrorsTest, ADamagedBodyIsRefusedBeforeItsSizeIsAllocated) {
  namespace tf = table_file_internal;
  auto node = Node::Create({.schedulers = 1}).value();
  const std::string path = TestDir() + "/sparse_body.tab";
  RunInProcess(*node, [&](Process&) {
    IntTable t = IntTable::New().value();
    ASSERT_TRUE(t.Insert(1, 2).ok());
    ASSERT_TRUE(SaveTable(t, path).ok());
    ASSERT_TRUE(t.Delete().ok());
  });
  const std::string saved = Slurp(path);
  TableFileInfo info;
  const size_t header_bytes = tf::ParseHeader(saved, saved.size(), "test", path, &info).value();
  // Rewrites the header for a body of `body_bytes` (its checksum kept: the zeros do not match
  // it) and makes the file that long, sparse.
  auto make_sparse = [&](uint64_t body_bytes) {
    info.body_bytes = body_bytes;
    const std::string header = tf::EncodeHeader(info);
    ASSERT_EQ(header.size(), header_bytes);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out << header;
    }
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(header_bytes + body_bytes)), 0);
  };
  constexpr uint64_t kBody = uint64_t{512} << 20;
  make_sparse(kBody);
  // The peak resident size, reset first (VmHWM; "5" to clear_refs resets it, Linux 4.0+): an
  // earlier, higher peak of this binary must not hide this load's.
  {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
  }
  auto peak_kib = [] {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return 0L;
  };
  const long before = peak_kib();
  ASSERT_GT(before, 0) << "no VmHWM in /proc/self/status";
  RunInProcess(*node, [&](Process&) {
    absl::StatusOr<IntTable> loaded = LoadInts(path);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_NE(loaded.status().message().find("checksum"), std::string::npos) << loaded.status();
  });
  // The peak grew by far less than the body's 512 MiB.
  EXPECT_LT(peak_kib() - before, 128 * 1024)
      << "the damaged body's size was allocated before its checksum was checked";

  const uint64_t memory = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                          static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  make_sparse(memory);
  RunInProcess(*node, [&](Process&) {
    absl::StatusOr<IntTable> loaded = LoadInts(path);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kResourceExhausted) << loaded.status();
    EXPECT_NE(loaded.status().message().find("exceed this machine's memory"), std::string::npos)
        << loaded.status();
  });
  ::unlink(path.c_str());
}

// --- Damaged files: a small valid file, then every way of breaking it.

class DamagedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = Node::Create({.schedulers = 1}).value();
    path_ = TestDir() + "/damaged.tab";
    good_path_ = TestDir() + "/good.tab";
    RunInProcess(*node_, [&](Process&) {
      TableOptions options;
      options.name = "victim";
      auto t = Table<int64_t, std::string>::New(options).value();
      ASSERT_TRUE(t.Insert(1, "one").ok());
      ASSERT_TRUE(t.Insert(2, "two").ok());
      ASSERT_TRUE(t.Insert(3, "three").ok());
      ASSERT_TRUE(SaveTable(t, good_path_).ok());
    });
    good_ = Slurp(good_path_);
    ASSERT_GT(good_.size(), 64u);
  }

  // Loads `bytes` as a file and expects `code` (or any of DataLoss / InvalidArgument when
  // `code` is kUnknown), and that no table was created.
  void ExpectRefused(const std::string& bytes, absl::StatusCode code, const std::string& why) {
    Spit(path_, bytes);
    RunInProcess(*node_, [&](Process&) {
      absl::StatusOr<Table<int64_t, std::string>> t =
          LoadTable<int64_t, std::string>(path_, LoadOptions{.name = "loaded"});
      ASSERT_FALSE(t.ok()) << why;
      if (code == absl::StatusCode::kUnknown) {
        EXPECT_TRUE(t.status().code() == absl::StatusCode::kDataLoss ||
                    t.status().code() == absl::StatusCode::kInvalidArgument)
            << why << ": " << t.status();
      } else {
        EXPECT_EQ(t.status().code(), code) << why << ": " << t.status();
      }
      EXPECT_NE(t.status().message().find("file2tab"), std::string::npos) << t.status();
      EXPECT_EQ(FindTable(*node_, "loaded").status().code(), absl::StatusCode::kNotFound) << why;
    });
  }

  template <typename T>
  std::string With(size_t at, T value, bool reseal = true) {
    std::string bytes = good_;
    std::memcpy(bytes.data() + at, &value, sizeof value);
    if (reseal) table_file_internal::Reseal(&bytes);
    return bytes;
  }

  std::unique_ptr<Node> node_;
  std::string path_;
  std::string good_path_;
  std::string good_;
};

// A file whose key is a NaN (no table holds one: SaveTable never writes it) is damaged.
TEST_F(DamagedFileTest, ANaNKeyIsDataLoss) {
  RunInProcess(*node_, [&](Process&) {
    auto t = Table<double, int64_t>::New().value();
    ASSERT_TRUE(t.Insert(1.5, 15).ok());
    ASSERT_TRUE(SaveTable(t, path_).ok());
  });
  std::string bytes = Slurp(path_);
  const double key = 1.5;
  const size_t at = bytes.rfind(std::string_view(reinterpret_cast<const char*>(&key), sizeof key));
  ASSERT_NE(at, std::string::npos) << "the key's bytes are not in the file";
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::memcpy(bytes.data() + at, &nan, sizeof nan);
  table_file_internal::Reseal(&bytes);
  Spit(path_, bytes);
  RunInProcess(*node_, [&](Process&) {
    absl::StatusOr<Table<double, int64_t>> loaded = LoadTable<double, int64_t>(path_);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
    EXPECT_NE(loaded.status().message().find("NaN"), std::string::npos) << loaded.status();
  });
}

TEST_F(DamagedFileTest, TheGoodFileLoads) {
  Spit(path_, good_);
  RunInProcess(*node_, [&](Process&) {
    auto t = LoadTable<int64_t, std::string>(path_, LoadOptions{.name = "loaded"}).value();
    EXPECT_EQ(t.Get(3).value(), "three");
  });
  std::string resealed = good_;
  table_file_internal::Reseal(&resealed);
  EXPECT_EQ(resealed, good_);
}

TEST_F(DamagedFileTest, EveryTruncation) {
  for (size_t n = 0; n < good_.size(); ++n) {
    ExpectRefused(good_.substr(0, n), absl::StatusCode::kUnknown,
                  "cut to " + std::to_string(n) + " bytes");
    if (n >= 8) {
      Spit(path_, good_.substr(0, n));
      absl::StatusOr<TableFileInfo> info = TabFileInfo(path_);
      EXPECT_EQ(info.status().code(), absl::StatusCode::kDataLoss) << n << ": " << info.status();
    }
  }
  ExpectRefused(good_ + "x", absl::StatusCode::kDataLoss, "a byte appended");
}

TEST_F(DamagedFileTest, EveryByteFlipped) {
  for (size_t i = 0; i < good_.size(); ++i) {
    std::string bytes = good_;
    bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
    // The magic and the version: not a table file of this format; anything else: damaged.
    ExpectRefused(bytes, i < 12 ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kDataLoss,
                  "byte " + std::to_string(i) + " flipped");
  }
}

// Files whose checksums are right but whose contents are not: what the checks behind the
// checksums catch.
TEST_F(DamagedFileTest, ConsistentChecksumsWrongContents) {
  const auto kDataLoss = absl::StatusCode::kDataLoss;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  ExpectRefused(With<uint64_t>(24, 4), kDataLoss, "count one too high");
  ExpectRefused(With<uint64_t>(24, 2), kDataLoss, "count one too low (bytes left over)");
  ExpectRefused(With<uint64_t>(24, ~uint64_t{0}), kDataLoss, "count absurd");
  ExpectRefused(With<uint64_t>(32, 1), kDataLoss, "body size disagrees with the file");
  ExpectRefused(With<uint8_t>(16, 9), kDataLoss, "unknown table type");
  ExpectRefused(With<uint8_t>(17, 9), kDataLoss, "unknown access");
  ExpectRefused(With<uint32_t>(8, 2), kInvalid, "another format version");
  ExpectRefused(With<uint32_t>(44, 0xffffff), kDataLoss, "a huge name length");
  ExpectRefused("this is a text file, not a table\n", kInvalid, "a foreign file");
  ExpectRefused("", kInvalid, "an empty file");
  // The first object's string length made huge: the object no longer decodes.
  const size_t header =
      TabFileInfo(good_path_).value().file_bytes - TabFileInfo(good_path_).value().body_bytes;
  ExpectRefused(With<uint8_t>(header + 8, 0x7f), kDataLoss, "a string runs past the end");
  // A set file with a repeated key (made from scratch, checksums right).
  {
    TableFileInfo info = TabFileInfo(good_path_).value();
    std::string body;
    TableEncoder out(&body);
    for (int64_t k : {5, 6, 5}) {
      out.Put(k);
      out.Put(std::string("v"));
    }
    info.objects = 3;
    info.body_bytes = body.size();
    info.body_crc = table_file_internal::Crc32c(0, body.data(), body.size());
    const std::string crafted = table_file_internal::EncodeHeader(info) + body;
    ExpectRefused(crafted, kDataLoss, "a set with a repeated key");
    info.type = TableType::kDuplicateBag;  // The same objects are fine in a duplicate_bag.
    Spit(path_, table_file_internal::EncodeHeader(info) + body);
    RunInProcess(*node_, [&](Process&) {
      auto t = LoadTable<int64_t, std::string>(path_, LoadOptions{.name = "loaded"});
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_EQ(t->Size().value(), 3u);
    });
  }
  // A file of other types: InvalidArgument, naming the types.
  RunInProcess(*node_, [&](Process&) {
    absl::StatusOr<Table<std::string, std::string>> other =
        LoadTable<std::string, std::string>(good_path_, LoadOptions{.name = "loaded"});
    EXPECT_EQ(other.status().code(), kInvalid) << other.status();
  });
}

// A save while writers run: every object present throughout is in the file exactly once (the
// file is decoded as it is, repeats included), and the file loads.
class ConcurrentSaveTest : public ::testing::TestWithParam<TableType> {};

TEST_P(ConcurrentSaveTest, ObjectsPresentThroughoutAreSavedOnce) {
  auto node = Node::Create({.schedulers = 2}).value();
  TableOptions options;
  options.type = GetParam();
  options.access = Access::kPublic;
  OwnedTable owned = SpawnOwner(*node, options);
  IntTable t = IntTable::Attach(owned.table).value();
  constexpr int64_t kStable = 20000;  // Keys 0..kStable-1 stay; writers churn keys above.
  for (int64_t k = 0; k < kStable; ++k) ASSERT_TRUE(t.Insert(k, k).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> churned{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (int64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const int64_t k = kStable + (i * 2 + w) % 5000;
        ASSERT_TRUE(t.Insert(k, k).ok());
        if (i % 3 == 0) {
          ASSERT_TRUE(t.Erase(kStable + (i * 7 + w) % 5000).ok());
        }
        churned.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  const std::string path =
      TestDir() + "/concurrent_" + std::to_string(static_cast<int>(GetParam())) + ".tab";
  // Writes under way before the first save (a deadline, not a sleep).
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
       churned.load() == 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::yield();
  }
  // At least three saves, and as many more (up to 50) as it takes for writes to have happened
  // during one: a save that never overlapped a write proves nothing.
  int overlapped = 0;
  for (int round = 0; round < 50 && (round < 3 || overlapped == 0); ++round) {
    const int64_t before = churned.load();
    ASSERT_TRUE(SaveTable(t, path).ok());
    if (churned.load() > before) ++overlapped;
    TableFileInfo info;
    std::vector<std::pair<int64_t, int64_t>> objects =
        table_file_internal::DecodeFile<int64_t, int64_t>(Slurp(path), path, &info).value();
    std::map<int64_t, int> seen;
    for (const auto& [k, v] : objects) {
      ASSERT_EQ(v, k);
      ++seen[k];
    }
    for (int64_t k = 0; k < kStable; ++k) ASSERT_EQ(seen[k], 1) << "key " << k;
    if (GetParam() != TableType::kDuplicateBag) {  // (There the churned keys have twins.)
      for (const auto& [k, n] : seen) ASSERT_EQ(n, 1) << "key " << k << " saved twice";
    }
  }
  stop = true;
  for (auto& w : writers) w.join();
  EXPECT_GT(overlapped, 0) << "no save ran while the writers wrote: the test proves nothing";
  RunInProcess(
      *node, [&](Process&) { EXPECT_GE(LoadInts(path).value().Size().value(), size_t{kStable}); });
  Send(owned.owner, StopOwner{});
}

INSTANTIATE_TEST_SUITE_P(AllTypes, ConcurrentSaveTest,
                         ::testing::Values(TableType::kSet, TableType::kOrderedSet, TableType::kBag,
                                           TableType::kDuplicateBag),
                         [](const ::testing::TestParamInfo<TableType>& info) {
                           std::string name = ToString(info.param);
                           name.erase(std::remove(name.begin(), name.end(), '_'), name.end());
                           return name;
                         });

}  // namespace
}  // namespace etsmgr
