#include "etsmgr/executor/runtime.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/exception_text.h"
#include "etsmgr/base/log.h"

namespace etsmgr {
namespace {

// A posted std::function: heap-allocated, deleted after running or on discard.
class FunctionRunnable final : public Runnable {
 public:
  explicit FunctionRunnable(std::function<void()> fn) : fn_(std::move(fn)) {}
  void Run() noexcept override {
    try {
      fn_();
    } catch (...) {
      Logf(LogLevel::kError, "posted function threw: %s", CurrentExceptionText());
    }
    delete this;
  }
  void Discard() noexcept override { delete this; }

 private:
  ~FunctionRunnable() = default;
  std::function<void()> fn_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(const RuntimeOptions& options) {
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->deterministic_ = options.deterministic;
  int n = options.deterministic ? 1 : options.schedulers;
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("schedulers = ", n, " < 0"));
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  SchedulerOptions so;
  so.backend = options.backend;
  so.spin = options.spin;
  so.deterministic = options.deterministic;
  so.seed = options.seed;
  so.shuffle = options.shuffle;
  so.slice_reductions = options.slice_reductions;
  so.slice = options.slice;
  int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create(so);
    if (!s.ok()) return s.status();
    (*s)->set_spin_gate(&rt->running_threads_, cpus);
    rt->schedulers_.push_back(std::move(*s));
  }
  if (!options.deterministic && options.steal && n > 1) {
    for (int i = 0; i < n; ++i) {
      std::vector<Scheduler*> siblings;
      for (int j = 0; j < n; ++j) {
        if (j != i) siblings.push_back(rt->schedulers_[j].get());
      }
      rt->schedulers_[i]->set_siblings(std::move(siblings));
    }
  }
  if (!options.deterministic) {
    rt->running_threads_.store(n);
    for (int i = 0; i < n; ++i) {
      rt->threads_.emplace_back([s = rt->schedulers_[i].get()] { s->Run(); });
    }
  }
  Logf(LogLevel::kInfo, "runtime started: %d scheduler(s) on %s%s", n,
       std::string(BackendName(rt->backend())), options.deterministic ? " (deterministic)" : "");
  return rt;
}

Runtime::~Runtime() { Shutdown(); }

Scheduler& Runtime::LeastLoaded() {
  Scheduler* best = schedulers_.front().get();
  for (auto& s : schedulers_) {
    if (s->live_roots() < best->live_roots()) best = s.get();
  }
  return *best;
}

absl::StatusOr<Scheduler*> Runtime::PickScheduler(int index) {
  if (shut_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("runtime is shut down");
  }
  if (index < 0) return &LeastLoaded();
  if (index >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("scheduler index ", index, " out of range [0, ", size(), ")"));
  }
  return schedulers_[index].get();
}

absl::Status Runtime::Spawn(Task<void> task, int index) {
  absl::StatusOr<Scheduler*> s = PickScheduler(index);
  if (!s.ok()) return s.status();
  if (auto hook = executor_internal::g_before_root_hook.load(std::memory_order_acquire)) hook();
  if (!(*s)->Spawn(std::move(task), /*movable=*/index < 0)) {
    return absl::FailedPreconditionError("runtime is shut down");
  }
  return absl::OkStatus();
}

absl::Status Runtime::Post(std::function<void()> fn, int index) {
  absl::StatusOr<Scheduler*> s = PickScheduler(index);
  if (!s.ok()) return s.status();
  (*s)->Post(new FunctionRunnable(std::move(fn)));
  return absl::OkStatus();
}

size_t Runtime::RunUntilIdle(size_t max_steps) {
  return deterministic_ ? schedulers_.front()->RunUntilIdle(max_steps) : 0;
}

bool Runtime::DriveUntil(const std::atomic<bool>& done) {
  Scheduler& s = *schedulers_.front();
  while (!done.load(std::memory_order_acquire)) {
    if (!s.RunStep()) return false;
  }
  return true;
}

void Runtime::Shutdown() {
  ExclusiveLock lock(shutdown_mutex_);
  if (shut_down_.exchange(true)) return;
  for (auto& s : schedulers_) s->Stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Two phases across all schedulers: destructors run in DestroyRoots may post to any of them.
  for (auto& s : schedulers_) s->BeginShutdown();
  for (auto& s : schedulers_) s->DestroyRoots();
}

}  // namespace etsmgr
