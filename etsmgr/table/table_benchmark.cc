// Table benchmarks: `bazel run -c opt //etsmgr/table:table_benchmark`.
// Erlang/OTP 25 ETS figures and the unlocked absl::flat_hash_map ceiling on the same VM are in
// shared/notes/machine-figures.md; the targets below come from the tables issue, the 1M-key ones
// raised by the bench issue's "closer to the limit" (lookup 25M/s on one thread and 40M/s on two,
// update_counter 20M/s, insert 10M/s, ordered_set lookup 5M/s).
// Sanity checks (a failed insert, a missed lookup of a present key, a failed update, a wrong
// size) stop the run with an error, also in --smoke runs, where the 1M-key tables have 20k keys.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "etsmgr/process/node.h"
#include "etsmgr/table/table.h"
#include "etsmgr/table/table_file.h"
#include "tools/bench/memory.h"
#include "tools/bench/process_helpers.h"
#include "tools/bench/report.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

// The "1M" tables' size (20k keys in a smoke run).
int64_t Keys() { return bench::Scaled(1'000'000, 20'000); }

struct Stop {};

Node& SharedNode() {
  static Node* node = [] {
    RuntimeOptions options;
    options.schedulers = 1;
    return Node::Create(options).value().release();
  }();
  return *node;
}

// A public table owned by a process that stays alive until Stop; usable from benchmark threads.
struct BenchTable {
  IntTable table;
  Pid owner;
  // Deletes the table here and now (it is public) and hands its memory back to the system, so
  // that the next benchmark starts from fresh pages rather than from this one's leftovers (a
  // 1M-entry table built in a heap churned by the previous benchmarks measured up to 1.7x slower
  // to look up on this VM).
  ~BenchTable() {
    (void)table.Delete();
    Send(owner, Stop{});
    malloc_trim(0);
  }
};

std::unique_ptr<BenchTable> NewTable(TableType type) {
  auto made = std::make_shared<std::promise<IntTable>>();
  TableOptions options;
  options.type = type;
  options.access = Access::kPublic;
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

const std::vector<int64_t>& RandomKeys() {
  static const std::vector<int64_t> keys = [] {
    std::mt19937_64 rng(42);
    std::vector<int64_t> v(static_cast<size_t>(Keys()));
    for (int64_t& k : v) k = static_cast<int64_t>(rng());
    return v;
  }();
  return keys;
}

// Keys in a different order than inserted, so lookups do not walk memory in insertion order.
const std::vector<int64_t>& ShuffledKeys() {
  static const std::vector<int64_t> keys = [] {
    std::vector<int64_t> v = RandomKeys();
    std::shuffle(v.begin(), v.end(), std::mt19937_64(7));
    return v;
  }();
  return keys;
}

std::unique_ptr<BenchTable> FilledTable(TableType type) {
  auto t = NewTable(type);
  for (int64_t k : RandomKeys()) (void)t->table.Insert(k, 0);
  return t;
}

// Sanity: `table` holds every key of RandomKeys() (distinct, from a 64-bit generator).
bool HoldsEveryKey(const IntTable& table) {
  absl::StatusOr<size_t> size = table.Size();
  return size.ok() && *size == RandomKeys().size();
}

// --- One hot key.

std::unique_ptr<BenchTable> g_hot;

void BM_UpdateCounterOneKey(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_hot = NewTable(TableType::kSet);
    (void)g_hot->table.Insert(1, 0);
  }
  IntTable* t = nullptr;
  int64_t failed = 0;
  for (auto _ : state) {
    if (t == nullptr) t = &g_hot->table;  // Set after the start barrier.
    absl::StatusOr<int64_t> n = t->UpdateCounter(1, 1);
    failed += !n.ok();
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(state.iterations());
  if (failed > 0) state.SkipWithError("update_counter failed");
}
BENCHMARK(BM_UpdateCounterOneKey)->Threads(1)->Threads(2)->UseRealTime();

// --- 1M random keys. These are bound by cache and TLB misses, which on a shared VM vary run to
// run by up to 2x: each is repeated five times and judged by the median.

void Median5(benchmark::internal::Benchmark* b) { b->Repetitions(5); }

void BM_SetInsert1M(benchmark::State& state) {
  int64_t failed = 0;
  bool complete = true;
  for (auto _ : state) {
    state.PauseTiming();
    auto t = NewTable(TableType::kSet);
    state.ResumeTiming();
    for (int64_t k : RandomKeys()) failed += !t->table.Insert(k, k).ok();
    state.PauseTiming();
    complete = complete && HoldsEveryKey(t->table);
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * Keys());
  if (failed > 0 || !complete) state.SkipWithError("an insert failed or a key is missing");
}
BENCHMARK(BM_SetInsert1M)->Unit(benchmark::kMillisecond)->UseRealTime()->Apply(Median5);

std::unique_ptr<BenchTable> g_filled;

template <TableType kType>
void LookupRandom(benchmark::State& state) {
  if (state.thread_index() == 0) g_filled = FilledTable(kType);
  const std::vector<int64_t>& keys = ShuffledKeys();
  size_t i = static_cast<size_t>(state.thread_index()) * (keys.size() / 2);
  IntTable* t = nullptr;
  int64_t hits = 0;
  for (auto _ : state) {
    if (t == nullptr) t = &g_filled->table;
    absl::StatusOr<std::optional<int64_t>> v = t->Get(keys[i]);
    hits += v.ok() && v->has_value();
    if (++i == keys.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  if (hits != static_cast<int64_t>(state.iterations())) {
    state.SkipWithError("a lookup of a present key missed");
  }
  if (state.thread_index() == 0) g_filled.reset();  // Every thread has left the loop.
}

void BM_SetLookup1M(benchmark::State& state) { LookupRandom<TableType::kSet>(state); }
BENCHMARK(BM_SetLookup1M)->Threads(1)->Threads(2)->UseRealTime()->Apply(Median5);

void BM_OrderedSetLookup1M(benchmark::State& state) { LookupRandom<TableType::kOrderedSet>(state); }
BENCHMARK(BM_OrderedSetLookup1M)->UseRealTime()->Apply(Median5);

void BM_SetUpdateCounter1M(benchmark::State& state) {
  auto t = FilledTable(TableType::kSet);
  const std::vector<int64_t>& keys = ShuffledKeys();
  size_t i = 0;
  int64_t failed = 0;
  for (auto _ : state) {
    absl::StatusOr<int64_t> n = t->table.UpdateCounter(keys[i], 1);
    failed += !n.ok();
    benchmark::DoNotOptimize(n);
    if (++i == keys.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  if (failed > 0) state.SkipWithError("update_counter of a present key failed");
}
BENCHMARK(BM_SetUpdateCounter1M)->UseRealTime()->Apply(Median5);

// --- Memory, measured by the allocator (not by the table's own accounting): the heap's chunks,
// those glibc serves by mmap and the large blocks (bench::HeapBytesInUse).

void BM_MemoryPerEntry(benchmark::State& state) {
  double per_entry = 0;
  double accounted = 0;
  bool complete = true;
  for (auto _ : state) {
    auto t = NewTable(TableType::kSet);
    size_t before = bench::HeapBytesInUse();
    for (int64_t k : RandomKeys()) (void)t->table.Insert(k, k);
    per_entry = static_cast<double>(bench::HeapBytesInUse() - before) / Keys();
    accounted = static_cast<double>(t->table.Info().value().memory) / Keys();
    complete = complete && HoldsEveryKey(t->table);
  }
  state.counters["bytes_per_entry"] = per_entry;
  state.counters["info_memory_per_entry"] = accounted;
  if (!complete) state.SkipWithError("a key is missing");
}
BENCHMARK(BM_MemoryPerEntry)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_EmptyTableMemory(benchmark::State& state) {
  const int64_t tables_made = bench::Scaled(10'000, 1'000);
  double per_table = 0;
  for (auto _ : state) {
    bench::RunInProcess(SharedNode(), [&per_table, tables_made](Process&) -> Task<void> {
      std::vector<IntTable> tables;
      tables.reserve(static_cast<size_t>(tables_made));
      size_t before = bench::HeapBytesInUse();
      for (int64_t i = 0; i < tables_made; ++i) tables.push_back(IntTable::New().value());
      per_table = static_cast<double>(bench::HeapBytesInUse() - before) / tables_made;
      co_return;
    });
  }
  state.counters["bytes_per_empty_table"] = per_table;
}
BENCHMARK(BM_EmptyTableMemory)->Iterations(1)->Unit(benchmark::kMillisecond);

// --- Ownership transfer: kill the owner, time until the heir holds TableTransfer.

struct Ready {};

void BM_HeirTransferOnKill(benchmark::State& state) {
  const int64_t transfers = bench::Scaled(20'000, 500);
  std::vector<int64_t> latencies;
  int64_t wrong = 0;
  for (auto _ : state) {
    latencies.clear();
    bench::RunInProcess(SharedNode(), [&latencies, &wrong, transfers](Process& self) -> Task<void> {
      Pid heir = self.self();
      for (int64_t i = 0; i < transfers; ++i) {
        Pid owner = self.Spawn([heir](Process& p) -> Task<void> {
                          TableOptions options;
                          options.heir = heir;
                          IntTable t = IntTable::New(options).value();
                          (void)t.Insert(1, 1);
                          Send(heir, Ready{});
                          co_await p.Receive<Stop>();
                        })
                        .value();
        co_await self.Receive<Ready>();
        int64_t start = Scheduler::Current()->NowNanos();
        SendExit(owner, ExitReason::Kill());
        TableTransfer transfer = co_await self.Receive<TableTransfer>();
        latencies.push_back(Scheduler::Current()->NowNanos() - start);
        wrong += transfer.from != owner || transfer.table.Size().value_or(0) != 1;
        (void)transfer.table.Delete();
      }
    });
  }
  state.counters["p50_us"] = bench::Percentile(latencies, 0.5) / 1e3;
  state.counters["p99_us"] = bench::Percentile(latencies, 0.99) / 1e3;
  if (wrong > 0) state.SkipWithError("a transfer came from elsewhere or lost its entry");
}
BENCHMARK(BM_HeirTransferOnKill)->Iterations(1)->Unit(benchmark::kMillisecond);

// --- The select family, ranges, save and load (issue 18).

// select_delete of half of a 1M-entry set: one pass, each shard under its write lock. Items are
// the objects examined (the whole table); half of them are deleted.
void BM_SelectDeleteHalf1M(benchmark::State& state) {
  const std::vector<int64_t>& keys = RandomKeys();
  bool right = true;
  for (auto _ : state) {
    state.PauseTiming();
    auto t = NewTable(TableType::kSet);
    for (size_t i = 0; i < keys.size(); ++i)
      (void)t->table.Insert(keys[i], static_cast<int64_t>(i));
    state.ResumeTiming();
    absl::StatusOr<size_t> deleted =
        t->table.SelectDelete([](const int64_t&, const int64_t& v) { return v % 2 == 0; });
    state.PauseTiming();
    right = right && deleted.ok() && *deleted == keys.size() / 2 &&
            t->table.Size().value_or(0) == keys.size() - keys.size() / 2;
    t.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * Keys());
  if (!right) state.SkipWithError("select_delete deleted the wrong number of objects");
}
BENCHMARK(BM_SelectDeleteHalf1M)->Iterations(5)->Unit(benchmark::kMillisecond)->UseRealTime();

// select on a range of 1,000 consecutive keys of a 1M-key ordered_set (keys 0..1M-1), at random
// places: the walk starts at the range's first key.
void BM_SelectRange1000(benchmark::State& state) {
  auto t = NewTable(TableType::kOrderedSet);
  std::vector<std::pair<int64_t, int64_t>> all;
  for (int64_t k = 0; k < Keys(); ++k) all.emplace_back(k, k);
  (void)t->table.Insert(std::move(all));
  std::mt19937_64 rng(3);
  std::vector<int64_t> starts(4096);
  for (int64_t& s : starts) s = static_cast<int64_t>(rng() % static_cast<uint64_t>(Keys() - 1000));
  size_t i = 0;
  bool right = true;
  for (auto _ : state) {
    const int64_t lo = starts[i++ % starts.size()];
    absl::StatusOr<IntTable::Chunk> chunk = t->table.SelectRange(lo, lo + 999);
    right =
        right && chunk.ok() && chunk->objects.size() == 1000 && chunk->objects.front().first == lo;
    benchmark::DoNotOptimize(chunk);
  }
  if (!right) state.SkipWithError("a range did not hold its 1,000 keys");
}
BENCHMARK(BM_SelectRange1000)->Unit(benchmark::kMicrosecond)->UseRealTime()->Apply(Median5);

std::string BenchFile() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/etsmgr_table_benchmark_" +
         std::to_string(getpid()) + ".tab";
}

// tab2file of 1M int64 -> int64 entries, fsync and rename included (to the file system of
// $TEST_TMPDIR or /tmp).
void BM_Save1M(benchmark::State& state) {
  auto t = FilledTable(TableType::kSet);
  const std::string path = BenchFile();
  bool right = true;
  for (auto _ : state) {
    absl::Status saved = SaveTable(t->table, path);
    right = right && saved.ok();
  }
  absl::StatusOr<TableFileInfo> info = TabFileInfo(path);
  right = right && info.ok() && info->objects == RandomKeys().size();
  unlink(path.c_str());
  state.SetItemsProcessed(state.iterations() * Keys());
  if (!right) state.SkipWithError("a save failed or the file lacks objects");
}
BENCHMARK(BM_Save1M)->Unit(benchmark::kMillisecond)->UseRealTime()->Apply(Median5);

// file2tab of the same file (from the page cache): read, check, decode, create and fill.
void BM_Load1M(benchmark::State& state) {
  const std::string path = BenchFile();
  {
    auto t = FilledTable(TableType::kSet);
    if (!SaveTable(t->table, path).ok()) {
      state.SkipWithError("the save to load from failed");
      return;
    }
  }
  bool right = true;
  for (auto _ : state) {
    double seconds = 0;
    bench::RunInProcess(SharedNode(), [&](Process&) -> Task<void> {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<IntTable> loaded = LoadTable<int64_t, int64_t>(path);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      right = right && loaded.ok() && loaded->Size().value_or(0) == RandomKeys().size();
      if (loaded.ok()) (void)loaded->Delete();
      co_return;
    });
    state.SetIterationTime(seconds);
    malloc_trim(0);
  }
  unlink(path.c_str());
  state.SetItemsProcessed(state.iterations() * Keys());
  if (!right) state.SkipWithError("a load failed or lost objects");
}
BENCHMARK(BM_Load1M)->Unit(benchmark::kMillisecond)->UseManualTime()->Apply(Median5);

}  // namespace
}  // namespace etsmgr

int main(int argc, char** argv) {
  using etsmgr::bench::Better;
  return etsmgr::bench::RunWithTargets(
      argc, argv,
      {
          {"BM_UpdateCounterOneKey/real_time/threads:1", "items_per_second", 40e6, Better::kHigher,
           "/s", "update_counter, one key, 1 thread [ETS 9.4M/s]"},
          {"BM_UpdateCounterOneKey/real_time/threads:2", "items_per_second", 25e6, Better::kHigher,
           "/s", "update_counter, one key, 2 threads total [ETS 10.2M/s]"},
          {"BM_SetInsert1M*", "items_per_second", 10e6, Better::kHigher, "/s",
           "set insert, 1M random keys, median of 5 [ETS 2.31M/s]"},
          {"BM_SetLookup1M/repeats:5/real_time/threads:1", "items_per_second", 25e6,
           Better::kHigher, "/s",
           "set lookup, 1M random keys, 1 thread, median of 5 [ETS 2.82M/s]"},
          {"BM_SetLookup1M/repeats:5/real_time/threads:2", "items_per_second", 40e6,
           Better::kHigher, "/s", "set lookup, 1M random keys, 2 threads total, median of 5"},
          {"BM_SetUpdateCounter1M*", "items_per_second", 20e6, Better::kHigher, "/s",
           "set update_counter, 1M random keys, median of 5"},
          {"BM_OrderedSetLookup1M*", "items_per_second", 5e6, Better::kHigher, "/s",
           "ordered_set lookup, 1M random keys, median of 5"},
          {"BM_MemoryPerEntry*", "bytes_per_entry", 40, Better::kLower, "B",
           "heap (mmapped chunks and large blocks too) per int64->int64 entry, 1M-entry set "
           "[ETS 64 B]"},
          {"BM_EmptyTableMemory*", "bytes_per_empty_table", 512, Better::kLower, "B",
           "heap per empty table [ETS 2456 B]"},
          {"BM_HeirTransferOnKill*", "p50_us", 1, Better::kLower, "us",
           "owner killed -> heir holds TableTransfer, p50"},
          {"BM_SelectDeleteHalf1M*", "items_per_second", 20e6, Better::kHigher, "/s",
           "select_delete of half of a 1M-entry set, objects examined (half deleted)"},
          {"BM_SelectRange1000*", "real_time", 20, Better::kLower, "us",
           "select_range of 1,000 keys of a 1M-key ordered_set, median of 5"},
          {"BM_Save1M*", "items_per_second", 10e6, Better::kHigher, "/s",
           "tab2file, 1M int64->int64, fsync + rename included, median of 5"},
          {"BM_Load1M*", "items_per_second", 5e6, Better::kHigher, "/s",
           "file2tab, 1M int64->int64 from the page cache, median of 5"},
      });
}
