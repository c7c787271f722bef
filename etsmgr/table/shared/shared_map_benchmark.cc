// Shared-map benchmarks against the in-process table, in one run:
// `bazel run -c opt //etsmgr/table/shared:shared_map_benchmark`.
//
// 1M random int64 keys, one thread: insert (into a fresh table / segment), lookup and
// update_counter (in a shuffled order) on Table<int64_t, int64_t> (set) on the heap, the same
// Table API with shared storage (TableOptions::shared, in /dev/shm: what users call, judged), and
// the raw SharedMap<int64_t, int64_t> underneath (for reference). Each shared figure carries
// `ratio_to_table`: its rate over the median rate of the in-process table measured just before in
// this run (target >= 2/3). `--shared_dir=DIR` puts the segments in DIR instead of /dev/shm: a
// tmpfs mounted with huge pages (`mount -t tmpfs -o huge=within_size tmpfs DIR`) shows the
// segment on 2 MiB pages, as the in-process table's big arrays are (README, "Surviving a crash of
// the whole program").
// Attach: a writer process (a fresh copy of this binary) fills a 1M-entry segment, keeps
// updating counters and is SIGKILLed; the figure is the time of the next Open (open, map,
// validate the header, try-lock and repair what the writer left), not of Check().
// Sanity checks (a failed write, a missed lookup, a wrong size, a failed Check() after the kill)
// stop the run with an error, also in --smoke runs (20k keys).
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/table.h"
#include "tools/bench/report.h"

extern char** environ;

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
using IntShared = SharedMap<int64_t, int64_t>;

int64_t Keys() { return bench::Scaled(1'000'000, 20'000); }

const std::vector<int64_t>& RandomKeys() {
  static const std::vector<int64_t> keys = [] {
    std::mt19937_64 rng(42);
    std::vector<int64_t> v(static_cast<size_t>(Keys()));
    for (int64_t& k : v) k = static_cast<int64_t>(rng());
    return v;
  }();
  return keys;
}

const std::vector<int64_t>& ShuffledKeys() {
  static const std::vector<int64_t> keys = [] {
    std::vector<int64_t> v = RandomKeys();
    std::shuffle(v.begin(), v.end(), std::mt19937_64(7));
    return v;
  }();
  return keys;
}

// --shared_dir=DIR: the segments live in DIR (say, a tmpfs mounted with huge pages) instead of
// /dev/shm.
std::string g_shared_dir;

std::string SegmentName(const char* what) {
  return absl::StrCat("etsmgr-bench-", getpid(), "-", what);
}

SharedMapOptions DirOptions() {
  SharedMapOptions options;
  options.directory = g_shared_dir;
  return options;
}

// --- The in-process table (as etsmgr/table/table_benchmark.cc sets it up).

struct Stop {};

Node& SharedNode() {
  static Node* node = [] {
    RuntimeOptions options;
    options.schedulers = 1;
    return Node::Create(options).value().release();
  }();
  return *node;
}

struct BenchTable {
  IntTable table;
  Pid owner;
  ~BenchTable() {
    (void)table.Delete();
    Send(owner, Stop{});
    malloc_trim(0);
  }
};

// A heap table, or with `segment` a table with shared storage in /dev/shm/<segment>.
std::unique_ptr<BenchTable> NewTable(const std::string& segment = "") {
  auto made = std::make_shared<std::promise<IntTable>>();
  TableOptions options;
  options.access = Access::kPublic;
  if (!segment.empty()) {
    (void)IntShared::Remove(segment, DirOptions());
    options.shared = SharedStorage();
    options.shared->segment = segment;
    options.shared->map.directory = g_shared_dir;
  }
  Pid owner = SharedNode()
                  .Spawn([made, options](Process& self) -> Task<void> {
                    made->set_value(IntTable::New(options).value());
                    co_await self.Receive<Stop>();
                  })
                  .value();
  auto t = std::make_unique<BenchTable>();
  t->table = made->get_future().get();
  t->owner = owner;
  return t;
}

// A fresh shared map, removed (unlinked and unmapped) with the handle.
struct BenchShared {
  explicit BenchShared(const char* what) : name(SegmentName(what)) {
    (void)IntShared::Remove(name, DirOptions());
    SharedMapOptions options = DirOptions();
    options.mode = SharedMapOptions::Mode::kCreate;
    map = IntShared::Open(name, options).value();
  }
  ~BenchShared() { (void)IntShared::Remove(name, DirOptions()); }
  std::string name;
  IntShared map;
};

// Rates of the in-process table in this run, per figure; the shared figures divide by the median.
std::vector<double> g_table_rates[3];
enum Figure { kInsert, kLookup, kUpdate };
// The heap table, the Table API over shared storage, the raw SharedMap.
enum Kind { kHeap, kSharedTable, kRawMap };

// A table of the kind asked for (the raw map kind has none: BenchShared below).
std::unique_ptr<BenchTable> NewTableOf(Kind kind, const char* what) {
  return NewTable(kind == kSharedTable ? SegmentName(what) : "");
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

void Median5(benchmark::internal::Benchmark* b) { b->Repetitions(5); }

template <typename Body>
double Rate(int64_t n, Body&& body) {
  const auto start = std::chrono::steady_clock::now();
  body();
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return static_cast<double>(n) / took.count();
}

void Report(benchmark::State& state, Figure figure, Kind kind, double rate) {
  state.counters["rate_per_s"] = rate;
  if (kind == kHeap) {
    g_table_rates[figure].push_back(rate);
  } else if (double table = Median(g_table_rates[figure]); table > 0) {
    state.counters["ratio_to_table"] = rate / table;
  }
}

// --- Insert: a fresh table each iteration.

template <Kind kKind>
void Insert1M(benchmark::State& state) {
  int64_t failed = 0;
  bool complete = true;
  for (auto _ : state) {
    double rate = 0;
    if constexpr (kKind == kRawMap) {
      BenchShared s("insert");
      rate = Rate(Keys(), [&] {
        for (int64_t k : RandomKeys()) failed += !s.map.Insert(k, k).ok();
      });
      complete = complete && s.map.Size().value_or(0) == RandomKeys().size();
    } else {
      auto t = NewTableOf(kKind, "insert-table");
      rate = Rate(Keys(), [&] {
        for (int64_t k : RandomKeys()) failed += !t->table.Insert(k, k).ok();
      });
      complete = complete && t->table.Size().value_or(0) == RandomKeys().size();
    }
    state.SetIterationTime(static_cast<double>(Keys()) / rate);
    Report(state, kInsert, kKind, rate);
  }
  state.SetItemsProcessed(state.iterations() * Keys());
  if (failed > 0 || !complete) state.SkipWithError("an insert failed or a key is missing");
}
void BM_TableInsert1M(benchmark::State& state) { Insert1M<kHeap>(state); }
void BM_SharedInsert1M(benchmark::State& state) { Insert1M<kSharedTable>(state); }
void BM_SharedMapInsert1M(benchmark::State& state) { Insert1M<kRawMap>(state); }
BENCHMARK(BM_TableInsert1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedInsert1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedMapInsert1M)->Iterations(1)->UseManualTime()->Apply(Median5);

// --- Lookup and update_counter over a filled table, one pass over the shuffled keys.

template <Kind kKind, Figure kFigure>
void Pass1M(benchmark::State& state) {
  constexpr bool kRaw = kKind == kRawMap;
  std::unique_ptr<BenchTable> t;
  std::unique_ptr<BenchShared> s;
  if constexpr (kRaw) {
    s = std::make_unique<BenchShared>("pass");
    for (int64_t k : RandomKeys()) (void)s->map.Insert(k, 0);
  } else {
    t = NewTableOf(kKind, "pass-table");
    for (int64_t k : RandomKeys()) (void)t->table.Insert(k, 0);
  }
  int64_t bad = 0;
  for (auto _ : state) {
    const std::vector<int64_t>& keys = ShuffledKeys();
    double rate = Rate(Keys(), [&] {
      for (int64_t k : keys) {
        if constexpr (kFigure == kLookup) {
          absl::StatusOr<std::optional<int64_t>> v = kRaw ? s->map.Get(k) : t->table.Get(k);
          bad += !(v.ok() && v->has_value());
        } else {
          absl::StatusOr<int64_t> v =
              kRaw ? s->map.UpdateCounter(k, 1) : t->table.UpdateCounter(k, 1);
          bad += !v.ok();
          benchmark::DoNotOptimize(v);
        }
      }
    });
    state.SetIterationTime(static_cast<double>(Keys()) / rate);
    Report(state, kFigure, kKind, rate);
  }
  state.SetItemsProcessed(state.iterations() * Keys());
  if (bad > 0) state.SkipWithError("a lookup or update of a present key failed");
}
void BM_TableLookup1M(benchmark::State& state) { Pass1M<kHeap, kLookup>(state); }
void BM_SharedLookup1M(benchmark::State& state) { Pass1M<kSharedTable, kLookup>(state); }
void BM_SharedMapLookup1M(benchmark::State& state) { Pass1M<kRawMap, kLookup>(state); }
void BM_TableUpdateCounter1M(benchmark::State& state) { Pass1M<kHeap, kUpdate>(state); }
void BM_SharedUpdateCounter1M(benchmark::State& state) { Pass1M<kSharedTable, kUpdate>(state); }
void BM_SharedMapUpdateCounter1M(benchmark::State& state) { Pass1M<kRawMap, kUpdate>(state); }
BENCHMARK(BM_TableLookup1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedLookup1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedMapLookup1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_TableUpdateCounter1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedUpdateCounter1M)->Iterations(1)->UseManualTime()->Apply(Median5);
BENCHMARK(BM_SharedMapUpdateCounter1M)->Iterations(1)->UseManualTime()->Apply(Median5);

// --- Attach after the writer was killed.

constexpr char kWriterFlag[] = "--shared_writer=";

// The writer process: fills the segment, says so on stdout, then updates counters until killed.
[[noreturn]] void WriterMain(const std::string& name) {
  SharedMapOptions options = DirOptions();
  options.mode = SharedMapOptions::Mode::kCreate;
  absl::StatusOr<IntShared> m = IntShared::Open(name, options);
  if (!m.ok()) _exit(2);
  for (int64_t k : RandomKeys()) {
    if (!m->Insert(k, 0).ok()) _exit(3);
  }
  if (write(1, "r", 1) != 1) _exit(4);
  for (uint64_t i = 0;; ++i) (void)m->UpdateCounter(RandomKeys()[i % RandomKeys().size()], 1);
}

void BM_SharedAttachAfterKill(benchmark::State& state) {
  const std::string name = SegmentName("attach");
  std::string error;
  double first_us = 0;
  std::vector<double> again_us;
  for (auto _ : state) {
    (void)IntShared::Remove(name, DirOptions());
    int out[2];
    if (pipe(out) != 0) {
      error = "pipe";
      break;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::string flag = absl::StrCat(kWriterFlag, name);
    std::string smoke = bench::Smoke() ? "--smoke" : "--nosmoke";
    char* argv[] = {const_cast<char*>("/proc/self/exe"), flag.data(), smoke.data(), nullptr};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    char ready = 0;
    if (rc != 0 || read(out[0], &ready, 1) != 1) {
      error = "the writer did not start or fill the segment";
      close(out[0]);
      break;
    }
    close(out[0]);
    // Let it update for a moment, then kill it (mid-write more often than not).
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(300);
    while (std::chrono::steady_clock::now() < until) {
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);

    SharedMapOptions options = DirOptions();
    options.mode = SharedMapOptions::Mode::kOpen;
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<IntShared> m = IntShared::Open(name, options);
    const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(took.count() / 1e6);
    first_us = took.count();
    if (!m.ok() || m->Size().value_or(0) != RandomKeys().size() || !m->Check().ok()) {
      error =
          absl::StrCat("after the kill: ", m.ok() ? m->Check().ToString() : m.status().ToString());
      break;
    }
    for (int i = 0; i < 9; ++i) {
      const auto again = std::chrono::steady_clock::now();
      absl::StatusOr<IntShared> m2 = IntShared::Open(name, options);
      again_us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - again)
              .count());
    }
  }
  (void)IntShared::Remove(name, DirOptions());
  state.counters["attach_us"] = first_us;
  state.counters["reattach_us"] = Median(again_us);
  if (!error.empty()) state.SkipWithError(error.c_str());
}
BENCHMARK(BM_SharedAttachAfterKill)->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace etsmgr

int main(int argc, char** argv) {
  // --shared_dir=DIR travels to the fresh processes of repeated runs (and the writer) in the
  // environment; Google Benchmark never sees it.
  constexpr char kDirFlag[] = "--shared_dir=";
  constexpr char kDirEnv[] = "ETSMGR_BENCH_SHARED_DIR";
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], kDirFlag, std::strlen(kDirFlag)) == 0) {
      setenv(kDirEnv, argv[i] + std::strlen(kDirFlag), 1);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  if (const char* dir = std::getenv(kDirEnv); dir != nullptr) etsmgr::g_shared_dir = dir;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], etsmgr::kWriterFlag, std::strlen(etsmgr::kWriterFlag)) == 0) {
      for (int j = 1; j < argc; ++j) {
        if (std::strcmp(argv[j], "--smoke") == 0) etsmgr::bench::EnableSmoke();
      }
      etsmgr::WriterMain(argv[i] + std::strlen(etsmgr::kWriterFlag));
    }
  }
  using etsmgr::bench::Better;
  return etsmgr::bench::RunWithTargets(
      argc, argv,
      {
          {"BM_SharedInsert1M*", "ratio_to_table", 2.0 / 3, Better::kHigher, "x",
           "shared table insert, 1M random int64 keys, vs in-process table"},
          {"BM_SharedLookup1M*", "ratio_to_table", 2.0 / 3, Better::kHigher, "x",
           "shared table lookup, 1M keys, vs in-process table"},
          {"BM_SharedUpdateCounter1M*", "ratio_to_table", 2.0 / 3, Better::kHigher, "x",
           "shared table update_counter, 1M keys, vs in-process table"},
          {"BM_SharedAttachAfterKill*", "attach_us", 1000, Better::kLower, "us",
           "attach a 1M-entry segment after its writer was killed"},
      });
}
