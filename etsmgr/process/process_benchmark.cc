// Process benchmarks: `bazel run -c opt //etsmgr/process:process_benchmark`.
// Erlang/OTP 25 and CAF figures from the same VM are in shared/notes/machine-figures.md.
// Sanity checks (a wrong exit signal or call reply, a failed supervisor) stop the run with an
// error, also in --smoke runs, where every loop is about 50 times shorter.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/supervisor.h"
#include "tools/bench/memory.h"
#include "tools/bench/process_helpers.h"
#include "tools/bench/report.h"

namespace etsmgr {
namespace {

using bench::MakeNode;
using bench::RunInProcess;

struct Go {};

void BM_SpawnLinkKillExitSignal(benchmark::State& state) {
  auto node = MakeNode(1);
  const int64_t cycles = bench::Scaled(100'000, 2'000);
  int64_t wrong = 0;
  for (auto _ : state) {
    RunInProcess(
        *node,
        [cycles, &wrong](Process& self) -> Task<void> {
          for (int64_t i = 0; i < cycles; ++i) {
            Pid child =
                self.SpawnLink([](Process& p) -> Task<void> { co_await p.Receive<Go>(); }).value();
            SendExit(child, ExitReason::Kill());
            ExitSignal signal = co_await self.Receive<ExitSignal>();
            wrong += signal.from != child || signal.reason != ExitReason::Killed();
          }
        },
        {.trap_exit = true});
  }
  state.SetItemsProcessed(state.iterations() * cycles);
  if (wrong > 0) state.SkipWithError("an exit signal was not the child's killed");
}
BENCHMARK(BM_SpawnLinkKillExitSignal)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Ball {
  Pid from;
};

void BM_PingPongOneScheduler(benchmark::State& state) {
  auto node = MakeNode(1);
  const int64_t rounds = bench::Scaled(1'000'000, 20'000);
  Pid ponger = node->Spawn([](Process& self) -> Task<void> {
                     while (true) {
                       Ball b = co_await self.Receive<Ball>();
                       Send(b.from, Ball{});
                     }
                   })
                   .value();
  for (auto _ : state) {
    RunInProcess(*node, [ponger, rounds](Process& self) -> Task<void> {
      for (int64_t i = 0; i < rounds; ++i) {
        Send(ponger, Ball{self.self()});
        co_await self.Receive<Ball>();
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * rounds);
}
BENCHMARK(BM_PingPongOneScheduler)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Add {
  int a;
  int b;
};

// gen_server:call's shape: monitor the server, send, selective receive of the reply or Down.
void BM_CallRoundTrip(benchmark::State& state) {
  auto node = MakeNode(1);
  const int64_t calls = bench::Scaled(200'000, 4'000);
  int64_t wrong = 0;
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
    RunInProcess(*node, [server, calls, &wrong](Process& self) -> Task<void> {
      for (int i = 0; i < calls; ++i) {
        absl::StatusOr<int> sum = co_await Call<int>(self, server, Add{i, 1});
        wrong += !sum.ok() || *sum != i + 1;
      }
    });
  }
  state.SetItemsProcessed(state.iterations() * calls);
  if (wrong > 0) state.SkipWithError("a call failed or got a wrong reply");
}
BENCHMARK(BM_CallRoundTrip)->Unit(benchmark::kMillisecond)->UseRealTime();

// The resident set's growth per idle process (its control block, frame, mailbox and whatever the
// runtime touched for it, in whole pages), at 100k processes: a figure for 1M would be ten times
// this only if nothing grew differently, so none is given.
void BM_IdleProcessMemory(benchmark::State& state) {
  const int64_t processes = bench::Scaled(100'000, 2'000);
  double per_process = 0;
  for (auto _ : state) {
    auto node = MakeNode(1);
    size_t before = bench::ResidentBytes();
    auto started = std::make_shared<std::atomic<int64_t>>(0);
    for (int64_t i = 0; i < processes; ++i) {
      node->Spawn([started](Process& self) -> Task<void> {
            started->fetch_add(1, std::memory_order_relaxed);
            co_await self.Receive<Go>();
          })
          .value();
    }
    while (started->load() < processes) std::this_thread::yield();
    per_process = static_cast<double>(bench::ResidentBytes() - before) / processes;
  }
  state.counters["bytes_per_idle_process"] = per_process;
}
BENCHMARK(BM_IdleProcessMemory)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Up {
  Pid pid;
};

// Kill a supervised child, wait until its replacement runs: latency per restart, and whether it
// drifts over 100k back-to-back restarts (OTP's supervisor goes from 14 us to 119 us p50).
void BM_SupervisorRestart(benchmark::State& state) {
  const int64_t restarts = bench::Scaled(100'000, 2'000);
  auto node = MakeNode(1);
  std::vector<int64_t> latencies;
  bool supervised = true;
  for (auto _ : state) {
    latencies.clear();
    RunInProcess(*node, [&latencies, &supervised, restarts](Process& self) -> Task<void> {
      Pid probe = self.self();
      ProcessBody worker = [probe](Process& w) -> Task<void> {
        Send(probe, Up{w.self()});
        co_await w.Receive<Go>();
      };
      std::vector<ChildSpec> children;
      children.push_back(WorkerChild("worker", worker));
      SupervisorFlags flags{.strategy = RestartStrategy::kOneForOne, .intensity = INT_MAX};
      absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
      if (!sup.ok()) {
        supervised = false;
        co_return;
      }
      Up up = co_await self.Receive<Up>();  // Named: see the gcc 12 caveat in task.h.
      Pid child = up.pid;
      for (int64_t i = 0; i < restarts; ++i) {
        int64_t start = Scheduler::Current()->NowNanos();
        SendExit(child, ExitReason::Kill());
        Up next = co_await self.Receive<Up>();
        child = next.pid;
        latencies.push_back(Scheduler::Current()->NowNanos() - start);
      }
      absl::Status stopped = co_await StopSupervisor(self, *sup);
      supervised = supervised && stopped.ok();
    });
  }
  if (!supervised || latencies.size() != static_cast<size_t>(restarts)) {
    state.SkipWithError("the supervisor did not start or stop");
    return;
  }
  // The first and last tenth: 10k restarts each.
  const auto window = static_cast<std::ptrdiff_t>(latencies.size() / 10);
  std::vector<int64_t> first(latencies.begin(), latencies.begin() + window);
  std::vector<int64_t> last(latencies.end() - window, latencies.end());
  state.counters["p50_us"] = bench::Percentile(latencies, 0.50) / 1e3;
  state.counters["p99_us"] = bench::Percentile(latencies, 0.99) / 1e3;
  state.counters["first10k_p50_us"] = bench::Percentile(first, 0.50) / 1e3;
  state.counters["last10k_p50_us"] = bench::Percentile(last, 0.50) / 1e3;
  state.counters["drift_last_over_first"] =
      bench::Percentile(last, 0.50) / bench::Percentile(first, 0.50);
  state.SetItemsProcessed(state.iterations() * restarts);
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
           "idle process, resident set per process at 100k [OTP 2640 B]"},
          {"BM_SupervisorRestart*", "p50_us", 14, Better::kLower, "us",
           "supervisor restart of a killed child, p50 [OTP p50 at start: 14 us]"},
          {"BM_SupervisorRestart*", "last10k_p50_us", 119, Better::kLower, "us",
           "supervisor restart, p50 of the last 10k of 100k [OTP p50 after 10k: 119 us]"},
          {"BM_SupervisorRestart*", "p99_us", 119, Better::kLower, "us",
           "supervisor restart, p99 (no OTP p99 measured; target = OTP's late p50)"},
          {"BM_SupervisorRestart*", "drift_last_over_first", 1.5, Better::kLower, "x",
           "no slowdown over 100k restarts (last 10k p50 / first 10k p50)"},
      });
}
