#include "etsmgr/executor/scheduler.h"

#include <algorithm>
#include <exception>
#include <string>
#include <thread>

#include "etsmgr/base/exception_text.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/spin_lock.h"
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

// Runs every 64 runnables: pick up remote work and expired timers so a busy local queue cannot
// starve them.
constexpr size_t kPollInterval = 64;

// An idle scheduler that asked a busy sibling for work parks at most this long before asking
// again (the sibling answers at its next poll; none may have been movable then).
constexpr int64_t kStealRetryNanos = 500'000;
// A thief whose asks keep bringing nothing (the busy sibling's work cannot move: pinned, waiting
// on I/O or a timer, or a started task) asks less and less often, up to this; and a sibling that
// had nothing it could give does not wake the idle ones for as long: asking was all they did,
// each wake-up a spin, close to a whole core of waste.
constexpr int64_t kMaxStealRetryNanos = 4'000'000;
constexpr int64_t kNoNudgeAfterEmptyDonationNanos = 1'000'000;

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
      started_ = true;
      std::coroutine_handle<promise_type>::from_promise(*this).resume();
    }
    // A task that has not started yet holds nothing of its scheduler: it may move. (Once
    // started, its awaiters may hold timers and wake-ups of this scheduler.)
    bool MigrateTo(Scheduler* to) noexcept override {
      if (started_ || !movable_) return false;
      owner_->RemoveRoot(this);
      // Stealing runs on scheduler threads, all joined before any DestroyRoots: never refused.
      (void)to->AddRoot(this);
      owner_ = to;
      to->Post(this);
      return true;
    }
    void DestroyAtShutdown() noexcept override {
      std::coroutine_handle<promise_type>::from_promise(*this).destroy();
    }

    Scheduler* owner_ = nullptr;
    bool started_ = false;
    bool movable_ = false;
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
  absl::StatusOr<std::unique_ptr<executor_internal::Poller>> poller =
      executor_internal::Poller::Create(backend);
  if (!poller.ok()) return poller.status();
  return std::unique_ptr<Scheduler>(new Scheduler(options, backend, std::move(*poller)));
}

Scheduler::Scheduler(const SchedulerOptions& options, Backend backend,
                     std::unique_ptr<executor_internal::Poller> poller)
    : backend_(backend),
      deterministic_(options.deterministic),
      shuffle_(options.shuffle || options.deterministic),
      spin_ns_(options.deterministic ? 0 : absl::ToInt64Nanoseconds(options.spin)),
      poller_(std::move(poller)),
      slice_reductions_(std::max<uint32_t>(1, options.slice_reductions)),
      slice_ns_(options.deterministic || options.slice <= absl::ZeroDuration()
                    ? 0
                    : absl::ToInt64Nanoseconds(options.slice)),
      virtual_slice_ns_(
          options.slice <= absl::ZeroDuration() ? 1'000 : absl::ToInt64Nanoseconds(options.slice)),
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

bool Scheduler::Spawn(Task<void> task, bool movable) {
  SpawnedRoot root = RunSpawned(std::move(task));
  root.handle.promise().owner_ = this;
  root.handle.promise().movable_ = movable;
  if (!AddRootAndPost(&root.handle.promise(), &root.handle.promise())) {
    CurrentScope scope(this);  // As DestroyRoots destroys roots.
    root.handle.promise().DestroyAtShutdown();
    return false;
  }
  return true;
}

void Scheduler::Stop() {
  stop_.store(true, std::memory_order_seq_cst);
  poller_->Wake();
}

bool Scheduler::AddRoot(Root* root) { return AddRootAndPost(root, nullptr); }

bool Scheduler::AddRootAndPost(Root* root, Runnable* first_run) {
  ExclusiveLock lock(roots_mutex_);
  if (roots_closed_) return false;
  root->prev_ = nullptr;
  root->next_ = roots_;
  if (roots_ != nullptr) roots_->prev_ = root;
  roots_ = root;
  live_roots_.fetch_add(1, std::memory_order_relaxed);
  // Under the lock: once DestroyRoots may run, the root is listed and posted (or discarded by a
  // shutting-down scheduler), and DestroyRoots destroys it after this returns.
  if (first_run != nullptr) Post(first_run);
  return true;
}

void Scheduler::RemoveRoot(Root* root) {
  ExclusiveLock lock(roots_mutex_);
  if (root->prev_ != nullptr) {
    root->prev_->next_ = root->next_;
  } else {
    roots_ = root->next_;
  }
  if (root->next_ != nullptr) root->next_->prev_ = root->prev_;
  root->prev_ = root->next_ = nullptr;
  live_roots_.fetch_sub(1, std::memory_order_relaxed);
}

int64_t Scheduler::NowNanos() const {
  return deterministic_ ? virtual_now_ns_ : executor_internal::MonotonicNanos();
}

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

namespace executor_internal {
void TimerNode::ArmOn(Scheduler* scheduler, int64_t deadline_ns) {
  scheduler->timers_.Insert(this, deadline_ns);
}
void TimerNode::DisarmOn(Scheduler* scheduler) { scheduler->timers_.Remove(this); }
}  // namespace executor_internal

int Scheduler::wake_fd() const { return poller_->wake_fd(); }

int Scheduler::io_fd() const { return poller_->io_fd(); }

bool Scheduler::SubmitIo(IoOp* op) {
  op->owner = this;
  return poller_->Submit(op);
}

void Scheduler::CancelIo(IoOp* op) {
  if (t_current == this) {
    poller_->Cancel(op);
    return;
  }
  if (op->cancel_posted.exchange(true, std::memory_order_acq_rel)) return;
  op->Ref();  // Held by the posted node until it runs or is discarded.
  Post(&op->cancel_node);
}

void Scheduler::CancelIoOnFd(int fd) { poller_->CancelFd(fd); }

size_t Scheduler::io_in_flight() const { return poller_->in_flight(); }

absl::Duration Scheduler::TimeUntilNextTimer() const {
  executor_internal::TimerNode* top = timers_.top();
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
    executor_internal::TimerNode* top = timers_.top();
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
  if (poller_->in_flight() > 0) poller_->Reap();
  remote_.DrainInto(ready_);
  size_t ran = FireExpiredTimers(NowNanos());
  // Run only what is ready on entry (plus what timers made ready), so this step ends even when
  // coroutines keep yielding.
  size_t budget = ready_.size() + pool_.size();
  while (budget-- > 0) {
    Runnable* r = NextReady();
    if (r == nullptr) break;
    BeginSlice();
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
    BeginSlice();
    r->Run();
    const bool uncharged_slice = deterministic_ && ++runs_without_time_ >= kRunsPerVirtualSlice;
    if (slice_expired_ || uncharged_slice) {
      // A slice used up takes its time, virtually: timers come due even while runnables keep
      // each other busy (deterministic: it depends on charges and runs only). Runs that charged
      // nothing take a slice of at most 1 ms (a huge slice must not send time to its end).
      const int64_t step =
          slice_expired_ ? virtual_slice_ns_ : std::min<int64_t>(virtual_slice_ns_, 1'000'000);
      slice_expired_ = false;
      runs_without_time_ = 0;
      if (deterministic_) {
        // Saturating, below INT64_MAX (an infinite wait's deadline): a huge slice must not
        // overflow virtual time, nor make "never" come due.
        virtual_now_ns_ =
            step >= INT64_MAX - 1 - virtual_now_ns_ ? INT64_MAX - 1 : virtual_now_ns_ + step;
        FireExpiredTimers(virtual_now_ns_);
      }
    }
    return true;
  }
  executor_internal::TimerNode* top = timers_.top();
  if (top == nullptr) return false;
  if (top->deadline_ns() == INT64_MAX) return false;  // An infinite wait never comes due.
  if (deterministic_) {
    virtual_now_ns_ = std::max(virtual_now_ns_, top->deadline_ns());
    runs_without_time_ = 0;
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
  // With I/O in flight, epoll learns of completions only in epoll_wait: park at once.
  bool io = poller_->in_flight() > 0;
  if (io && backend_ == Backend::kEpoll) return false;
  const int64_t start = executor_internal::MonotonicNanos();
  int64_t deadline = spin_ns_ > INT64_MAX - start ? INT64_MAX : start + spin_ns_;
  if (executor_internal::TimerNode* top = timers_.top())
    deadline = std::min(deadline, top->deadline_ns());
  for (unsigned i = 0;; ++i) {
    if (!remote_.IsEmpty() || stop_.load(std::memory_order_relaxed)) return true;
    if (io && poller_->HasCompletions()) return true;
    if ((i & 63) == 63) {
      const int64_t now = executor_internal::MonotonicNanos();
      if (now >= deadline) {
        // Work only if the earliest timer is due; a later one is the park's deadline, not a
        // reason to spin again.
        executor_internal::TimerNode* top = timers_.top();
        return top != nullptr && top->deadline_ns() <= now;
      }
    }
    CpuRelax();
  }
}

void Scheduler::Park(int64_t limit_ns) {
  if (running_threads_ != nullptr) running_threads_->fetch_sub(1, std::memory_order_relaxed);
  parked_.store(true, std::memory_order_seq_cst);
  if (remote_.IsEmpty() && !stop_.load(std::memory_order_seq_cst)) {
    int64_t timeout = limit_ns;
    if (executor_internal::TimerNode* top = timers_.top()) {
      int64_t until_timer =
          std::max<int64_t>(0, top->deadline_ns() - executor_internal::MonotonicNanos());
      timeout = timeout < 0 ? until_timer : std::min(timeout, until_timer);
    }
    poller_->Wait(timeout);
  }
  parked_.store(false, std::memory_order_seq_cst);
  if (running_threads_ != nullptr) running_threads_->fetch_add(1, std::memory_order_relaxed);
}

size_t Scheduler::Poll() {
  slice_expired_ = false;
  size_t got = poller_->in_flight() > 0 ? poller_->Reap() : 0;
  got += remote_.DrainInto(ready_);
  if (!timers_.empty()) got += FireExpiredTimers(executor_internal::MonotonicNanos());
  if (!siblings_.empty()) {
    if (steal_request_.load(std::memory_order_relaxed) != nullptr) {
      if (Scheduler* thief = steal_request_.exchange(nullptr, std::memory_order_acq_rel)) {
        DonateTo(thief);
      }
    }
    PublishLoad();
    // Work waits here while a sibling sleeps: wake it to come and ask for some (not again soon
    // after a donation found nothing that could move).
    if (queued_.load(std::memory_order_relaxed) >= 2 &&
        (no_nudge_until_ns_ == 0 || executor_internal::MonotonicNanos() >= no_nudge_until_ns_)) {
      no_nudge_until_ns_ = 0;
      for (Scheduler* s : siblings_) {
        if (s->parked() && !s->nudged_.exchange(true, std::memory_order_acq_rel)) {
          s->poller_->Wake();
          break;
        }
      }
    }
  }
  return got;
}

bool Scheduler::AskForWork() {
  if (nudged_.load(std::memory_order_relaxed)) nudged_.store(false, std::memory_order_release);
  // The busiest sibling with more than one runnable waiting (the one running keeps one).
  Scheduler* victim = nullptr;
  uint32_t most = 1;
  for (Scheduler* s : siblings_) {
    uint32_t queued = s->queued_.load(std::memory_order_relaxed);
    if (queued > most && !s->parked()) {
      most = queued;
      victim = s;
    }
  }
  if (victim == nullptr) return false;
  Scheduler* none = nullptr;
  victim->steal_request_.compare_exchange_strong(none, this, std::memory_order_acq_rel);
  return true;
}

void Scheduler::DonateTo(Scheduler* thief) {
  if (thief->shutting_down_.load(std::memory_order_acquire)) return;
  // Half of what waits here: every other one, so both old and newly woken work moves; what
  // cannot move keeps its place and order.
  size_t waiting = ready_.size() + pool_.size();
  size_t give = waiting / 2;
  if (give == 0) return;
  size_t given = 0;
  size_t position = 0;
  auto take = [&](Runnable* r) {
    return given < give && (position++ & 1) == 1 && r->MigrateTo(thief);
  };
  if (!pool_.empty()) {
    std::vector<Runnable*> kept;
    kept.reserve(pool_.size());
    for (Runnable* r : pool_) {
      if (take(r)) {
        ++given;
      } else {
        kept.push_back(r);
      }
    }
    pool_.swap(kept);
  }
  executor_internal::RunQueue kept;
  while (Runnable* r = ready_.PopFront()) {
    if (take(r)) {
      ++given;
    } else {
      kept.PushBack(r);
    }
  }
  while (Runnable* r = kept.PopFront()) ready_.PushBack(r);
  if (given == 0) {
    no_nudge_until_ns_ = executor_internal::MonotonicNanos() + kNoNudgeAfterEmptyDonationNanos;
  }
  if (given > 0) {
    donated_.fetch_add(given, std::memory_order_relaxed);
    thief->stolen_.fetch_add(given, std::memory_order_relaxed);
  }
}

void Scheduler::Run() {
  CurrentScope scope(this);
  size_t since_poll = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    if (Runnable* r = NextReady()) {
      BeginSlice();
      r->Run();
      // A runnable that used up its slice yielded: timers and other schedulers' work get their
      // turn at once, not after 64 more slices.
      if (++since_poll < kPollInterval && !slice_expired_) continue;
    }
    since_poll = 0;
    size_t got = Poll();
    if (got > 0 || HasLocalWork()) {
      steal_retry_ns_ = kStealRetryNanos;
      continue;
    }
    if (SpinForWork()) continue;
    // Idle past the spin. A busy sibling is asked for work (only now: a scheduler between two
    // quick messages does not read its siblings' state); while one is busy, this scheduler parks
    // only briefly and asks again (the donation wakes it sooner). With every sibling idle it
    // parks until woken.
    bool asked = !siblings_.empty() && AskForWork();
    Park(asked ? steal_retry_ns_ : -1);
    if (asked) steal_retry_ns_ = std::min(2 * steal_retry_ns_, kMaxStealRetryNanos);
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
  {
    ExclusiveLock lock(roots_mutex_);
    roots_closed_ = true;
  }
  while (true) {
    Root* root;
    {
      ExclusiveLock lock(roots_mutex_);
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
  if (armed()) DisarmOn(scheduler_);
}

void SleepAwaiter::await_suspend(std::coroutine_handle<> h) noexcept {
  scheduler_ = Scheduler::Current();
  handle_ = h;
  ArmOn(scheduler_, deadline_ns_);
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
