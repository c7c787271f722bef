// Process benchmarks: `bazel run -c opt //etsmgr/process:process_benchmark`.
// Erlang/OTP 25 and CAF figures from the same VM are in shared/notes/machine-figures.md.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/supervisor.h"
#include "tools/bench/process_helpers.h"
#include "tools/bench/report.h"

namespace etsmgr {
namespace {

using bench::MakeNode;
using bench::RunInProcess;

struct Go {};

void BM_SpawnLinkKillExitSignal(benchmark::State& state) {
  auto node = MakeNode(1);
  constexpr int kCycles = 100'000;
  for (auto _ : state) {
    RunInProcess(
        *node,
        [](Process& self) -> Task<void> {
          for (int i = 0; i < kCycles; ++i) {
            Pid child =
                self.SpawnLink([](Process& p) -> Task<void> { co_await p.Receive<Go>(); }).value();
            SendExit(child, ExitReason::Kill());
            co_await self.Receive<ExitSignal>();
          }
        },
        {.trap_exit = true});
  }
  state.SetItemsProcessed(state.iterations() * kCycles);
}
BENCHMARK(BM_SpawnLinkKillExitSignal)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Ball {
  Pid from;
};

void BM_PingPongOneScheduler(benchmark::State& state) {
  auto node = MakeNode(1);
  constexpr int kRounds = 1'000'000;
  Pid ponger = node->Spawn([](Process& self) -> Task<void> {
                     while (true) {
                       Ball b = co_await self.Receive<Ball>();
                       Send(b.from, Ball{});
                     }
                   })
                   .value();
  for (auto _ : state) {
    RunInProcess(*node, [ponger](Process& self) -> Task<void> {
      for (int i = 0; i < kRounds; ++i) {
        Send(ponger, Ball{self.self()});
        co_await self.Receive<Ball>();
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * kRounds);
}
BENCHMARK(BM_PingPongOneScheduler)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Add {
  int a;
  int b;
};

// gen_server:call's shape: monitor the server, send, selective receive of the reply or Down.
void BM_CallRoundTrip(benchmark::State& state) {
  auto node = MakeNode(1);
  constexpr int kCalls = 200'000;
  Pid server = node->Spawn([](Process& self) -> Task<void> {
                     while (true) {
                       Message m = co_await self.Receive();
                       if (const auto* r = m.As<CallRequest<Add>>()) {
                         ReplyTo(*r, r->request.a + r->request.b);
                       }
                     }
                   })
                   .value();
  for (auto _ : state) {
    RunInProcess(*node, [server](Process& self) -> Task<void> {
      for (int i = 0; i < kCalls; ++i) {
        absl::StatusOr<int> sum = co_await Call<int>(self, server, Add{i, 1});
        if (!sum.ok() || *sum != i + 1) std::abort();
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * kCalls);
}
BENCHMARK(BM_CallRoundTrip)->Unit(benchmark::kMillisecond)->UseRealTime();

size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages_total = 0;
  size_t pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

void BM_IdleProcessMemory(benchmark::State& state) {
  constexpr int kProcesses = 100'000;
  double per_process = 0;
  for (auto _ : state) {
    auto node = MakeNode(1);
    size_t before = ResidentBytes();
    auto started = std::make_shared<std::atomic<int>>(0);
    for (int i = 0; i < kProcesses; ++i) {
      node->Spawn([started](Process& self) -> Task<void> {
            started->fetch_add(1, std::memory_order_relaxed);
            co_await self.Receive<Go>();
          })
          .value();
    }
    while (started->load() < kProcesses) std::this_thread::yield();
    per_process = static_cast<double>(ResidentBytes() - before) / kProcesses;
  }
  state.counters["bytes_per_idle_process"] = per_process;
  state.counters["GiB_per_1M_processes"] = per_process * 1e6 / (1 << 30);
}
BENCHMARK(BM_IdleProcessMemory)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Up {
  Pid pid;
};

// Kill a supervised child, wait until its replacement runs: latency per restart, and whether it
// drifts over 100k back-to-back restarts (OTP's supervisor goes from 14 us to 119 us p50).
void BM_SupervisorRestart(benchmark::State& state) {
  constexpr int kRestarts = 100'000;
  auto node = MakeNode(1);
  std::vector<int64_t> latencies;
  for (auto _ : state) {
    latencies.clear();
    RunInProcess(*node, [&latencies](Process& self) -> Task<void> {
      Pid probe = self.self();
      ProcessBody worker = [probe](Process& w) -> Task<void> {
        Send(probe, Up{w.self()});
        co_await w.Receive<Go>();
      };
      std::vector<ChildSpec> children;
      children.push_back(WorkerChild("worker", worker));
      SupervisorFlags flags{.strategy = RestartStrategy::kOneForOne, .intensity = INT_MAX};
      absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
      Up up = co_await self.Receive<Up>();  // Named: see the gcc 12 caveat in task.h.
      Pid child = up.pid;
      for (int i = 0; i < kRestarts; ++i) {
        int64_t start = Scheduler::Current()->NowNanos();
        SendExit(child, ExitReason::Kill());
        Up next = co_await self.Receive<Up>();
        child = next.pid;
        latencies.push_back(Scheduler::Current()->NowNanos() - start);
      }
      co_await StopSupervisor(self, *sup);
    });
  }
  std::vector<int64_t> first(latencies.begin(), latencies.begin() + 10'000);
  std::vector<int64_t> last(latencies.end() - 10'000, latencies.end());
  state.counters["p50_us"] = bench::Percentile(latencies, 0.50) / 1e3;
  state.counters["p99_us"] = bench::Percentile(latencies, 0.99) / 1e3;
  state.counters["first10k_p50_us"] = bench::Percentile(first, 0.50) / 1e3;
  state.counters["last10k_p50_us"] = bench::Percentile(last, 0.50) / 1e3;
  state.counters["drift_last_over_first"] =
      bench::Percentile(last, 0.50) / bench::Percentile(first, 0.50);
  state.SetItemsProcessed(state.iterations() * kRestarts);
}
BENCHMARK(BM_SupervisorRestart)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace etsmgr

int main(int argc, char** argv) {
  using etsmgr::bench::Better;
  return etsmgr::bench::RunWithTargets(
      argc, argv,
      {
          {"BM_SpawnLinkKillExitSignal*", "items_per_second", 2e6, Better::kHigher, "/s",
           "spawn_link + kill + ExitSignal cycles [OTP 494k/s]"},
          {"BM_PingPongOneScheduler*", "items_per_second", 10e6, Better::kHigher, "/s",
           "ping-pong round trips, one scheduler [OTP 1.32M/s]"},
          {"BM_IdleProcessMemory*", "bytes_per_idle_process", 512, Better::kLower, "B",
           "idle process memory [OTP 2640 B]"},
          {"BM_IdleProcessMemory*", "GiB_per_1M_processes", 1, Better::kLower, "GiB",
           "1M idle processes"},
          {"BM_SupervisorRestart*", "p50_us", 14, Better::kLower, "us",
           "supervisor restart of a killed child, p50 [OTP 14 us at start]"},
          {"BM_SupervisorRestart*", "p99_us", 119, Better::kLower, "us",
           "supervisor restart, p99 [OTP p50 after 10k restarts: 119 us]"},
          {"BM_SupervisorRestart*", "drift_last_over_first", 1.5, Better::kLower, "x",
           "no slowdown over 100k restarts (last 10k p50 / first 10k p50)"},
      });
}
