#include "etsmgr/executor/scheduler.h"

#include <algorithm>
#include <exception>
#include <string>
#include <thread>

#include "etsmgr/base/exception_text.h"
#include "etsmgr/base/log.h"
#include "etsmgr/executor/internal/poller.h"

namespace etsmgr {
namespace {

thread_local Scheduler* t_current = nullptr;

// Makes `s` the current scheduler for a scope, restoring the previous one after.
class CurrentScope {
 public:
  explicit CurrentScope(Scheduler* s) : previous_(t_current) { t_current = s; }
  ~CurrentScope() { t_current = previous_; }

 private:
  Scheduler* previous_;
};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Runs every 64 runnables: pick up remote work and expired timers so a busy local queue cannot
// starve them.
constexpr size_t kPollInterval = 64;

// The frame of a spawned task: owns the Task, is a Runnable (its first resumption) and a Root.
class SpawnedRoot {
 public:
  class promise_type final : public Runnable, public Root {
   public:
    SpawnedRoot get_return_object() noexcept {
      return SpawnedRoot{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct Final {
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<promise_type> h) noexcept {
          h.promise().owner_->RemoveRoot(&h.promise());
          h.destroy();
        }
        void await_resume() const noexcept {}
      };
      return Final{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept {
      Logf(LogLevel::kError, "spawned task exited with exception: %s", CurrentExceptionText());
    }

    void Run() noexcept override {
      std::coroutine_handle<promise_type>::from_promise(*this).resume();
    }
    void DestroyAtShutdown() noexcept override {
      std::coroutine_handle<promise_type>::from_promise(*this).destroy();
    }

    Scheduler* owner_ = nullptr;
  };

  std::coroutine_handle<promise_type> handle;
};

SpawnedRoot RunSpawned(Task<void> task) { co_await std::move(task); }

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options) {
  Backend backend = Backend::kEpoll;
  if (!options.deterministic) {
    absl::StatusOr<Backend> chosen = ChooseBackend(options.backend);
    if (!chosen.ok()) return chosen.status();
    backend = *chosen;
  }
  absl::StatusOr<std::unique_ptr<Poller>> poller = Poller::Create(backend);
  if (!poller.ok()) return poller.status();
  return std::unique_ptr<Scheduler>(new Scheduler(options, backend, std::move(*poller)));
}

Scheduler::Scheduler(const SchedulerOptions& options, Backend backend,
                     std::unique_ptr<Poller> poller)
    : backend_(backend),
      deterministic_(options.deterministic),
      shuffle_(options.shuffle || options.deterministic),
      spin_ns_(options.deterministic ? 0 : absl::ToInt64Nanoseconds(options.spin)),
      poller_(std::move(poller)),
      rng_(options.deterministic ? options.seed : std::random_device{}()) {}

Scheduler::~Scheduler() {
  CurrentScope scope(this);
  BeginShutdown();
  DestroyRoots();
  DiscardQueued();
  timers_.Clear();
}

Scheduler* Scheduler::Current() noexcept { return t_current; }

void Scheduler::Post(Runnable* r) {
  if (shutting_down_.load(std::memory_order_acquire)) {
    r->Discard();
    return;
  }
  if (t_current == this) {
    ready_.PushBack(r);
    return;
  }
  remote_.Push(r);
  if (parked_.load(std::memory_order_seq_cst) && parked_.exchange(false)) poller_->Wake();
}

void Scheduler::Spawn(Task<void> task) {
  SpawnedRoot root = RunSpawned(std::move(task));
  root.handle.promise().owner_ = this;
  AddRoot(&root.handle.promise());
  Post(&root.handle.promise());
}

void Scheduler::Stop() {
  stop_.store(true, std::memory_order_seq_cst);
  poller_->Wake();
}

void Scheduler::AddRoot(Root* root) {
  std::lock_guard<std::mutex> lock(roots_mutex_);
  root->prev_ = nullptr;
  root->next_ = roots_;
  if (roots_ != nullptr) roots_->prev_ = root;
  roots_ = root;
  live_roots_.fetch_add(1, std::memory_order_relaxed);
}

void Scheduler::RemoveRoot(Root* root) {
  std::lock_guard<std::mutex> lock(roots_mutex_);
  if (root->prev_ != nullptr) {
    root->prev_->next_ = root->next_;
  } else {
    roots_ = root->next_;
  }
  if (root->next_ != nullptr) root->next_->prev_ = root->prev_;
  root->prev_ = root->next_ = nullptr;
  live_roots_.fetch_sub(1, std::memory_order_relaxed);
}

int64_t Scheduler::NowNanos() const { return deterministic_ ? virtual_now_ns_ : MonotonicNanos(); }

absl::Time Scheduler::Now() const {
  return deterministic_ ? absl::UnixEpoch() + absl::Nanoseconds(virtual_now_ns_) : absl::Now();
}

int64_t Scheduler::ToSchedulerNanos(absl::Time deadline) const {
  if (deadline == absl::InfiniteFuture()) return INT64_MAX;
  absl::Duration left = deadline - Now();
  if (left <= absl::ZeroDuration()) return NowNanos();
  int64_t ns = absl::ToInt64Nanoseconds(left);
  int64_t now = NowNanos();
  return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

void Scheduler::AddTimer(TimerNode* timer, int64_t deadline_ns) {
  timers_.Insert(timer, deadline_ns);
}

int Scheduler::wake_fd() const { return poller_->wake_fd(); }

absl::Duration Scheduler::TimeUntilNextTimer() const {
  TimerNode* top = timers_.top();
  if (top == nullptr) return absl::InfiniteDuration();
  return absl::Nanoseconds(std::max<int64_t>(0, top->deadline_ns() - NowNanos()));
}

Runnable* Scheduler::NextReady() {
  if (!shuffle_) return ready_.PopFront();
  while (Runnable* r = ready_.PopFront()) pool_.push_back(r);
  if (pool_.empty()) return nullptr;
  size_t pick = std::uniform_int_distribution<size_t>(0, pool_.size() - 1)(rng_);
  std::swap(pool_[pick], pool_.back());
  Runnable* r = pool_.back();
  pool_.pop_back();
  return r;
}

size_t Scheduler::FireExpiredTimers(int64_t now_ns) {
  // Bounded by the timers present on entry, so a timer re-armed for "now" waits for the next
  // round instead of looping here.
  size_t budget = timers_.size();
  size_t fired = 0;
  while (fired < budget) {
    TimerNode* top = timers_.top();
    if (top == nullptr || top->deadline_ns() > now_ns) break;
    timers_.PopTop();
    ++fired;
    top->Fire();
  }
  return fired;
}

size_t Scheduler::RunReady() {
  CurrentScope scope(this);
  parked_.store(false, std::memory_order_seq_cst);
  poller_->Drain();
  remote_.DrainInto(ready_);
  size_t ran = FireExpiredTimers(NowNanos());
  // Run only what is ready on entry (plus what timers made ready), so this step ends even when
  // coroutines keep yielding.
  size_t budget = ready_.size() + pool_.size();
  while (budget-- > 0) {
    Runnable* r = NextReady();
    if (r == nullptr) break;
    r->Run();
    ++ran;
  }
  // Outside RunReady an embedded scheduler counts as parked: posters must wake its loop.
  parked_.store(true, std::memory_order_seq_cst);
  if (!remote_.IsEmpty() || HasLocalWork()) poller_->Wake();
  return ran;
}

bool Scheduler::RunStep() {
  CurrentScope scope(this);
  remote_.DrainInto(ready_);
  if (Runnable* r = NextReady()) {
    r->Run();
    return true;
  }
  TimerNode* top = timers_.top();
  if (top == nullptr) return false;
  if (deterministic_) {
    virtual_now_ns_ = std::max(virtual_now_ns_, top->deadline_ns());
  } else if (top->deadline_ns() > NowNanos()) {
    return false;
  }
  timers_.PopTop();
  top->Fire();
  return true;
}

size_t Scheduler::RunUntilIdle(size_t max_steps) {
  size_t steps = 0;
  while (steps < max_steps && RunStep()) ++steps;
  return steps;
}

bool Scheduler::SpinForWork() {
  if (spin_ns_ <= 0) return false;
  if (running_threads_ != nullptr ? running_threads_->load(std::memory_order_relaxed) > cpus_
                                  : std::thread::hardware_concurrency() < 2) {
    return false;
  }
  int64_t deadline = MonotonicNanos() + spin_ns_;
  if (TimerNode* top = timers_.top()) deadline = std::min(deadline, top->deadline_ns());
  for (unsigned i = 0;; ++i) {
    if (!remote_.IsEmpty() || stop_.load(std::memory_order_relaxed)) return true;
    if ((i & 63) == 63 && MonotonicNanos() >= deadline) return !timers_.empty();
    CpuRelax();
  }
}

void Scheduler::Park() {
  if (running_threads_ != nullptr) running_threads_->fetch_sub(1, std::memory_order_relaxed);
  parked_.store(true, std::memory_order_seq_cst);
  if (remote_.IsEmpty() && !stop_.load(std::memory_order_seq_cst)) {
    int64_t timeout = -1;
    if (TimerNode* top = timers_.top()) {
      timeout = std::max<int64_t>(0, top->deadline_ns() - MonotonicNanos());
    }
    poller_->Wait(timeout);
  }
  parked_.store(false, std::memory_order_seq_cst);
  if (running_threads_ != nullptr) running_threads_->fetch_add(1, std::memory_order_relaxed);
}

void Scheduler::Run() {
  CurrentScope scope(this);
  size_t since_poll = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    if (Runnable* r = NextReady()) {
      r->Run();
      if (++since_poll < kPollInterval) continue;
    }
    since_poll = 0;
    size_t got = remote_.DrainInto(ready_);
    if (!timers_.empty()) got += FireExpiredTimers(MonotonicNanos());
    if (got > 0 || HasLocalWork()) continue;
    if (SpinForWork()) continue;
    Park();
  }
  stop_.store(false, std::memory_order_relaxed);  // Run() may be called again.
}

void Scheduler::DiscardQueued() {
  remote_.DrainInto(ready_);
  while (Runnable* r = ready_.PopFront()) r->Discard();
  for (Runnable* r : pool_) r->Discard();
  pool_.clear();
}

void Scheduler::BeginShutdown() {
  shutting_down_.store(true, std::memory_order_release);
  CurrentScope scope(this);
  DiscardQueued();
}

void Scheduler::DestroyRoots() {
  CurrentScope scope(this);
  while (true) {
    Root* root;
    {
      std::lock_guard<std::mutex> lock(roots_mutex_);
      root = roots_;
    }
    if (root == nullptr) break;
    RemoveRoot(root);
    root->DestroyAtShutdown();
  }
  timers_.Clear();
}

// --- Awaitables.

void YieldAwaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  node_.set_handle(h);
  Scheduler::Current()->Post(&node_);
}

SleepAwaiter::~SleepAwaiter() {
  if (armed()) scheduler_->CancelTimer(this);
}

void SleepAwaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  scheduler_ = Scheduler::Current();
  handle_ = h;
  scheduler_->AddTimer(this, deadline_ns_);
}

void SleepAwaiter::Fire() noexcept { handle_.resume(); }

SleepAwaiter Sleep(absl::Duration duration) {
  Scheduler* s = Scheduler::Current();
  int64_t now = s->NowNanos();
  if (duration <= absl::ZeroDuration()) return SleepAwaiter(now);
  if (duration == absl::InfiniteDuration()) return SleepAwaiter(INT64_MAX);
  int64_t ns = absl::ToInt64Nanoseconds(duration);
  return SleepAwaiter(ns > INT64_MAX - now ? INT64_MAX : now + ns);
}

SleepAwaiter SleepUntil(absl::Time deadline) {
  return SleepAwaiter(Scheduler::Current()->ToSchedulerNanos(deadline));
}

void ResumeOnAwaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  node_.set_handle(h);
  target_->Post(&node_);
}

}  // namespace etsmgr
