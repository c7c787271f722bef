// Executor benchmarks: `bazel run -c opt //etsmgr/executor:executor_benchmark`.
// Each figure is printed against the target from the executor issue; peer figures measured on
// the same 2-vCPU VM are in shared/notes/machine-figures.md. Sanity checks (a wrong sum, a timer
// early or out of deadline order) stop the run with an error, also in --smoke runs, where every
// loop is about 50 times shorter.
#include <sys/resource.h>

#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "absl/random/random.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/wait_slot.h"
#include "tools/bench/report.h"

namespace etsmgr {
namespace {

std::unique_ptr<Runtime> MakeRuntime(int schedulers, absl::Duration spin = RuntimeOptions().spin) {
  RuntimeOptions options;
  options.schedulers = schedulers;
  options.spin = spin;
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
  if (!rt.ok()) std::terminate();
  return std::move(*rt);
}

double CpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// --- Same-thread coroutine switch: two coroutines hand control to each other by symmetric
// transfer, no executor involved.
struct Fiber {
  struct promise_type {
    Fiber get_return_object() {
      return Fiber{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
  std::coroutine_handle<promise_type> handle;
};

struct SwitchTo {
  std::coroutine_handle<>* target;
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<>) noexcept { return *target; }
  void await_resume() const noexcept {}
};

Fiber Bouncer(std::coroutine_handle<>* peer, int64_t rounds, int64_t* count) {
  for (int64_t i = 0; i < rounds; ++i) {
    ++*count;
    co_await SwitchTo{peer};
  }
}

void BM_CoroutineSwitch(benchmark::State& state) {
  const int64_t rounds = bench::Scaled(1'000'000, 20'000);
  int64_t switches = 0;
  double seconds = 0;
  for (auto _ : state) {
    absl::Time start = absl::Now();
    std::coroutine_handle<> a_handle, b_handle;
    Fiber a = Bouncer(&b_handle, rounds, &switches);
    Fiber b = Bouncer(&a_handle, rounds + 1, &switches);
    a_handle = a.handle;
    b_handle = b.handle;
    a.handle.resume();  // Returns when `a` finishes after `rounds` round trips.
    seconds += absl::ToDoubleSeconds(absl::Now() - start);
    a.handle.destroy();
    b.handle.destroy();
  }
  benchmark::DoNotOptimize(switches);
  state.counters["ns_per_switch"] = seconds * 1e9 / static_cast<double>(switches);
}
BENCHMARK(BM_CoroutineSwitch)->Unit(benchmark::kMillisecond);

// --- co_await of a Task that completes at once: frame allocation + two switches + destroy.
Task<int> Immediate(int v) { co_return v; }
Task<int64_t> AwaitMany(int64_t n) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += co_await Immediate(1);
  co_return sum;
}

void BM_TaskAwait(benchmark::State& state) {
  const int64_t awaits = bench::Scaled(1'000'000, 20'000);
  bool right = true;
  for (auto _ : state) {
    Task<int64_t> t = AwaitMany(awaits);
    // Drive the outer task by hand: it completes synchronously.
    t.handle().resume();
    right = right && t.done() && t.handle().promise().take_result() == awaits;
  }
  state.SetItemsProcessed(state.iterations() * awaits);
  if (!right) state.SkipWithError("the awaits did not complete synchronously with the right sum");
}
BENCHMARK(BM_TaskAwait)->Unit(benchmark::kMillisecond);

// --- Post + resume on one scheduler: a coroutine that yields, i.e. posts itself to its own run
// queue and is resumed from it.
Task<void> YieldLoop(int64_t n) {
  for (int64_t i = 0; i < n; ++i) co_await Yield();
}

void BM_PostResumeOneScheduler(benchmark::State& state) {
  auto rt = MakeRuntime(1);
  const int64_t yields = bench::Scaled(1'000'000, 20'000);
  for (auto _ : state) rt->BlockOn(YieldLoop(yields));
  state.SetItemsProcessed(state.iterations() * yields);
}
BENCHMARK(BM_PostResumeOneScheduler)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- Cross-scheduler ping-pong through two WaitSlots.
struct PingPong {
  WaitSlot to_ping;
  WaitSlot to_pong;
};
Task<void> Pong(PingPong* pp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    co_await pp->to_pong.Wait();
    pp->to_ping.Notify();
  }
}
Task<void> Ping(PingPong* pp, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    pp->to_pong.Notify();
    co_await pp->to_ping.Wait();
  }
}

void BM_CrossSchedulerPingPong(benchmark::State& state) {
  auto rt = MakeRuntime(2);
  const int64_t rounds = bench::Scaled(200'000, 4'000);
  for (auto _ : state) {
    PingPong pp;
    (void)rt->Spawn(Pong(&pp, rounds), 1);
    rt->BlockOn(Ping(&pp, rounds), 0);
  }
  state.SetItemsProcessed(state.iterations() * rounds);
}
BENCHMARK(BM_CrossSchedulerPingPong)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- 100k concurrent timers of random 0-10 ms.
struct TimerRun {
  int64_t fired = 0;
  int64_t out_of_order = 0;
  int64_t early = 0;
  int64_t last_deadline = 0;
};
// The deadline is taken when the timer is armed: "concurrent timers" are the ones pending at
// once, and a timer armed after its deadline passed has nothing to be ordered against.
Task<void> OneTimer(int64_t delay_ns, TimerRun* run) {
  Scheduler* s = Scheduler::Current();
  int64_t deadline_ns = s->NowNanos() + delay_ns;
  co_await SleepUntilNanos(deadline_ns);
  if (deadline_ns < run->last_deadline) ++run->out_of_order;
  if (s->NowNanos() < deadline_ns) ++run->early;
  run->last_deadline = deadline_ns;
  ++run->fired;
}
Task<void> ManyTimers(int64_t n, TimerRun* run) {
  absl::BitGen gen;
  Scheduler* s = Scheduler::Current();
  for (int64_t i = 0; i < n; ++i) {
    s->Spawn(OneTimer(absl::Uniform<int64_t>(gen, 0, 10'000'000), run));
  }
  WaitSlot never;
  while (run->fired < n) co_await never.Wait(absl::Now() + absl::Milliseconds(1));
}

// Spinning is off here: with timers spread over 10 ms an idle scheduler would spin between them,
// and that is the latency policy's cost, not the timers'. Every timer must fire in deadline order
// and never early: a sanity check (any run that breaks it fails), not a figure to judge.
void BM_Timers100k(benchmark::State& state) {
  auto rt = MakeRuntime(1, absl::ZeroDuration());
  const int64_t timers = bench::Scaled(100'000, 2'000);
  double cpu = 0;
  TimerRun total;
  for (auto _ : state) {
    TimerRun run;
    double before = CpuSeconds();
    rt->BlockOn(ManyTimers(timers, &run));
    cpu += CpuSeconds() - before;
    total.out_of_order += run.out_of_order;
    total.early += run.early;
  }
  state.counters["cpu_ns_per_timer"] = cpu * 1e9 / (state.iterations() * timers);
  state.SetItemsProcessed(state.iterations() * timers);
  if (total.out_of_order > 0 || total.early > 0) {
    state.SkipWithError("a timer fired out of deadline order or early");
  }
}
BENCHMARK(BM_Timers100k)->Unit(benchmark::kMillisecond)->UseRealTime();

// --- CPU used by an idle runtime (one scheduler per core) over one second. Each scheduler holds
// a timer an hour away, as an idle service does (a supervisor's period, a call's timeout): a
// pending timer that is not due must not keep its scheduler awake.
void BM_IdleRuntimeCpu(benchmark::State& state) {
  auto rt = MakeRuntime(0);
  for (int i = 0; i < rt->size(); ++i) {
    absl::Status spawned = rt->Spawn([]() -> Task<void> { co_await Sleep(absl::Hours(1)); }(), i);
    if (!spawned.ok()) state.SkipWithError("spawning a sleeper failed");
  }
  rt->BlockOn(YieldLoop(10));  // Make sure every scheduler ran and went idle.
  double cpu_percent = 0;
  for (auto _ : state) {
    double before = CpuSeconds();
    absl::Time start = absl::Now();
    absl::SleepFor(bench::Smoke() ? absl::Milliseconds(50) : absl::Seconds(1));
    cpu_percent = 100 * (CpuSeconds() - before) / absl::ToDoubleSeconds(absl::Now() - start);
  }
  state.counters["cpu_percent"] = cpu_percent;
}
BENCHMARK(BM_IdleRuntimeCpu)->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace etsmgr

int main(int argc, char** argv) {
  using etsmgr::bench::Better;
  return etsmgr::bench::RunWithTargets(
      argc, argv,
      {
          {"BM_CoroutineSwitch", "ns_per_switch", 10, Better::kLower, "ns",
           "same-thread coroutine switch"},
          {"BM_PostResumeOneScheduler*", "items_per_second", 20e6, Better::kHigher, "/s",
           "post + resume on one scheduler"},
          {"BM_CrossSchedulerPingPong*", "items_per_second", 500e3, Better::kHigher, "/s",
           "cross-scheduler ping-pong round trips"},
          {"BM_Timers100k*", "cpu_ns_per_timer", 1000, Better::kLower, "ns",
           "CPU per timer (spawn + arm + fire)"},
          {"BM_IdleRuntimeCpu*", "cpu_percent", 1, Better::kLower, "%",
           "CPU of an idle runtime over 1 s"},
      });
}
