// Scheduler: runs coroutines (as Runnables) on one thread, with timers and cross-thread wake-ups.
//
// A scheduler is driven by exactly one thread at a time:
// - inside a Runtime, by its own thread (Run());
// - embedded in a foreign event loop, by that loop: poll wake_fd() with timeout
//   TimeUntilNextTimer(), then call RunReady();
// - in deterministic mode, by a test, step by step (RunStep()) with virtual time.
//
//   absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create({});
//   (*s)->Spawn(MyTask());
//   (*s)->RunReady();
//
// Threading contract
// - Post() and Stop() may be called from any thread.
// - Everything else (timers, Spawn of an unowned task, RunReady/RunStep) belongs to the driving
//   thread. Current() is that scheduler while its thread is running it.
// - Work posted from another thread goes through a lock-free MPSC queue; if the scheduler is
//   parked, the poster wakes it with one write(2) to an eventfd. Before parking, an idle
//   scheduler spins for `spin` (default 50 us) when that cannot take a vCPU away from another
//   running scheduler (fewer running scheduler threads than CPUs): waking a halted vCPU costs
//   hundreds of times a spinning hand-off (figures: bench/results/design-measurements.md).
//
// Frame ownership: Spawn() makes the scheduler own a detached root frame until it finishes or
// the scheduler is destroyed (which destroys every root still suspended, running destructors
// exactly once). Runnables still queued at destruction are Discard()ed, never run.
#ifndef ETSMGR_EXECUTOR_SCHEDULER_H_
#define ETSMGR_EXECUTOR_SCHEDULER_H_

#include <time.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/backend.h"
#include "etsmgr/executor/internal/run_queue.h"
#include "etsmgr/executor/internal/timer_heap.h"
#include "etsmgr/executor/io_op.h"
#include "etsmgr/executor/runnable.h"
#include "etsmgr/executor/task.h"

namespace etsmgr {

namespace executor_internal {
class Poller;
// Tests: called by Runtime::Spawn (and so BlockOn) between its check that the runtime runs and
// the task becoming a root (a Shutdown on another thread can land there).
using SpawnHook = void (*)();
inline std::atomic<SpawnHook> g_before_root_hook{nullptr};
}  // namespace executor_internal
class Scheduler;

// Whether sanitizer builds shuffle run queues (set by .bazelrc's asan/tsan configs).
#ifdef ETSMGR_SHUFFLE_RUN_QUEUES
inline constexpr bool kShuffleRunQueuesByDefault = true;
#else
inline constexpr bool kShuffleRunQueuesByDefault = false;
#endif

struct SchedulerOptions {
  BackendPreference backend = BackendPreference::kAuto;
  // How long an idle scheduler spins before parking in the kernel (0: never spin).
  absl::Duration spin = absl::Microseconds(50);
  // Deterministic mode: no kernel waits, virtual time starting at 0, and the next runnable is
  // chosen among all ready ones by a PRNG seeded with `seed`.
  bool deterministic = false;
  uint64_t seed = 0;
  // Pick ready runnables in random order instead of FIFO (shakes out order assumptions).
  bool shuffle = kShuffleRunQueuesByDefault;
  // Fairness: a runnable that keeps going past its time slice -- `slice_reductions` charges
  // (Charge(): a receive that finds its message, a table call of the manager, ...) or `slice` of
  // time, whichever comes first -- yields to the back of the run queue at its next charge.
  // Deterministic mode counts charges only, and a slice used up there advances virtual time by
  // `slice` (so timers still come due while runnables keep each other busy).
  uint32_t slice_reductions = 4000;
  absl::Duration slice = absl::Microseconds(500);
};

// A coroutine frame the scheduler owns (a spawned task or, later, a process). The scheduler
// destroys roots still alive when it is destroyed. Used by the driving thread only.
class Root {
 public:
  // Destroys the frame(s) this root owns and then the root itself.
  virtual void DestroyAtShutdown() noexcept = 0;

 protected:
  Root() = default;
  ~Root() = default;

 private:
  friend class Scheduler;
  Root* prev_ = nullptr;
  Root* next_ = nullptr;
};

class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options);
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // The scheduler whose thread is calling, or nullptr.
  static Scheduler* Current() noexcept;

  Backend backend() const { return backend_; }
  bool deterministic() const { return deterministic_; }
  // Any thread: true while nobody runs this scheduler (its thread is blocked in the kernel, or it
  // is embedded and its loop is outside RunReady). An idle runtime's schedulers all park.
  bool parked() const { return parked_.load(std::memory_order_acquire); }

  // Any thread. Runs `r` on this scheduler's thread (FIFO per poster, unless shuffling).
  void Post(Runnable* r);

  // Runs `task` as a detached root on this scheduler. Any thread. An exception escaping the task
  // is logged at error level.
  // `movable`: an idle sibling may take it before it starts (work stealing); a task spawned on a
  // given scheduler stays there.
  // False (the task destroyed unstarted) once the scheduler's roots were destroyed at shutdown.
  bool Spawn(Task<void> task, bool movable = false);

  // Any thread: makes Run() return after the current runnable.
  void Stop();

  // Driving thread: runs until Stop(), parking when idle.
  void Run();
  // Driving thread: runs what is ready now (including expired timers) without blocking; returns
  // how many runnables and timers ran.
  size_t RunReady();
  // Deterministic mode: runs one runnable, or if none is ready advances virtual time to the next
  // timer and fires it. Returns false when nothing is ready and no timer is pending.
  bool RunStep();
  // Deterministic mode: RunStep() until it returns false or `max_steps` steps ran.
  size_t RunUntilIdle(size_t max_steps = SIZE_MAX);

  // For embedding: readable when posted work is waiting; and the time until the next timer
  // (InfiniteDuration() if none).
  int wake_fd() const;
  absl::Duration TimeUntilNextTimer() const;

  // The scheduler's clock: monotonic nanoseconds, or virtual nanoseconds in deterministic mode.
  int64_t NowNanos() const;
  // Wall-clock time (virtual time maps to the Unix epoch + virtual nanoseconds).
  absl::Time Now() const;
  // Converts an absl::Time deadline to this scheduler's clock.
  int64_t ToSchedulerNanos(absl::Time deadline) const;

  // --- Fairness (driving thread, from the runnable that is running).
  // Charges `n` reductions to the running runnable's time slice; true when the slice is used up
  // (count or time): the caller should yield now (Yield(), or its own way back into the queue).
  // The slice starts when the scheduler starts the runnable.
  bool Charge(uint32_t n = 1) {
    slice_count_ += n;
    if (slice_count_ >= slice_reductions_) return SliceUsed();
    if (slice_ns_ == 0) return false;
    if (!slice_stamped_) {
      // A runnable that charges once (most do) reads no clock; a second charge starts it.
      if (slice_count_ > n) StampSlice();
      return false;
    }
    // The clock is read on each of the first charges (a slow request is checked at once), then
    // on every 16th (fast ones do not pay for it each time).
    if ((slice_count_ <= 16 || (slice_count_ & 15) == 0) &&
        SliceClock() - slice_start_ns_ >= slice_ns_) {
      return SliceUsed();
    }
    return false;
  }
  // Starts the slice's clock now. A runnable that charged in its last run (a busy one) calls it
  // when it starts, so its slice is measured from its start, not from its first charge; others
  // pay no clock read.
  void StampSlice() {
    slice_start_ns_ = SliceClock();
    slice_stamped_ = true;
  }
  // Times the running runnable yielded because its slice was used up (tests, benchmarks; any
  // thread may read it while the scheduler runs).
  uint64_t slices_used() const { return slices_used_.load(std::memory_order_relaxed); }

  // --- Asynchronous I/O (see io.h for the awaitables built on these).
  // Driving thread: starts `op` on this scheduler's poller. True when it completed at once (its
  // result is in; no waker call follows). FailedPrecondition-worthy misuse (deterministic mode,
  // which has no kernel waits) is the caller's to check.
  bool SubmitIo(IoOp* op);
  // Any thread: asks `op` (submitted here) to finish early; from another thread the request is
  // forwarded to this scheduler's thread.
  void CancelIo(IoOp* op);
  // Driving thread: cancels every operation in flight here on `fd` (before it is closed).
  void CancelIoOnFd(int fd);
  // Operations in flight on this scheduler.
  size_t io_in_flight() const;
  // For embedding with I/O in flight: readable when completions are waiting.
  int io_fd() const;

  // Driving thread only. (Timers arm themselves: executor_internal::TimerNode::ArmOn.)
  size_t pending_timers() const { return timers_.size(); }
  // Any thread (a root may finish on another scheduler than the one that owns it). False once
  // DestroyRoots began (shutdown): the root is not added, and the caller destroys it (a root
  // added then would never run nor be destroyed: a BlockOn on it waited for ever).
  [[nodiscard]] bool AddRoot(Root* root);
  // AddRoot, then Post(first_run) (none when null), with DestroyRoots kept out in between (it
  // would free the root before the post touched it). False as AddRoot.
  [[nodiscard]] bool AddRootAndPost(Root* root, Runnable* first_run);
  void RemoveRoot(Root* root);
  size_t live_roots() const { return live_roots_.load(std::memory_order_relaxed); }

  // Teardown, after the driving thread stopped (Runtime calls these across all its schedulers
  // before destroying any, because destructors may post to other schedulers):
  // BeginShutdown() discards queued runnables and makes later Post()s discard at once;
  // DestroyRoots() destroys every root frame still alive. The destructor does both if needed.
  void BeginShutdown();
  void DestroyRoots();

  // Shared by the schedulers of one Runtime to decide whether spinning is allowed.
  void set_spin_gate(std::atomic<int>* running_threads, int cpus) {
    running_threads_ = running_threads;
    cpus_ = cpus;
  }
  // The other schedulers of the Runtime, for work stealing (none: no stealing). Before Run().
  void set_siblings(std::vector<Scheduler*> siblings) { siblings_ = std::move(siblings); }
  // Runnables this scheduler handed to idle siblings / took from busy ones (tests, benchmarks).
  uint64_t donated() const { return donated_.load(std::memory_order_relaxed); }
  uint64_t stolen() const { return stolen_.load(std::memory_order_relaxed); }

 private:
  friend class executor_internal::TimerNode;  // ArmOn / DisarmOn: the timer heap.
  Scheduler(const SchedulerOptions& options, Backend backend,
            std::unique_ptr<executor_internal::Poller> poller);

  Runnable* NextReady();
  size_t FireExpiredTimers(int64_t now_ns);
  bool HasLocalWork() const { return !ready_.empty() || !pool_.empty(); }
  // Starts a runnable's time slice (a store: the clock is read at its first Charge()).
  void BeginSlice() {
    slice_count_ = 0;
    slice_stamped_ = false;
  }
  bool SliceUsed() {
    slice_expired_ = true;
    // Only the driving thread writes: a load and a store, no read-modify-write.
    slices_used_.store(slices_used_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return true;
  }
  int64_t SliceClock() const { return deterministic_ ? 0 : MonotonicNanosNow(); }
  static int64_t MonotonicNanosNow() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  // Between runnables: remote work and timers, then a thief's request. Returns how many runnables
  // became ready.
  size_t Poll();
  // Work stealing: an idle scheduler asks the busiest sibling for work; a busy one hands half of
  // its movable ready runnables to whoever asked.
  bool AskForWork();  // True when a busy sibling was asked.
  void DonateTo(Scheduler* thief);
  void PublishLoad() {
    queued_.store(static_cast<uint32_t>(ready_.size() + pool_.size()), std::memory_order_relaxed);
  }
  bool SpinForWork();
  // Blocks until woken or the next timer; at most `limit_ns` (-1: no limit).
  void Park(int64_t limit_ns = -1);
  void DiscardQueued();

  // --- Written by any thread.
  executor_internal::RemoteRunQueue remote_;
  // True while nobody is running this scheduler: the driving thread is (about to be) blocked in
  // Wait(), or, when embedded, the foreign loop is outside RunReady(). Posters then wake it.
  std::atomic<bool> parked_{true};
  std::atomic<bool> stop_{false};
  std::atomic<size_t> live_roots_{0};
  std::atomic<bool> shutting_down_{false};
  // A sibling that is idle and asks this scheduler for work (null: none).
  std::atomic<Scheduler*> steal_request_{nullptr};
  // Set by a busy sibling that woke this (parked) scheduler to come and ask for work; cleared
  // when it asks. One wake-up per request, not one per poll.
  std::atomic<bool> nudged_{false};
  // Ready runnables at the last poll (what a thief looks at to pick whom to ask).
  std::atomic<uint32_t> queued_{0};
  std::atomic<uint64_t> donated_{0};
  std::atomic<uint64_t> stolen_{0};
  Mutex roots_mutex_;
  Root* roots_ ABSL_GUARDED_BY(roots_mutex_) = nullptr;
  bool roots_closed_ ABSL_GUARDED_BY(roots_mutex_) = false;  // DestroyRoots began.

  // --- Immutable after construction.
  const Backend backend_;
  const bool deterministic_;
  const bool shuffle_;
  // Work stealing backoff (this scheduler's thread only; see scheduler.cc).
  int64_t steal_retry_ns_ = 500'000;
  int64_t no_nudge_until_ns_ = 0;
  const int64_t spin_ns_;
  std::unique_ptr<executor_internal::Poller> poller_;
  std::atomic<int>* running_threads_ = nullptr;
  int cpus_ = 1;
  const uint32_t slice_reductions_;
  const int64_t slice_ns_;          // 0: no time limit (deterministic mode).
  const int64_t virtual_slice_ns_;  // Deterministic mode: virtual time a used-up slice takes.
  // Deterministic mode: runnables run since virtual time last moved. Runnables that keep each
  // other ready without charging (a process that yields in a loop: each Yield ends its run, and
  // a run's charges start from zero) take a slice of virtual time every kRunsPerVirtualSlice
  // runs, so that timers still come due.
  static constexpr uint32_t kRunsPerVirtualSlice = 4096;
  uint32_t runs_without_time_ = 0;
  std::vector<Scheduler*> siblings_;  // Set before Run().

  // --- Driving thread only.
  executor_internal::RunQueue ready_;
  std::vector<Runnable*> pool_;  // Shuffle / deterministic mode: ready runnables to pick from.
  std::mt19937_64 rng_;
  executor_internal::TimerHeap timers_;
  int64_t virtual_now_ns_ = 0;
  uint32_t slice_count_ = 0;
  bool slice_stamped_ = false;
  int64_t slice_start_ns_ = 0;
  bool slice_expired_ = false;
  std::atomic<uint64_t> slices_used_{0};
};

// Awaitables for code running on a scheduler. Each must be awaited from a coroutine running on a
// scheduler's thread (Scheduler::Current() != nullptr).
//
// Yield(): lets every other ready runnable of this scheduler run first.
// Sleep(d) / SleepUntil(t): resumes after the duration / at the time (virtual in
// deterministic mode). Destroying the sleeping frame cancels the timer. (Not named SleepFor:
// argument-dependent lookup on absl::Duration would find absl::SleepFor, which blocks.)
// ResumeOn(s): continues the coroutine on scheduler `s` (any scheduler, from any scheduler).
class YieldAwaiter {
 public:
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept;
  void await_resume() const noexcept {}

 private:
  ResumeRunnable node_;
};
inline YieldAwaiter Yield() { return {}; }

class SleepAwaiter final : private executor_internal::TimerNode {
 public:
  explicit SleepAwaiter(int64_t deadline_ns) : deadline_ns_(deadline_ns) {}
  SleepAwaiter(SleepAwaiter&& other) noexcept : deadline_ns_(other.deadline_ns_) {}
  ~SleepAwaiter();
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) noexcept;
  void await_resume() const noexcept {}

 private:
  void Fire() noexcept override;
  int64_t deadline_ns_;
  Scheduler* scheduler_ = nullptr;
  std::coroutine_handle<> handle_;
};
SleepAwaiter Sleep(absl::Duration duration);
SleepAwaiter SleepUntil(absl::Time deadline);
// A deadline on the current scheduler's clock (Scheduler::NowNanos()).
inline SleepAwaiter SleepUntilNanos(int64_t deadline_ns) { return SleepAwaiter(deadline_ns); }

class ResumeOnAwaiter {
 public:
  explicit ResumeOnAwaiter(Scheduler& target) : target_(&target) {}
  bool await_ready() const noexcept { return Scheduler::Current() == target_; }
  void await_suspend(std::coroutine_handle<> h) noexcept;
  void await_resume() const noexcept {}

 private:
  Scheduler* target_;
  ResumeRunnable node_;
};
inline ResumeOnAwaiter ResumeOn(Scheduler& target) { return ResumeOnAwaiter(target); }

// The clock deadlines should be written against, in both modes: the current scheduler's time
// (virtual in deterministic mode, where absl::Now() + d would lie decades ahead), or absl::Now()
// on a thread outside the runtime. `Deadline(d)` is Now() + d.
//
//   co_await mgr.WaitForManager(self, Deadline(absl::Seconds(5)));
inline absl::Time Now() {
  Scheduler* s = Scheduler::Current();
  return s != nullptr ? s->Now() : absl::Now();
}
inline absl::Time Deadline(absl::Duration d) { return Now() + d; }

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_SCHEDULER_H_
