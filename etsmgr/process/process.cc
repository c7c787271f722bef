#include "etsmgr/process/process.h"

#include <algorithm>
#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/exception_text.h"
#include "etsmgr/base/log.h"
#include "etsmgr/process/node.h"

namespace etsmgr {

// The control block and its helpers, used throughout this package's implementation.
using process_internal::CurrentProcess;
using process_internal::ExitResource;
using process_internal::ExitSignalCause;
using process_internal::ExitSignalEnvelope;
using process_internal::Matcher;
using process_internal::NameRegistered;
using process_internal::ProcessAccess;
using process_internal::ProcessControl;
using process_internal::WaitRecord;
namespace {

Envelope* const kClosed = reinterpret_cast<Envelope*>(uintptr_t{1});

// The root frame of a process: runs the body and reports how it ended. An escaping exception is
// recorded in the control block (not in this frame, to keep idle processes small).
class BodyFrame {
 public:
  class promise_type {
   public:
    explicit promise_type(ProcessControl* control) : control_(control) {}
    BodyFrame get_return_object() {
      return BodyFrame{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct Final {
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<promise_type> h) noexcept {
          // Destroys this frame, runs the exit procedure; nothing here may be touched after.
          h.promise().control_->BodyFinished();
        }
        void await_resume() const noexcept {}
      };
      return Final{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { control_->SetBodyException(CurrentExceptionText()); }

   private:
    ProcessControl* control_;
  };
  std::coroutine_handle<promise_type> handle;
};

BodyFrame RunBody(ProcessControl* control) { co_await (*control->body())(control->context()); }

thread_local ProcessControl* t_current = nullptr;

// Marks `control` as the process running on this thread for the scope (restores the previous).
class CurrentScope {
 public:
  explicit CurrentScope(ProcessControl* control) : previous_(std::exchange(t_current, control)) {}
  ~CurrentScope() { t_current = previous_; }
  CurrentScope(const CurrentScope&) = delete;
  CurrentScope& operator=(const CurrentScope&) = delete;

 private:
  ProcessControl* previous_;
};

template <typename Pids>
void RemoveEntry(Pids& v, const Pid& pid) {
  auto it = std::find(v.begin(), v.end(), pid);
  if (it != v.end()) v.erase(it);
}

template <typename MonitorEntries>
void RemoveMonitorEntry(MonitorEntries& v, uint64_t ref) {
  auto it = std::find_if(v.begin(), v.end(), [ref](const auto& m) { return m.ref == ref; });
  if (it != v.end()) v.erase(it);
}

}  // namespace

// --- Pid.

void process_internal::DestroyProcessControl(PidTarget* target) {
  delete static_cast<ProcessControl*>(target);
}
bool Pid::alive() const { return target_ != nullptr && control()->alive(); }
std::string Pid::ToString() const {
  return target_ != nullptr ? absl::StrCat("<0.", target_->serial(), ">") : "<null>";
}

// --- ProcessControl.

ProcessControl::ProcessControl(Node* node, Scheduler* scheduler, uint64_t serial, ProcessBody body,
                               bool trap_exit)
    : PidTarget(serial),
      trap_exit_(trap_exit),
      node_(node),
      scheduler_(scheduler),
      body_(std::move(body)) {
  static_assert(sizeof(Process) == sizeof(void*) && std::is_trivially_destructible_v<Process>);
  new (context_) Process(this);
}

Process& ProcessControl::context() { return *std::launder(reinterpret_cast<Process*>(context_)); }

ProcessControl::~ProcessControl() {
  CloseMailbox();
  // Normally none left (the exit procedure or shutdown took them); a process that never ran may
  // still hold what was given to it.
  DropResources();
}

void ProcessControl::CloseMailbox() {
  Envelope* e = incoming_.exchange(kClosed, std::memory_order_acq_rel);
  while (e != nullptr && e != kClosed) {
    Envelope* next = e->next_;
    delete e;
    e = next;
  }
  while (mailbox_head_ != nullptr) {
    Envelope* next = mailbox_head_->next_;
    delete mailbox_head_;
    mailbox_head_ = next;
  }
  mailbox_tail_ = nullptr;
  mailbox_size_.store(0, std::memory_order_relaxed);
}

bool ProcessControl::Launch() {
  if (!scheduler()->AddRootAndPost(this, this)) {  // The runtime shut down: it never runs.
    DestroyAtShutdown();
    return false;
  }
  return true;
}

bool ProcessControl::MigrateTo(Scheduler* to) noexcept {
  // Queued, so not running. A process waiting for a deadline keeps its timer where it is.
  if (pinned_ || armed() || io_waits_ > 0) return false;
  Scheduler* from = scheduler();
  from->RemoveRoot(this);
  // Stealing runs on scheduler threads, all joined before any DestroyRoots: never refused.
  (void)to->AddRoot(this);
  scheduler_.store(to, std::memory_order_release);
  to->Post(this);
  return true;
}

void ProcessControl::YieldWith(std::coroutine_handle<> h, WaitRecord* wait) {
  waiting_handle_ = h;
  waiting_ = wait;
  timed_out_ = false;
  scheduler()->Post(this);
}

bool ProcessControl::Deliver(std::unique_ptr<Envelope> envelope) {
  Envelope* e = envelope.release();
  Envelope* head = incoming_.load(std::memory_order_relaxed);
  // Fast path: a message sent on the receiver's own scheduler thread when nothing is waiting in
  // the incoming stack goes straight into the mailbox (no atomics on the queue). With the stack
  // empty, everything this sender sent before is already in the mailbox, so per-sender order
  // (messages and signals) holds. A closed (dead) stack is never empty, so it takes the slow
  // path and drops the message.
  if (head == nullptr && e->kind() == Envelope::Kind::kMessage &&
      Scheduler::Current() == scheduler()) {
    AppendToMailbox(e);
    Notify();
    return true;
  }
  do {
    if (head == kClosed) {
      delete e;
      return false;
    }
    e->next_ = head;
  } while (!incoming_.compare_exchange_weak(head, e, std::memory_order_release,
                                            std::memory_order_relaxed));
  Notify();
  return true;
}

void ProcessControl::Notify() {
  uint32_t state = wake_state_.load(std::memory_order_acquire);
  while (true) {
    if (state == kNotified) return;
    if (state == kIdle) {
      if (wake_state_.compare_exchange_weak(state, kNotified, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
        return;
      }
      continue;
    }
    if (wake_state_.compare_exchange_weak(state, kIdle, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
      scheduler()->Post(this);  // We own the resumption.
      return;
    }
  }
}

bool ProcessControl::TakeDown(const Envelope& e) {
  const uint64_t ref = static_cast<const TypedEnvelope<Down>&>(e).value.ref;
  ExclusiveLock lock(mu_);
  if (!extras_) return true;
  RemoveMonitorEntry(extras_->monitoring, ref);
  std::vector<uint64_t>& unwanted = extras_->unwanted_downs;
  auto it = std::find(unwanted.begin(), unwanted.end(), ref);
  if (it == unwanted.end()) return true;
  unwanted.erase(it);
  return false;
}

void ProcessControl::AppendToMailbox(Envelope* e) {
  if (e->type() == MessageTypeTag<Down>() && !TakeDown(*e)) {
    delete e;
    return;
  }
  e->next_ = nullptr;
  e->prev_ = mailbox_tail_;
  if (mailbox_tail_ != nullptr) {
    mailbox_tail_->next_ = e;
  } else {
    mailbox_head_ = e;
  }
  mailbox_tail_ = e;
  mailbox_size_.store(mailbox_size_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void ProcessControl::UnlinkFromMailbox(Envelope* e) {
  if (e->prev_ != nullptr) {
    e->prev_->next_ = e->next_;
  } else {
    mailbox_head_ = e->next_;
  }
  if (e->next_ != nullptr) {
    e->next_->prev_ = e->prev_;
  } else {
    mailbox_tail_ = e->prev_;
  }
  e->next_ = e->prev_ = nullptr;
  mailbox_size_.store(mailbox_size_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

void ProcessControl::TakeIncoming() {
  if (incoming_.load(std::memory_order_relaxed) == nullptr) return;
  Envelope* e = incoming_.exchange(nullptr, std::memory_order_acquire);
  Envelope* ordered = nullptr;  // Reverse the stack: oldest first.
  while (e != nullptr) {
    Envelope* next = e->next_;
    e->next_ = ordered;
    ordered = e;
    e = next;
  }
  while (ordered != nullptr) {
    Envelope* next = ordered->next_;
    if (ordered->kind() == Envelope::Kind::kExitSignal) {
      HandleSignal(static_cast<ExitSignalEnvelope*>(ordered));
    } else {
      AppendToMailbox(ordered);
    }
    ordered = next;
  }
}

void ProcessControl::HandleSignal(ExitSignalEnvelope* signal) {
  std::unique_ptr<ExitSignalEnvelope> owned(signal);
  if (pending_exit_) return;  // Already dying.
  if (signal->from_link()) {
    ExclusiveLock lock(mu_);
    Links& links = extras().links;
    auto it = std::find(links.begin(), links.end(), signal->from);
    if (it == links.end()) return;  // Unlinked since: the signal has no effect.
    links.erase(it);
  }
  const ExitReason& reason = signal->reason;
  if (reason.is_kill() && !signal->from_link()) {
    pending_exit_ = std::make_unique<ExitReason>(ExitReason::Killed());  // Untrappable.
  } else if (trap_exit()) {
    AppendToMailbox(new TypedEnvelope<ExitSignal>(ExitSignal{signal->from, reason}));
  } else if (!reason.is_normal()) {
    pending_exit_ = std::make_unique<ExitReason>(reason);
  } else if (signal->from == self_) {
    pending_exit_ = std::make_unique<ExitReason>(reason);  // exit(self(), normal): normal end.
  }
}

std::unique_ptr<Envelope> ProcessControl::TakeMatch(WaitRecord* wait) {
  TakeIncoming();
  // A signal that just arrived acts before any message is taken (it may have been sent before
  // the message: the process dies at this suspension point, as in Erlang).
  if (pending_exit_) return nullptr;
  for (Envelope* e = wait->scanned != nullptr ? wait->scanned->next_ : mailbox_head_; e != nullptr;
       e = e->next_) {
    if (wait->matcher.Matches(*e)) {
      UnlinkFromMailbox(e);
      return std::unique_ptr<Envelope>(e);
    }
    wait->scanned = e;
  }
  return nullptr;
}

void ProcessControl::RequestSelfExit(ExitReason reason) {
  if (!pending_exit_) {
    pending_exit_ =
        std::make_unique<ExitReason>(reason.is_kill() ? ExitReason::Killed() : std::move(reason));
  }
}

void ProcessControl::Suspend(std::coroutine_handle<> h, WaitRecord* wait, int64_t deadline_ns) {
  waiting_handle_ = h;
  waiting_ = wait;
  timed_out_ = false;
  status_.store(Status::kWaiting, std::memory_order_release);
  if (deadline_ns != INT64_MAX) {
    if (deadline_ns <= scheduler()->NowNanos()) {
      timed_out_ = true;
      scheduler()->Post(this);
      return;
    }
    ArmOn(scheduler(), deadline_ns);
  }
  uint32_t expected = kIdle;
  if (pending_exit_ ||
      !wake_state_.compare_exchange_strong(expected, kWaiting, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
    // Something arrived since the last look (or we must die): handle it from Run().
    wake_state_.store(kIdle, std::memory_order_release);
    scheduler()->Post(this);
  }
}

void ProcessControl::Fire() noexcept {
  timed_out_ = true;
  uint32_t expected = kWaiting;
  if (wake_state_.compare_exchange_strong(expected, kIdle, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
    Run();
  }
  // Otherwise a Notify() already queued Run(), which sees timed_out_.
}

ProcessControl* process_internal::CurrentProcess() { return t_current; }

void ProcessControl::Run() noexcept {
  CurrentScope current(this);  // Only a thread-local is touched after a resume frees `this`.
  if (busy_) {
    busy_ = false;
    scheduler()->StampSlice();
  }
  if (!started_) {
    started_ = true;
    // Signals that arrived before the first run act first, as in Erlang: a process killed
    // before it ran never runs.
    TakeIncoming();
    if (pending_exit_) {
      Terminate(*pending_exit_);
      return;
    }
    BodyFrame frame = RunBody(this);
    frame_ = frame.handle;
    frame_.resume();  // May finish the process (and free this): touch nothing after.
    return;
  }
  TakeIncoming();
  if (pending_exit_) {
    Terminate(*pending_exit_);
    return;
  }
  if (!waiting_handle_) return;       // Nothing suspended (a stray wake-up).
  if (waiting_->result != nullptr) {  // A yield (YieldWith): the match is already in hand.
    std::coroutine_handle<> h = std::exchange(waiting_handle_, nullptr);
    waiting_ = nullptr;
    status_.store(Status::kRunnable, std::memory_order_release);
    h.resume();  // May finish the process (and free this): touch nothing after.
    return;
  }
  std::unique_ptr<Envelope> match;
  try {
    match = TakeMatch(waiting_);
  } catch (...) {
    // A receive predicate threw: the exception comes out of the body's co_await, as when the
    // message was there before the wait began (never out of this noexcept resumption, which
    // ended the whole program).
    waiting_->error = std::current_exception();
  }
  if (pending_exit_) {  // A signal came in with the messages TakeMatch took in.
    Terminate(*pending_exit_);
    return;
  }
  if (match || timed_out_ || waiting_->error) {
    DisarmOn(scheduler());
    waiting_->result = std::move(match);
    std::coroutine_handle<> h = std::exchange(waiting_handle_, nullptr);
    waiting_ = nullptr;
    timed_out_ = false;
    status_.store(Status::kRunnable, std::memory_order_release);
    h.resume();  // May finish the process (and free this): touch nothing after.
    return;
  }
  // Not what we wait for: wait again.
  uint32_t expected = kIdle;
  if (!wake_state_.compare_exchange_strong(expected, kWaiting, std::memory_order_acq_rel,
                                           std::memory_order_acquire)) {
    wake_state_.store(kIdle, std::memory_order_release);
    scheduler()->Post(this);
  }
}

void ProcessControl::Terminate(ExitReason reason) {
  status_.store(Status::kExiting, std::memory_order_release);
  DisarmOn(scheduler());
  waiting_handle_ = nullptr;
  if (frame_) std::exchange(frame_, nullptr).destroy();  // Destructors run here, once.
  ExitProcedure(std::move(reason));
}

void ProcessControl::SetBodyException(std::string what) {
  body_exception_ = std::make_unique<ExitReason>(ExitReason::Exception(std::move(what)));
}

void ProcessControl::BodyFinished() {
  status_.store(Status::kExiting, std::memory_order_release);
  std::exchange(frame_, nullptr).destroy();
  // An exit signal the process took in before its body returned (a flush of its mailbox, a
  // call's clean-up: no suspension point acted on it) is its reason, as in Erlang, where the
  // signal would have ended it; one still in flight does not change the reason.
  ExitReason reason = pending_exit_     ? ExitReason(*pending_exit_)
                      : body_exception_ ? std::move(*body_exception_)
                                        : ExitReason::Normal();
  body_exception_.reset();
  ExitProcedure(std::move(reason));
}

bool ProcessControl::HasExitHook(const void* key) const {
  ExclusiveLock lock(mu_);
  if (hooks_closed_ || !extras_) return false;
  for (const auto& [k, h] : extras_->exit_hooks) {
    if (k == key) return true;
  }
  return false;
}

bool ProcessControl::AddExitHook(ExitHook hook, const void* key) {
  ExclusiveLock lock(mu_);
  if (hooks_closed_) return false;
  auto& hooks = extras().exit_hooks;
  if (key != nullptr) {
    for (const auto& [k, h] : hooks) {
      if (k == key) return true;
    }
  }
  hooks.emplace_back(key, std::move(hook));
  return true;
}

void ProcessControl::LinkResource(ExitResource* r) {
  Extras& x = extras();
  r->prev_ = nullptr;
  r->next_ = x.resources;
  if (x.resources != nullptr) x.resources->prev_ = r;
  x.resources = r;
  ++x.resource_count;
}

void ProcessControl::UnlinkResource(ExitResource* r) {
  Extras& x = *extras_;  // Holds r, so it has extras.
  if (r->prev_ != nullptr) {
    r->prev_->next_ = r->next_;
  } else {
    x.resources = r->next_;
  }
  if (r->next_ != nullptr) r->next_->prev_ = r->prev_;
  r->prev_ = r->next_ = nullptr;
  --x.resource_count;
}

std::shared_ptr<ExitResource> ProcessControl::PopResource() {
  ExclusiveLock lock(mu_);
  if (!extras_ || extras_->resources == nullptr) return nullptr;
  return DetachResource(extras_->resources);
}

std::shared_ptr<ExitResource> ProcessControl::DetachResource(ExitResource* r) {
  std::shared_ptr<ExitResource> held = std::move(r->held_);
  UnlinkResource(r);
  // Last: whoever adopts it next sees it unheld only after this is done with it.
  r->holder_.store(nullptr, std::memory_order_release);
  return held;
}

void ProcessControl::DropResources() {
  while (std::shared_ptr<ExitResource> resource = PopResource()) resource.reset();
}

bool ProcessControl::AdoptResource(const std::shared_ptr<ExitResource>& resource) {
  ExitResource* r = resource.get();
  while (true) {
    ProcessControl* from = r->holder_.load(std::memory_order_acquire);
    if (from == this) return true;
    // Both lists change together: lock both processes, in address order (no other code holds
    // two process locks at once).
    SpinLock* first = &mu_;
    SpinLock* second = from != nullptr ? &from->mu_ : nullptr;
    if (second != nullptr && second < first) std::swap(first, second);
    ExclusiveLock lock1(*first);
    std::unique_lock<SpinLock> lock2;
    if (second != nullptr) lock2 = std::unique_lock<SpinLock>(*second);
    // Its holder's exit procedure may have taken it off meanwhile: look again.
    if (r->holder_.load(std::memory_order_relaxed) != from) continue;
    mu_.AssertHeld();  // Both locks are held, in an order the analysis cannot follow.
    if (resources_closed_) return false;
    // What can fail (this process's first resource allocates its list) comes before any change:
    // a throw leaves the resource where it was.
    if (AdoptFault fault = g_adopt_resource_fault.load(std::memory_order_acquire)) fault();
    (void)extras();
    if (from != nullptr) {
      from->mu_.AssertHeld();
      from->UnlinkResource(r);  // The holder's reference moves with it.
    } else {
      r->held_ = resource;
    }
    LinkResource(r);
    r->holder_.store(this, std::memory_order_release);
    return true;
  }
}

void ProcessControl::ReleaseResource(ExitResource* resource) {
  std::shared_ptr<ExitResource> dropped;  // Destroyed after the lock is released.
  ExclusiveLock lock(mu_);
  if (resource->holder_.load(std::memory_order_relaxed) != this) return;
  dropped = DetachResource(resource);
}

size_t ProcessControl::resource_count() const {
  ExclusiveLock lock(mu_);
  return extras_ ? extras_->resource_count : 0;
}

void ProcessControl::LogExitStepThrew(const char* step) const {
  try {
    Logf(LogLevel::kError, "%s: %s threw during its exit; the exit goes on",
         self_.ToString().c_str(), step);
  } catch (...) {  // No memory even for the message.
  }
}

void ProcessControl::ExitProcedure(ExitReason reason) {
  // 0. The frame is gone, so the body (and what its closure captured) is no longer needed:
  // release it now rather than when the last Pid goes (a capture may hold this very Pid).
  body_ = nullptr;
  // 1. Exit hooks and owned resources (tables go to their heirs) before anyone can observe the
  // exit. Closing the resource set first means nothing can be handed to us from now on.
  decltype(Extras::exit_hooks) hooks;
  {
    ExclusiveLock lock(mu_);
    hooks_closed_ = true;
    if (extras_) hooks.swap(extras_->exit_hooks);
  }
  // Each step runs whatever the others do: an exception out of one (a hook, a keeper's callback,
  // no memory) must not leave the process's other tables unhanded, nor end the program (this
  // runs under noexcept frames).
  for (auto& [key, hook] : hooks) {
    try {
      hook(self_, reason);
    } catch (...) {
      LogExitStepThrew("an exit hook");
    }
  }
  hooks.clear();
  {
    ExclusiveLock lock(mu_);
    resources_closed_ = true;
  }
  // One at a time, each taken off under the lock: while we run one's OnOwnerExit, another
  // process may take over (AdoptResource) one still on the list.
  while (std::shared_ptr<ExitResource> resource = PopResource()) {
    try {
      resource->OnOwnerExit(self_, reason);
    } catch (...) {
      LogExitStepThrew("handing over a resource (a table)");
    }
  }
  // 2. Dead: collect links, monitors and the name under our lock; signal without it.
  Links links;
  absl::flat_hash_map<uint64_t, Pid> watchers;
  std::vector<MonitorEntry> watching;
  std::string name;
  {
    ExclusiveLock lock(mu_);
    dead_.store(true, std::memory_order_release);
    if (extras_) {
      links.swap(extras_->links);
      watchers.swap(extras_->monitored_by);
      watching.swap(extras_->monitoring);
      name.swap(extras_->registered_name);
    }
  }
  if (!name.empty()) node_->UnregisterIfOwner(name, self_);
  // 3. No more messages: close the incoming stack and drop what is queued.
  CloseMailbox();
  // 4. Links and monitors fire.
  ExitReason seen = reason.is_kill() ? ExitReason::Killed() : reason;
  for (const Pid& peer : links) {
    peer.control()->Deliver(
        std::make_unique<ExitSignalEnvelope>(self_, seen, ExitSignalCause::kLink));
  }
  // In monitor order (refs grow), so a deterministic run replays the same deliveries.
  std::vector<MonitorEntry> down;
  down.reserve(watchers.size());
  for (auto& [ref, pid] : watchers) down.push_back(MonitorEntry{ref, std::move(pid)});
  std::sort(down.begin(), down.end(),
            [](const MonitorEntry& a, const MonitorEntry& b) { return a.ref < b.ref; });
  for (const MonitorEntry& m : down) Send(m.other, Down{m.ref, self_, seen});
  for (const MonitorEntry& m : watching) {
    ExclusiveLock lock(m.other.control()->mu_);
    m.other.control()->extras().monitored_by.erase(m.ref);
  }
  status_.store(Status::kDead, std::memory_order_release);
  scheduler()->RemoveRoot(this);
  node_->OnProcessExit();
  Pid last = std::move(self_);  // Our own reference: may free this block when it goes.
}

void ProcessControl::DestroyAtShutdown() noexcept {
  DisarmOn(scheduler());
  if (frame_) std::exchange(frame_, nullptr).destroy();
  body_ = nullptr;
  // Queued messages may hold references back to this block (a TableTransfer's table names us
  // as owner): drop them, or the cycle outlives the runtime.
  CloseMailbox();
  {
    ExclusiveLock lock(mu_);
    dead_.store(true, std::memory_order_release);
    resources_closed_ = true;
    hooks_closed_ = true;
  }
  // Held tables go (their last reference may be ours), each after the lock.
  DropResources();
  std::unique_ptr<Extras> extras;
  {
    ExclusiveLock lock(mu_);
    extras = std::move(extras_);
  }
  extras.reset();
  status_.store(Status::kDead, std::memory_order_release);
  node_->OnProcessExit();
  Pid last = std::move(self_);
}

bool ProcessControl::Link(const Pid& other, bool signal_if_dead) {
  if (!other.valid()) return false;
  if (other == self_) return true;
  ProcessControl* o = other.control();
  bool other_dead;
  {
    ExclusiveLock lock(o->mu_);
    other_dead = o->dead_.load(std::memory_order_relaxed);
    if (!other_dead) {
      Links& theirs = o->extras().links;
      if (std::find(theirs.begin(), theirs.end(), self_) == theirs.end()) theirs.push_back(self_);
    }
  }
  if (other_dead) {
    if (signal_if_dead) {
      Deliver(std::make_unique<ExitSignalEnvelope>(other, ExitReason::NoProc(),
                                                   ExitSignalCause::kDirect));
    }
    return false;
  }
  ExclusiveLock lock(mu_);
  Links& mine = extras().links;
  if (std::find(mine.begin(), mine.end(), other) == mine.end()) mine.push_back(other);
  return true;
}

bool ProcessControl::LinkedTo(const Pid& other) const {
  ExclusiveLock lock(mu_);
  return extras_ &&
         std::find(extras_->links.begin(), extras_->links.end(), other) != extras_->links.end();
}

void ProcessControl::Unlink(const Pid& other) {
  if (!other.valid()) return;
  {
    ExclusiveLock lock(mu_);
    if (extras_) RemoveEntry(extras_->links, other);
  }
  ExclusiveLock lock(other.control()->mu_);
  if (other.control()->extras_) RemoveEntry(other.control()->extras_->links, self_);
}

uint64_t ProcessControl::Monitor(const Pid& target) {
  uint64_t ref = node_->NextRef();
  if (!target.valid()) {
    Send(self_, Down{ref, target, ExitReason::NoProc()});
    return ref;
  }
  bool dead;
  {
    ExclusiveLock lock(target.control()->mu_);
    dead = target.control()->dead_.load(std::memory_order_relaxed);
    if (!dead) target.control()->extras().monitored_by.emplace(ref, self_);
  }
  if (dead) {
    Send(self_, Down{ref, target, ExitReason::NoProc()});
  } else {
    ExclusiveLock lock(mu_);
    extras().monitoring.push_back({ref, target});
  }
  return ref;
}

void ProcessControl::Demonitor(uint64_t ref, bool flush) {
  Pid target;
  {
    ExclusiveLock lock(mu_);
    std::vector<MonitorEntry>& monitoring = extras().monitoring;
    auto it = std::find_if(monitoring.begin(), monitoring.end(),
                           [&](const MonitorEntry& m) { return m.ref == ref; });
    if (it != monitoring.end()) {
      target = it->other;
      monitoring.erase(it);
    }
  }
  // Our entry still there but the target's gone: the target is dying, has taken its watchers,
  // and its Down is on the way (a Down removes our entry only when it reaches our mailbox).
  bool down_in_flight = false;
  if (target.valid()) {
    ProcessControl* t = target.control();
    ExclusiveLock lock(t->mu_);
    down_in_flight = t->extras_ == nullptr || t->extras_->monitored_by.erase(ref) == 0;
  }
  if (!flush) return;
  if (down_in_flight) {
    // Not in the mailbox yet (reaching it would have removed our entry): dropped on arrival.
    ExclusiveLock lock(mu_);
    extras().unwanted_downs.push_back(ref);
    return;
  }
  TakeIncoming();
  for (Envelope* e = mailbox_head_; e != nullptr;) {
    Envelope* next = e->next_;
    if (e->type() == MessageTypeTag<Down>() &&
        static_cast<TypedEnvelope<Down>*>(e)->value.ref == ref) {
      UnlinkFromMailbox(e);
      delete e;
    }
    e = next;
  }
}

bool ProcessControl::SetRegisteredName(const std::string& name) {
  ExclusiveLock lock(mu_);
  if (dead_.load(std::memory_order_relaxed) || !extras().registered_name.empty()) return false;
  extras_->registered_name = name;
  return true;
}

void ProcessControl::ClearRegisteredName() {
  ExclusiveLock lock(mu_);
  if (extras_) extras_->registered_name.clear();
}

std::string ProcessControl::registered_name() const {
  ExclusiveLock lock(mu_);
  return extras_ ? extras_->registered_name : std::string();
}

ProcessInfo ProcessControl::Info() const {
  ProcessInfo s;
  ExclusiveLock lock(mu_);
  s.status = status_.load(std::memory_order_acquire);
  s.mailbox_length = mailbox_size();  // Owner-written; a snapshot from other threads.
  s.trap_exit = trap_exit();
  s.memory = sizeof(ProcessControl) + sizeof(Process);
  if (extras_) {
    s.links.assign(extras_->links.begin(), extras_->links.end());
    for (const auto& [ref, pid] : extras_->monitored_by) s.monitored_by.push_back(pid);
    for (const auto& m : extras_->monitoring) s.monitoring.push_back(m.other);
    s.registered_name = extras_->registered_name;
    size_t spilled_links = extras_->links.capacity() > 2 ? extras_->links.capacity() : 0;
    s.memory +=
        sizeof(Extras) + spilled_links * sizeof(Pid) +
        (extras_->monitored_by.capacity() + extras_->monitoring.capacity()) * sizeof(MonitorEntry);
  }
  return s;
}

// --- Process and free functions.

namespace process_internal {

int64_t DeadlineNanos(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return INT64_MAX;
  return Scheduler::Current()->ToSchedulerNanos(deadline);
}

int64_t TimeoutNanos(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return INT64_MAX;
  int64_t now = Scheduler::Current()->NowNanos();
  if (timeout <= absl::ZeroDuration()) return now;
  int64_t ns = absl::ToInt64Nanoseconds(timeout);
  return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

}  // namespace process_internal

absl::StatusOr<ProcessInfo> GetProcessInfo(const Pid& pid) {
  if (!pid.alive()) {
    return absl::NotFoundError(absl::StrCat("process_info(", pid.ToString(), "): no such process"));
  }
  return ProcessAccess::Control(pid)->Info();
}

Pid CurrentPid() {
  ProcessControl* me = CurrentProcess();
  return me != nullptr ? me->self() : Pid();
}

void SendExit(const Pid& pid, ExitReason reason, const Pid& from) {
  if (!pid.valid()) return;
  ProcessAccess::Control(pid)->Deliver(
      std::make_unique<ExitSignalEnvelope>(from, std::move(reason), ExitSignalCause::kDirect));
}

Process::PredicateReceiveAwaiter Process::ReceiveIfFor(std::function<bool(const Envelope&)> pred,
                                                       absl::Duration timeout) {
  return PredicateReceiveAwaiter(control_, std::move(pred),
                                 process_internal::TimeoutNanos(timeout));
}

Process::PredicateReceiveAwaiter Process::ReceiveIf(std::function<bool(const Envelope&)> pred,
                                                    absl::Time deadline) {
  return PredicateReceiveAwaiter(control_, std::move(pred),
                                 process_internal::DeadlineNanos(deadline));
}

Process::ReceiveAwaiter Process::Sleep(absl::Duration duration) {
  return ReceiveAwaiter(control_, Matcher{&process_internal::MatchNone, nullptr},
                        process_internal::TimeoutNanos(duration));
}

Process::ReceiveAwaiter Process::Yield() {
  // A deadline already reached: Suspend puts the process at the back of the queue at once.
  return ReceiveAwaiter(control_, Matcher{&process_internal::MatchNone, nullptr},
                        Scheduler::Current()->NowNanos());
}

Process::ReceiveAwaiter Process::Exit(ExitReason reason) {
  control_->RequestSelfExit(std::move(reason));
  return ReceiveAwaiter(control_, Matcher{&process_internal::MatchNone, nullptr}, INT64_MAX);
}

absl::StatusOr<Pid> Process::Spawn(ProcessBody body, SpawnOptions options) {
  return node().Spawn(std::move(body), std::move(options));
}

absl::StatusOr<Pid> Process::SpawnLink(ProcessBody body, SpawnOptions options) {
  return node().SpawnLink(self(), std::move(body), std::move(options));
}

absl::Status Process::Register(const std::string& name) { return node().Register(name, self()); }

namespace {
// Removes this process from the name's waiters however the wait ends (even by a kill).
struct NameWaiterGuard {
  Node* node;
  std::string name;
  Pid self;
  ~NameWaiterGuard() { node->RemoveNameWaiter(name, self); }
};
}  // namespace

Task<std::optional<ExitReason>> AwaitDown(Process& self, Pid pid, absl::Time deadline) {
  const uint64_t ref = self.Monitor(pid);
  std::optional<Message> m = co_await self.ReceiveIf(
      [ref](const Envelope& e) {
        const Down* d = e.As<Down>();
        return d != nullptr && d->ref == ref;
      },
      deadline);
  if (!m) {
    self.Demonitor(ref, /*flush=*/true);
    co_return std::nullopt;
  }
  co_return m->As<Down>()->reason;
}

Task<ExitReason> AwaitDown(Process& self, Pid pid) {
  std::optional<ExitReason> reason =
      co_await AwaitDown(self, std::move(pid), absl::InfiniteFuture());
  co_return std::move(*reason);
}

Task<std::optional<Pid>> Process::WaitForRegistered(std::string name, absl::Time deadline) {
  Node& n = node();
  Pid found = n.Whereis(name);
  if (found.valid()) co_return found;
  NameWaiterGuard guard{&n, name, self()};
  const int64_t deadline_ns = process_internal::DeadlineNanos(deadline);
  auto notice = [&name](const Envelope& e) {
    const NameRegistered* r = e.As<NameRegistered>();
    return r != nullptr && r->name == name;
  };
  while (true) {
    // A registration hands its waiters one notice each and forgets them: (re-)join before every
    // look, or a name registered by a process that died before we looked would be our last notice.
    n.AddNameWaiter(name, self());
    found = n.Whereis(name);  // Re-check: it may have been registered before we were added.
    if (found.valid()) break;
    std::optional<Message> m = co_await PredicateReceiveAwaiter(control_, notice, deadline_ns);
    if (!m) {
      found = n.Whereis(name);
      break;
    }
  }
  // Leave the waiter list, then drop a notice sent meanwhile (notices are sent under the
  // registry lock, so none can come after this): no stray NameRegistered stays in the mailbox.
  n.RemoveNameWaiter(name, self());
  while (co_await PredicateReceiveAwaiter(control_, notice,
                                          process_internal::DeadlineNanos(absl::InfinitePast()))) {
  }
  co_return found.valid() ? std::optional<Pid>(std::move(found)) : std::nullopt;
}

void process_internal::NotifyNameRegistered(const Pid& waiter, const std::string& name) {
  Send(waiter, NameRegistered{name});
}

}  // namespace etsmgr
