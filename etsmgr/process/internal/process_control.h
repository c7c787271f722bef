// ProcessControl: the shared, reference-counted state of one process (internal).
//
// Ownership
// - Pids hold references; the process holds one on itself while alive. The block is freed when
//   the last reference goes, so a stale Pid always finds a dead block, never a new process.
// - The process's coroutine frame (its body) is owned by the block while the process runs and
//   is destroyed exactly once: when the body finishes, when an exit signal kills the process at
//   a suspension point, or at runtime shutdown.
//
// Threads
// - "owner" below means the thread of the process's scheduler while it runs this process.
// - Deliver() (messages and signals) and Notify() may be called from any thread: they push onto a
//   lock-free incoming stack and wake the process if it waits.
// - Links, monitors, the registered name and the dead flag are guarded by mu_. A dying process
//   collects them under its own lock and signals peers without holding it, so two processes
//   dying together cannot deadlock.
//
// Waiting (one wait at a time, as a process is sequential): wake_state_ moves
// kIdle -> kWaiting when the owner suspends, and whoever moves it out of kWaiting (a Notify() or
// the deadline timer) owns the resumption, which always goes through Run() on the owner thread:
// Run() first acts on signals (possibly terminating the process instead of resuming it).
#ifndef ETSMGR_PROCESS_INTERNAL_PROCESS_CONTROL_H_
#define ETSMGR_PROCESS_INTERNAL_PROCESS_CONTROL_H_

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "etsmgr/base/block_cache.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/internal/timer_heap.h"
#include "etsmgr/executor/runnable.h"
#include "etsmgr/executor/scheduler.h"
#include "etsmgr/executor/task.h"
#include "etsmgr/process/exit_reason.h"
#include "etsmgr/process/message.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/process/process_info.h"

namespace etsmgr {

class Node;
class Process;

namespace process_internal {

using ProcessBody_ = std::function<Task<void>(Process&)>;  // = ProcessBody (process.h).

// Something a process owns that must be released when it exits (tables): the exit procedure
// calls OnOwnerExit after the process's frame is destroyed and before its links and monitors
// fire, on the exiting process's thread, without holding any process lock.
//
// A resource is held by at most one process at a time, on an intrusive list of that process
// (no map, no allocation: a table changing hands costs two list updates). Every call that
// changes a resource's holder must be serialised by the resource itself (tables hold their own
// lock around AdoptResource), except the exit procedure taking it off an exiting holder.
class ExitResource {
 public:
  ExitResource() = default;
  ExitResource(const ExitResource&) = delete;
  ExitResource& operator=(const ExitResource&) = delete;
  virtual ~ExitResource() = default;
  virtual void OnOwnerExit(const Pid& owner, const ExitReason& reason) = 0;

 private:
  friend class ProcessControl;
  // Written under the holder's lock (both holders' when it moves); read without it only to learn
  // whose lock to take.
  std::atomic<ProcessControl*> holder_{nullptr};
  // The holder's list links and its reference to the resource: under the holder's lock.
  ExitResource* prev_ = nullptr;
  ExitResource* next_ = nullptr;
  std::shared_ptr<ExitResource> held_;
};

// The process whose body is running on this thread right now, or null (a plain thread, or a
// coroutine that is not a process). Set while the process runs from its own resumption (start,
// process-API suspension points, its exit procedure); see process.h for the caveat about
// awaiting executor primitives directly.
ProcessControl* CurrentProcess();

// What a receive is waiting for: decides on the owner thread whether an envelope matches.
struct Matcher {
  bool (*fn)(const Envelope& e, const void* ctx) = nullptr;
  const void* ctx = nullptr;
  bool Matches(const Envelope& e) const { return fn(e, ctx); }
};

// Sent to processes waiting in WaitForRegistered when `name` gets registered.
struct NameRegistered {
  std::string name;
};
void NotifyNameRegistered(const Pid& waiter, const std::string& name);

// What a suspended receive waits for and where its match goes (lives in the awaiter).
struct WaitRecord {
  Matcher matcher;
  std::unique_ptr<Envelope> result;
  std::exception_ptr error;  // The matcher threw while the process waited: rethrown on resume.
  // The last mailbox entry this receive has tested and not taken (null: none yet). A wake-up
  // tests only what came after it: each message is tested once per receive, as in Erlang, and a
  // flood of messages the receive does not want costs linear, not quadratic, time. Only the
  // process itself takes entries out of its mailbox, and only its receive does while it waits,
  // so the entry stays there.
  Envelope* scanned = nullptr;
};

// An exit signal in flight (Envelope::Kind::kExitSignal).
// Why an exit signal was sent: a linked process exited (ignored if the link is gone by delivery),
// or directly: exit/2 (SendExit), or link/1 to a dead process (noproc), delivered in any case.
enum class ExitSignalCause { kLink, kDirect };

class ExitSignalEnvelope final : public Envelope {
 public:
  ExitSignalEnvelope(Pid from, ExitReason reason, ExitSignalCause cause)
      : Envelope(MessageTypeTag<ExitSignalEnvelope>(), Kind::kExitSignal),
        from(std::move(from)),
        reason(std::move(reason)),
        cause(cause) {}
  const char* type_name() const override { return "exit signal"; }
  bool from_link() const { return cause == ExitSignalCause::kLink; }
  Pid from;
  ExitReason reason;
  ExitSignalCause cause;
};

class ProcessControl final : public PidTarget,
                             public Runnable,
                             public Root,
                             private executor_internal::TimerNode {
 public:
  using Status = ProcessStatus;

  // One per spawn, freed with the last Pid: from the per-thread block cache (base/block_cache.h).
  static void* operator new(size_t size) { return block_cache::Allocate(size); }
  static void operator delete(void* p, size_t size) { block_cache::Free(p, size); }

  ProcessControl(Node* node, Scheduler* scheduler, uint64_t serial,
                 std::function<Task<void>(Process&)> body, bool trap_exit);

  // Reference counting and serial(): PidTarget (pid.h).
  Node* node() const { return node_; }
  // The scheduler the process runs on; it changes only when an idle scheduler steals the process
  // while it waits in a ready queue (never while it runs or waits for a timer).
  Scheduler* scheduler() const { return scheduler_.load(std::memory_order_acquire); }
  // Stays on its scheduler (spawned on a given one): never stolen.
  void set_pinned(bool pinned) { pinned_ = pinned; }
  // Owner thread: the process has I/O in flight on its scheduler (process/io.h). It is not stolen
  // meanwhile, so that it dies, and cancels the operation, on the operation's scheduler: the
  // cancellation is done before anyone sees the death.
  void AddIoWait(int delta) { io_waits_ += delta; }
  // Owner thread: the process charged its time slice (it found work waiting); its next run
  // starts the slice's clock when it starts.
  void set_busy() { busy_ = true; }
  bool alive() const { return !dead_.load(std::memory_order_acquire); }

  // --- Any thread.
  // Queues an envelope; false (and the envelope is deleted) when the process is dead.
  bool Deliver(std::unique_ptr<Envelope> envelope);
  void Notify();

  // --- Start, in two steps: Bind() gives the block its own Pid (links can then be made before
  // the body runs), Launch() makes it a scheduler root and posts its first run.
  void Bind(Pid self) { self_ = std::move(self); }
  // False when the runtime shut down meanwhile (the block is then dead, its body never run).
  bool Launch();

  // --- Owner thread, from the Process API.
  Process& context();
  ProcessBody_* body() { return &body_; }
  const Pid& self() const { return self_; }
  bool trap_exit() const { return trap_exit_.load(std::memory_order_relaxed); }
  void set_trap_exit(bool on) { trap_exit_.store(on, std::memory_order_relaxed); }
  // Looks for a match in the mailbox (after taking in what arrived); removes and returns it.
  // Tests only the entries after `wait->scanned` and records the last one it tested.
  std::unique_ptr<Envelope> TakeMatch(WaitRecord* wait);
  // True when a signal means this process must stop at its next suspension.
  bool exit_pending() const { return pending_exit_ != nullptr; }
  void RequestSelfExit(ExitReason reason);
  // Suspends `h` until a match for `wait->matcher` arrives or `deadline_ns` (scheduler clock)
  // passes. On resumption `wait->result` holds the match, or null on timeout.
  void Suspend(std::coroutine_handle<> h, WaitRecord* wait, int64_t deadline_ns);
  // Fairness: the process used up its time slice with `wait->result` already in hand; it goes to
  // the back of its scheduler's queue and resumes with it (signals act first, as always).
  void YieldWith(std::coroutine_handle<> h, WaitRecord* wait);
  size_t mailbox_size() const { return mailbox_size_.load(std::memory_order_relaxed); }

  // --- Links and monitors (any thread; see the class comment for locking).
  // Adds a link to `other` and returns true; if `other` is dead, returns false and, when
  // `signal_if_dead`, delivers an exit signal noproc to this process.
  bool Link(const Pid& other, bool signal_if_dead);
  void Unlink(const Pid& other);
  bool LinkedTo(const Pid& other) const;
  uint64_t Monitor(const Pid& target);  // Down noproc at once if the target is dead.
  void Demonitor(uint64_t ref, bool flush);

  // Name registry support (guarded by mu_).
  bool SetRegisteredName(const std::string& name);  // False if it already has one or is dead.
  void ClearRegisteredName();
  std::string registered_name() const;

  // Hooks run after the frame is destroyed and before links and monitors fire (the etsmgr
  // manager's clients use one to do the manager's share of their exit), in the order added. Any
  // thread. With a non-null `key`, adds the hook only if no hook with that key is there. True
  // when a hook with this key (or this hook) will run at exit; false once the exit procedure has
  // taken the hooks to run (then this one never runs: the caller must act as if the process had
  // exited).
  using ExitHook = std::function<void(const Pid& self, const ExitReason& reason)>;
  bool AddExitHook(ExitHook hook, const void* key = nullptr);
  // True when a hook with `key` is there and will run (the caller need not build another).
  bool HasExitHook(const void* key) const;

  // Process-owned resources (any thread). AdoptResource makes this process the holder, taking
  // the resource from its current holder if it has one (in one step: it is never held by two
  // processes, nor by none in between); it fails (returns false, nothing changes) once this
  // process has begun exiting, so a resource can never be attached to a process that will not
  // release it. ReleaseResource detaches without calling OnOwnerExit (no-op unless this process
  // holds it).
  // It may throw (no memory for this process's resource list: std::bad_alloc), and then too
  // nothing changes.
  bool AdoptResource(const std::shared_ptr<ExitResource>& resource);
  void ReleaseResource(ExitResource* resource);
  size_t resource_count() const;

  ProcessInfo Info() const;
  Status status() const { return status_.load(std::memory_order_acquire); }

  // Runnable: the owner-thread entry point for every resumption.
  void Run() noexcept override;
  // Work stealing: moves to `to` when not pinned and not waiting for a timer.
  bool MigrateTo(Scheduler* to) noexcept override;
  // Root: runtime shutdown destroys the frame without signalling anyone.
  void DestroyAtShutdown() noexcept override;

  // Called by the body's root frame: an exception escaped the body / the body is done.
  void SetBodyException(std::string what);
  void BodyFinished();

 private:
  friend void process_internal::DestroyProcessControl(process_internal::PidTarget* target);
  ~ProcessControl();
  void Fire() noexcept override;  // Deadline timer.
  void TakeIncoming();            // Owner: incoming stack -> FIFO, acting on signals.
  void HandleSignal(ExitSignalEnvelope* signal);
  void Terminate(ExitReason reason);  // Owner: destroy the frame, then the exit procedure.
  void ExitProcedure(ExitReason reason);
  void LogExitStepThrew(const char* step) const;  // Never throws.
  void AppendToMailbox(Envelope* e);
  // Closes the incoming stack (later deliveries are dropped) and deletes every queued message.
  void CloseMailbox();
  void UnlinkFromMailbox(Envelope* e);

  enum WakeState : uint32_t { kIdle = 0, kNotified = 1, kWaiting = 2 };

  // Fields are grouped by who writes them, and small ones packed: at a million processes every
  // eight bytes here is 8 MB.
  // --- Any thread.
  std::atomic<uint32_t> wake_state_{kIdle};
  std::atomic<Envelope*> incoming_{nullptr};
  std::atomic<bool> dead_{false};
  std::atomic<Status> status_{Status::kRunnable};
  mutable SpinLock mu_;  // Guards extras_ (below) and the dead flag's transitions.

  // --- Owner thread (small ones first, next to the flags above).
  bool started_ = false;
  // Owner-written, read by Info() from any thread: relaxed atomics (plain loads and stores).
  std::atomic<bool> trap_exit_{false};
  bool timed_out_ = false;
  bool resources_closed_ ABSL_GUARDED_BY(mu_) = false;  // Set when the exit procedure begins.
  bool hooks_closed_ ABSL_GUARDED_BY(mu_) = false;      // Set when the exit hooks are taken to run.
  bool pinned_ = false;                                 // Immutable once launched.
  int io_waits_ = 0;                                    // Owner thread: see AddIoWait().
  bool busy_ = false;                                   // Owner thread: see set_busy().
  std::atomic<uint32_t> mailbox_size_{0};

  // --- Immutable after construction / Bind.
  Node* const node_;
  // Written by the thread of the scheduler that gives the process away (see MigrateTo), while
  // the process sits in that scheduler's ready queue: read with acquire everywhere.
  std::atomic<Scheduler*> scheduler_;
  Pid self_;  // Set by Bind; dropped at exit (the process's own reference).
  ProcessBody_ body_;
  // The Process& handed to the body: one pointer, constructed in place (process.cc).
  alignas(void*) unsigned char context_[sizeof(void*)];

  // --- Owner thread.
  std::coroutine_handle<> frame_;               // The body's root frame (BodyFrame in process.cc).
  std::unique_ptr<ExitReason> pending_exit_;    // Set when a signal or Exit() ends the process.
  std::unique_ptr<ExitReason> body_exception_;  // Set when an exception escaped the body.
  std::coroutine_handle<> waiting_handle_;
  WaitRecord* waiting_ = nullptr;
  Envelope* mailbox_head_ = nullptr;
  Envelope* mailbox_tail_ = nullptr;

  // --- Guarded by mu_. Links, monitors and the name live in a block allocated on first use:
  // most processes have none, and an idle process should stay small.
  struct MonitorEntry {
    uint64_t ref;
    Pid other;
  };
  // Most processes have one or two links (their supervisor, the etsmgr manager): kept inline.
  using Links = absl::InlinedVector<Pid, 2>;
  struct Extras {
    static void* operator new(size_t size) { return block_cache::Allocate(size); }
    static void operator delete(void* p, size_t size) { block_cache::Free(p, size); }
    Links links;
    // Watchers of this process by monitor ref: a server monitored by every caller of a call
    // (Call monitors it) adds and removes one per call, so this must not be a scan.
    absl::flat_hash_map<uint64_t, Pid> monitored_by;
    std::vector<MonitorEntry> monitoring;  // Processes this one watches.
    std::string registered_name;
    // Held resources (tables): an intrusive list, so giving one of 100k tables away touches
    // only its neighbours.
    ExitResource* resources = nullptr;
    size_t resource_count = 0;
    absl::InlinedVector<std::pair<const void*, ExitHook>, 1> exit_hooks;
    // Refs of monitors removed by Demonitor(flush) while their target was already dying and
    // their Down had not reached the mailbox: the Down is dropped when it arrives.
    std::vector<uint64_t> unwanted_downs;
  };
  // Owner thread, for a Down reaching the mailbox: the monitor that fired is gone from this side
  // too (as in Erlang). False (drop it) for the Down of a monitor Demonitor(flush) removed.
  bool TakeDown(const Envelope& e);
  // Resource list updates (with the resource's previous holder's lock too, if any).
  void LinkResource(ExitResource* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnlinkResource(ExitResource* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the first held resource off the list with the holder's reference (null when none).
  std::shared_ptr<ExitResource> PopResource();
  // Takes `r`, which this process holds, off its list; returns the holder's reference.
  std::shared_ptr<ExitResource> DetachResource(ExitResource* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops every held resource, each reference after the lock.
  void DropResources();
  Extras& extras() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!extras_) extras_ = std::make_unique<Extras>();
    return *extras_;
  }
  std::unique_ptr<Extras> extras_ ABSL_GUARDED_BY(mu_);
};

// The narrow way other etsmgr packages (tables, the manager) act on a process beyond the public
// API: what they may do is listed here, not the whole control block. The process package itself
// uses Control().
class ProcessAccess {
 public:
  static ProcessControl* Control(const Pid& pid) { return pid.control(); }
  static ProcessControl* Control(const Process& process);  // process.h

  // Exiting or dead (a snapshot): its exit procedure has begun.
  static bool Exiting(const Pid& pid) {
    return pid.control()->status() >= ProcessControl::Status::kExiting;
  }
  // Tables: see ProcessControl::AdoptResource / ReleaseResource.
  static bool AdoptResource(const Pid& to, const std::shared_ptr<ExitResource>& resource) {
    return to.control()->AdoptResource(resource);
  }
  static void ReleaseResource(const Pid& holder, ExitResource* resource) {
    holder.control()->ReleaseResource(resource);
  }
  static size_t ResourceCount(const Pid& pid) { return pid.control()->resource_count(); }
  // The manager: unlinks `pid` from `other` on `pid`'s behalf (both sides).
  static void Unlink(const Pid& pid, const Pid& other) { pid.control()->Unlink(other); }
  static bool AddExitHook(const Pid& pid, ProcessControl::ExitHook hook, const void* key) {
    return pid.control()->AddExitHook(std::move(hook), key);
  }
  static bool HasExitHook(const Pid& pid, const void* key) {
    return pid.control()->HasExitHook(key);
  }
};

// Tests: run where AdoptResource allocates, before it changes anything; may throw as the
// allocation would (std::bad_alloc).
using AdoptFault = void (*)();
inline std::atomic<AdoptFault> g_adopt_resource_fault{nullptr};

}  // namespace process_internal

inline process_internal::ProcessControl* Pid::control() const {
  return static_cast<process_internal::ProcessControl*>(target_);
}

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_INTERNAL_PROCESS_CONTROL_H_
