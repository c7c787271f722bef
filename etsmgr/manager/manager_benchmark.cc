// Manager benchmarks: `bazel run -c opt //etsmgr/manager:manager_benchmark`.
// Erlang etsmgr 0.3.0 on OTP 25 figures (same VM) are in shared/notes/machine-figures.md.
#include <chrono>
#include <climits>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/manager.h"
#include "tools/bench/fresh_process.h"
#include "tools/bench/memory.h"
#include "tools/bench/process_helpers.h"
#include "tools/bench/report.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

using bench::MakeNode;
using bench::RunInProcess;

void BM_NewDelDelete(benchmark::State& state) {
  auto node = MakeNode(1);
  (void)StartManager(*node);
  const int kCycles = static_cast<int>(bench::Scaled(100'000, 1'000));
  for (auto _ : state) {
    RunInProcess(*node, [kCycles](Process& self) -> Task<void> {
      Etsmgr mgr;
      for (int i = 0; i < kCycles; ++i) {
        absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
        absl::Status del = co_await mgr.DelTable(self, "t");
        if (!r.ok() || !del.ok()) std::abort();
        (void)r->table.Delete();
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * kCycles);
}
// Runs vary by up to 1.6x on a shared VM: judged by the median of 5.
BENCHMARK(BM_NewDelDelete)->Unit(benchmark::kMillisecond)->UseRealTime()->Repetitions(5);

struct Up {
  Pid pid;
  int64_t value;
};
struct Idle {};

// Kill the table's owner; its supervisor restarts it; the new owner's new_table returns the
// table (from the vault) with its data. Latency from the kill to the data in hand.
void BM_RecoveryAfterOwnerKill(benchmark::State& state) {
  const int kRecoveries = static_cast<int>(bench::Scaled(20'000, 200));
  auto node = MakeNode(1);
  (void)StartManager(*node);
  std::vector<int64_t> latencies;
  for (auto _ : state) {
    latencies.clear();
    RunInProcess(*node, [&latencies, kRecoveries](Process& self) -> Task<void> {
      Pid probe = self.self();
      ProcessBody owner = [probe](Process& p) -> Task<void> {
        Etsmgr mgr;
        absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(p, "state");
        if (!r.ok()) std::abort();
        IntTable t = IntTable::Attach(r->table).value();
        if (r->created) (void)t.Insert(1, 42);
        Send(probe, Up{p.self(), t.Get(1).value().value_or(-1)});
        co_await p.Receive<Idle>();
      };
      std::vector<ChildSpec> children;
      children.push_back(WorkerChild("owner", owner));
      SupervisorFlags flags{.strategy = RestartStrategy::kOneForOne, .intensity = INT_MAX};
      absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
      Up up = co_await self.Receive<Up>();
      for (int i = 0; i < kRecoveries; ++i) {
        int64_t start = Scheduler::Current()->NowNanos();
        SendExit(up.pid, ExitReason::Kill());
        Up next = co_await self.Receive<Up>();
        latencies.push_back(Scheduler::Current()->NowNanos() - start);
        if (next.value != 42) std::abort();
        // The probe's old Pid is the dead owner's last reference: freeing its control block is
        // the probe's bookkeeping, after the clock stops.
        up = std::move(next);
      }
      absl::Status stopped = co_await StopSupervisor(self, *sup);
      if (!stopped.ok()) std::abort();
    });
  }
  state.counters["p50_us"] = bench::Percentile(latencies, 0.5) / 1e3;
  state.counters["p99_us"] = bench::Percentile(latencies, 0.99) / 1e3;
  // For the bench report's latency distribution (--samples_dir).
  if (!bench::WriteSamples("recovery_after_owner_kill_ns", latencies)) {
    state.SkipWithError("cannot write the recovery samples");
  }
}
BENCHMARK(BM_RecoveryAfterOwnerKill)->Iterations(1)->Unit(benchmark::kMillisecond);

// 1,000 clients with 100 tables each (20 with 10 in a smoke run).
int Clients() { return static_cast<int>(bench::Scaled(1000, 20)); }
int TablesEach() { return static_cast<int>(bench::Scaled(100, 10)); }

// A node with the default instance and 1,000 clients holding 100 managed tables each; returns the
// clients (they wait for Idle). `spawned` runs once every client exists and waits, before any
// creates a table (the memory measured from there on is the tables', not the clients').
struct Go {};
std::vector<Pid> MakeHundredThousand(
    Node& node, const std::function<void()>& spawned = [] {}) {
  const int kClients = Clients();
  const int kTablesEach = TablesEach();
  auto waiting = std::make_shared<std::atomic<int>>(kClients);
  auto all_waiting = std::make_shared<std::promise<void>>();
  auto remaining = std::make_shared<std::atomic<int>>(kClients);
  auto all_made = std::make_shared<std::promise<void>>();
  std::vector<Pid> clients;
  clients.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    clients.push_back(node.Spawn([c, kTablesEach, waiting, all_waiting, remaining,
                                  all_made](Process& self) -> Task<void> {
                            Etsmgr mgr;
                            if (waiting->fetch_sub(1) == 1) all_waiting->set_value();
                            co_await self.Receive<Go>();
                            for (int t = 0; t < kTablesEach; ++t) {
                              std::string name = absl::StrCat("c", c, "_", t);
                              absl::StatusOr<ManagedTableRef> r =
                                  co_await mgr.NewTable<int64_t, int64_t>(self, name);
                              if (!r.ok()) std::abort();
                            }
                            if (remaining->fetch_sub(1) == 1) all_made->set_value();
                            co_await self.Receive<Idle>();
                          })
                          .value());
  }
  all_waiting->get_future().wait();
  spawned();
  for (const Pid& c : clients) Send(c, Go{});
  all_made->get_future().wait();
  return clients;
}

double MillisSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// In a fresh process: create 100k tables (the cold start a service sees), their memory, then
// info(): the first call (the figure a user sees: its 7 MB reply is memory the process never
// touched) and the median of five more (a monitoring loop reusing the reply's memory).
bench::Figures MeasureHundredThousand() {
  const int kTables = Clients() * TablesEach();
  auto node = MakeNode(2);
  (void)StartManager(*node);
  // From the moment every client exists and waits: the memory is the tables' alone.
  size_t heap_before = 0;
  std::chrono::steady_clock::time_point t0;
  std::vector<Pid> clients = MakeHundredThousand(*node, [&] {
    heap_before = bench::HeapBytesInUse();
    t0 = std::chrono::steady_clock::now();
  });
  double create_s = MillisSince(t0) / 1e3;
  double per_table = static_cast<double>(bench::HeapBytesInUse() - heap_before) / kTables;
  std::vector<int64_t> info_ns;
  RunInProcess(*node, [&info_ns, kTables](Process& self) -> Task<void> {
    Etsmgr mgr;
    for (int i = 0; i < 6; ++i) {
      auto i0 = std::chrono::steady_clock::now();
      absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
      info_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - i0)
                            .count());
      if (!info.ok() || info->tables.size() != static_cast<size_t>(kTables)) std::abort();
    }
  });
  for (const Pid& c : clients) Send(c, Idle{});
  return {{"create_100k_s", create_s},
          {"bytes_per_managed_table", per_table},
          {"info_100k_ms", static_cast<double>(info_ns.front()) / 1e6},
          {"info_warm_ms", bench::Percentile({info_ns.begin() + 1, info_ns.end()}, 0.5) / 1e6}};
}

// In a fresh process: 999 of the 1,000 clients killed at once; the figure is what a user sees,
// from the kills until the first info() that shows all their 99,900 tables held by the vault
// with no client (no info() call before the kills).
bench::Figures MeasureExitBurst() {
  const int kClients = Clients();
  const int kTablesEach = TablesEach();
  const int kTables = kClients * kTablesEach;
  auto node = MakeNode(2);
  (void)StartManager(*node);
  std::vector<Pid> clients = MakeHundredThousand(*node);
  double burst_ms = 0;
  int info_calls = 0;
  RunInProcess(*node, [&](Process& self) -> Task<void> {
    Etsmgr mgr;
    auto e0 = std::chrono::steady_clock::now();
    for (int c = 0; c < kClients - 1; ++c) SendExit(clients[c], ExitReason::Kill());
    while (true) {
      absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
      ++info_calls;
      if (!info.ok()) std::abort();
      size_t held = 0;
      for (const ManagedTableInfo& t : info->tables) {
        held += !t.client.valid() && t.owner == info->vault ? 1 : 0;
      }
      if (held == static_cast<size_t>(kTables - kTablesEach)) break;
      // Let the exiting clients on this scheduler run (a table call does not suspend).
      co_await self.Sleep(absl::ZeroDuration());
    }
    burst_ms = MillisSince(e0);
  });
  Send(clients.back(), Idle{});
  return {{"burst_999_ms", burst_ms}, {"info_calls", static_cast<double>(info_calls)}};
}

// Each runs once, in a fresh process (see fresh_process.h): a repetition, or an earlier
// benchmark, would hand it a warm heap (measured 2x faster to create, a different heap figure,
// an info() reply already faulted in), which is not what a service sees.
void ReportFresh(benchmark::State& state, const char* role) {
  for (auto _ : state) {
    absl::StatusOr<bench::Figures> figures = bench::RunFresh(role);
    if (!figures.ok()) {
      state.SkipWithError(std::string(figures.status().message()).c_str());
      return;
    }
    for (const auto& [name, value] : *figures) state.counters[name] = value;
  }
}
void BM_HundredThousandTables(benchmark::State& state) { ReportFresh(state, "hundred_thousand"); }
BENCHMARK(BM_HundredThousandTables)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);
void BM_ExitBurst(benchmark::State& state) { ReportFresh(state, "exit_burst"); }
BENCHMARK(BM_ExitBurst)->Iterations(1)->Repetitions(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace etsmgr

int main(int argc, char** argv) {
  using etsmgr::bench::Better;
  int rc = 0;
  if (etsmgr::bench::FreshChild(argc, argv,
                                {{"hundred_thousand", &etsmgr::MeasureHundredThousand},
                                 {"exit_burst", &etsmgr::MeasureExitBurst}},
                                &rc)) {
    return rc;
  }
  return etsmgr::bench::RunWithTargets(
      argc, argv,
      {
          {"BM_NewDelDelete*", "items_per_second", 1.75e6, Better::kHigher, "/s",
           "new_table + del_table + delete, one client, median of 5 [etsmgr 175k/s]"},
          {"BM_RecoveryAfterOwnerKill*", "p50_us", 1, Better::kLower, "us",
           "owner killed -> restarted -> table back with data, p50 [etsmgr 10.5 us]"},
          {"BM_RecoveryAfterOwnerKill*", "p99_us", 5, Better::kLower, "us",
           "same, p99 [etsmgr 48 us]"},
          {"BM_HundredThousandTables*", "create_100k_s", 0.15, Better::kLower, "s",
           "100k managed tables from 1,000 clients: create [etsmgr 1.48 s]"},
          {"BM_HundredThousandTables*", "info_100k_ms", 5, Better::kLower, "ms",
           "info() over 100k tables, first call in a fresh process [etsmgr 15.9 ms]"},
          {"BM_ExitBurst*", "burst_999_ms", 50, Better::kLower, "ms",
           "999 client exits at once, kills -> first info() showing all held [etsmgr 144 s]"},
          {"BM_HundredThousandTables*", "bytes_per_managed_table", 512, Better::kLower, "B",
           "memory per managed empty table [etsmgr ~2.5 KB]"},
      });
}
