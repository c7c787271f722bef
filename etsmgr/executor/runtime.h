// Runtime: N schedulers, one thread each (default: one per core), plus a blocking bridge.
//
//   absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create({});
//   int v = (*rt)->BlockOn(ComputeSomething());         // from main or any plain thread
//   (*rt)->Spawn(Background());                          // detached, least-loaded scheduler
//   (*rt)->Post([] { ... }, /*scheduler=*/1);            // a plain function on scheduler 1
//
// Deterministic mode (`options.deterministic = true`) makes a runtime with one scheduler and no
// thread: the calling thread drives it (BlockOn runs steps until the task completes), time is
// virtual (it moves when nothing is ready, by `slice` when a slice is used up, and by `slice`
// but at most 1 ms every 4096 runs in a row that used up none, as in a loop of Yield()), and
// the order among ready coroutines comes from `options.seed`, so a failing seed replays exactly.
//
// Threading contract: every method may be called from any thread that is not one of the
// runtime's scheduler threads, except Spawn/Post, which may also be called from scheduler
// threads. BlockOn from a scheduler thread would deadlock and aborts with a message.
//
// Shutdown (explicit or by the destructor) stops every scheduler, joins the threads, cancels
// pending timers and destroys every coroutine frame still alive, running its destructors once.
// A BlockOn whose task is destroyed this way throws RuntimeShutDown.
#ifndef ETSMGR_EXECUTOR_RUNTIME_H_
#define ETSMGR_EXECUTOR_RUNTIME_H_

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/backend.h"
#include "etsmgr/executor/scheduler.h"
#include "etsmgr/executor/task.h"

namespace etsmgr {

struct RuntimeOptions {
  // Number of schedulers (threads); 0 means one per core. Ignored in deterministic mode (1).
  int schedulers = 0;
  BackendPreference backend = BackendPreference::kAuto;
  absl::Duration spin = absl::Microseconds(50);
  bool deterministic = false;
  uint64_t seed = 0;
  bool shuffle = kShuffleRunQueuesByDefault;
  // Fairness (see SchedulerOptions): a process or task that keeps going yields after this many
  // charges or this much time in one slice. Deterministic mode counts charges only.
  uint32_t slice_reductions = 4000;
  absl::Duration slice = absl::Microseconds(500);
  // Work stealing: an idle scheduler takes runnable processes (and tasks not yet started) from a
  // busy one. Processes spawned on a given scheduler (SpawnOptions::scheduler) stay there.
  bool steal = true;
};

// Thrown by BlockOn when the runtime shuts down before the task completed.
class RuntimeShutDown : public std::runtime_error {
 public:
  RuntimeShutDown() : std::runtime_error("runtime shut down before the task completed") {}
};

class Runtime {
 public:
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(const RuntimeOptions& options = {});
  ~Runtime();

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int size() const { return static_cast<int>(schedulers_.size()); }
  Scheduler& scheduler(int index) { return *schedulers_[index]; }
  Backend backend() const { return schedulers_.front()->backend(); }
  bool deterministic() const { return deterministic_; }

  // The scheduler with the fewest live roots (spawned tasks, processes).
  Scheduler& LeastLoaded();

  // Scheduler `index`, or the least loaded for -1. FailedPrecondition after shutdown,
  // InvalidArgument for a bad index.
  absl::StatusOr<Scheduler*> PickScheduler(int index);

  // Runs `task` detached on scheduler `index` (-1: least loaded, and an idle scheduler may take
  // it before it starts; a given index keeps it there). FailedPrecondition after shutdown;
  // InvalidArgument for a bad index.
  absl::Status Spawn(Task<void> task, int index = -1);
  // Runs `fn` on scheduler `index` (-1: least loaded). Same errors as Spawn.
  absl::Status Post(std::function<void()> fn, int index = -1);

  // Runs `task` to completion and returns its value or rethrows its exception.
  template <typename T>
  T BlockOn(Task<T> task, int index = -1);

  // Deterministic mode: runs steps until nothing is ready and no timer is pending.
  size_t RunUntilIdle(size_t max_steps = SIZE_MAX);

  // Idempotent. Must not be called from a scheduler thread.
  void Shutdown();

 private:
  Runtime() = default;
  bool DriveUntil(const std::atomic<bool>& done);  // Deterministic BlockOn.
  static bool OnSchedulerThread() { return Scheduler::Current() != nullptr; }

  bool deterministic_ = false;
  std::vector<std::unique_ptr<Scheduler>> schedulers_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_threads_{0};
  std::atomic<bool> shut_down_{false};
  Mutex shutdown_mutex_;  // Serialises Shutdown().
};

namespace runtime_internal {

// Result hand-off from the coroutine that runs a BlockOn task to the blocked thread.
template <typename T>
struct BlockOnState {
  std::mutex mutex;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  bool abandoned = false;  // The task's frame was destroyed by shutdown.
  std::exception_ptr exception;
  std::conditional_t<
      std::is_void_v<T>, bool,
      std::optional<std::conditional_t<std::is_reference_v<T>,
                                       std::reference_wrapper<std::remove_reference_t<T>>, T>>>
      value{};

  void Finish(bool abandon) {
    std::lock_guard<std::mutex> lock(mutex);
    if (done.load(std::memory_order_relaxed)) return;
    abandoned = abandon;
    done.store(true, std::memory_order_release);
    cv.notify_all();
  }
};

// Signals the blocked thread as the frame's last access to the state (the thread may leave as
// soon as it wakes): with the result, or as abandoned when shutdown destroyed the frame. It is a
// coroutine parameter, so it lives in the frame from creation: a frame destroyed before it ever
// ran signals too.
template <typename T>
class FinishGuard {
 public:
  explicit FinishGuard(std::shared_ptr<BlockOnState<T>> state) : state_(std::move(state)) {}
  FinishGuard(FinishGuard&& other) noexcept
      : state_(std::move(other.state_)), completed_(other.completed_) {}
  ~FinishGuard() {
    if (state_) state_->Finish(/*abandon=*/!completed_);
  }
  BlockOnState<T>* state() const { return state_.get(); }
  void set_completed() { completed_ = true; }

 private:
  std::shared_ptr<BlockOnState<T>> state_;  // Shared: the caller may give up first (deadlock).
  bool completed_ = false;
};

template <typename T>
Task<void> RunAndSignal(Task<T> task, FinishGuard<T> guard) {
  BlockOnState<T>* state = guard.state();
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
    } else {
      state->value.emplace(co_await std::move(task));
    }
  } catch (...) {
    state->exception = std::current_exception();
  }
  guard.set_completed();
}

}  // namespace runtime_internal

template <typename T>
T Runtime::BlockOn(Task<T> task, int index) {
  if (OnSchedulerThread()) {
    std::fputs("etsmgr: Runtime::BlockOn called from a scheduler thread (would deadlock)\n",
               stderr);
    std::abort();
  }
  auto shared = std::make_shared<runtime_internal::BlockOnState<T>>();
  runtime_internal::BlockOnState<T>& state = *shared;
  absl::Status spawned = Spawn(
      runtime_internal::RunAndSignal(std::move(task), runtime_internal::FinishGuard<T>(shared)),
      index);
  if (!spawned.ok()) throw RuntimeShutDown();
  if (deterministic_) {
    if (!DriveUntil(state.done)) {
      throw std::logic_error(
          "deterministic BlockOn: the task is blocked and nothing else can run (deadlock)");
    }
  } else {
    std::unique_lock<std::mutex> lock(state.mutex);
    state.cv.wait(lock, [&] { return state.done.load(std::memory_order_acquire); });
  }
  std::unique_lock<std::mutex> lock(state.mutex);  // Pairs with Finish(): value/exception visible.
  if (state.abandoned) throw RuntimeShutDown();
  if (state.exception) {
    // Take the only reference: the frame may drop its copy of the state on another thread.
    std::exception_ptr exception = std::exchange(state.exception, nullptr);
    lock.unlock();
    std::rethrow_exception(exception);
  }
  if constexpr (std::is_void_v<T>) {
    return;
  } else if constexpr (std::is_reference_v<T>) {
    return state.value->get();
  } else {
    return std::move(*state.value);
  }
}

// Free-function spelling of Runtime::BlockOn (a.k.a. sync_wait).
template <typename T>
T BlockOn(Runtime& runtime, Task<T> task) {
  return runtime.BlockOn(std::move(task));
}

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_RUNTIME_H_
