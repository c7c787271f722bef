// Processes: Erlang-style lightweight processes on the executor.
//
//   Task<void> Echo(Process& self) {
//     while (true) {
//       Message m = co_await self.Receive();
//       if (auto* req = m.As<Request>()) Send(req->from, Reply{req->value});
//     }
//   }
//   auto node = Node::Create({}).value();
//   Pid echo = node->Spawn(Echo).value();
//
// A process is a coroutine body `Task<void>(Process&)` with a mailbox and a Pid. Its body runs on
// one scheduler and is never resumed concurrently. The Process& it receives is usable only from
// the process itself (its body and what the body awaits).
//
// Exits (OTP semantics; see exit_reason.h)
// - The body returning is exit `normal`; an exception escaping it is `{exception, what}`;
//   `co_await self.Exit(reason)` exits with `reason`.
// - When a process exits with R, each linked process gets an exit signal: if it traps exits it
//   receives ExitSignal{from, R} as a message; otherwise it exits with R, unless R is normal.
//   R = kill is never trappable, and others see the victim's reason as `killed`.
// - Signals take effect at the target's next suspension point in the process API (Receive*,
//   Sleep, Exit). A process suspended there dies at once. A running coroutine cannot be stopped
//   mid-instruction, and awaiting something outside the process API (say etsmgr::Sleep or a
//   WaitSlot) delays the exit until the process next suspends in the process API.
// - Dying is RAII-clean: the body's frames are destroyed (destructors run exactly once), then
//   exit hooks run (tables move to their heirs), the registered name is freed, and only then
//   links and monitors fire (OTP's order).
//
// Fairness (time slices, work stealing)
// - Every suspension point of the process API that finds what it waits for already there (a
//   Receive with a message queued) charges the running process one reduction, as do the
//   manager's table calls; past its slice (RuntimeOptions::slice_reductions charges or
//   RuntimeOptions::slice of time, whichever first) the process yields to the back of its
//   scheduler's queue, so a busy process cannot freeze the others on its scheduler (timers, the
//   manager, supervisors). Plain tasks get the same budget at their WaitSlot waits.
//   Deterministic mode counts charges only, so seeds still replay exactly.
// - Table operations and Send do not suspend and are not charged. A process in a tight loop
//   that never suspends is beyond any scheduler's reach: give it suspension points
//   (`co_await self.Yield()`).
// - An idle scheduler takes runnable processes (and tasks not yet started) from a busy one; a
//   process runs on one thread at a time and its messages keep their order wherever it runs.
//   SpawnOptions::pin keeps a process on its scheduler.
//
// GCC12-WORKAROUND (see task.h): receive aggregates with non-trivial members into a named variable,
// `Down d = co_await self.Receive<Down>();`, not as a temporary inside a larger expression such
// as `(co_await self.Receive<Down>()).pid`, which gcc 12 destroys twice.
//
// Threading: Send/Exit/Node methods from any thread; Process methods only from the process.
#ifndef ETSMGR_PROCESS_PROCESS_H_
#define ETSMGR_PROCESS_PROCESS_H_

#include <coroutine>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etsmgr/executor/task.h"
#include "etsmgr/process/exit_reason.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/message.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/process/process_info.h"

namespace etsmgr {

class Node;
class Process;

using ProcessBody = std::function<Task<void>(Process&)>;

struct SpawnOptions {
  int scheduler = -1;  // Where it starts; -1: the least loaded.
  // Pinned: it stays on that scheduler. Otherwise an idle scheduler may take it (work stealing)
  // while it waits in a ready queue; its execution stays single-threaded and its messages stay
  // in order either way.
  bool pin = false;
  bool trap_exit = false;
  std::string name;  // Registered before the body starts; the spawn fails if it is taken.
};

// Sends `message` to `to` from any thread. Returns false when `to` is null or dead (the message
// is dropped, as in Erlang).
template <typename T>
bool Send(const Pid& to, T&& message) {
  if (!to.valid()) return false;
  return process_internal::ProcessAccess::Control(to)->Deliver(
      std::make_unique<TypedEnvelope<std::decay_t<T>>>(std::forward<T>(message)));
}

// A snapshot of a process (Erlang's process_info): status, mailbox length, links, monitors (both
// directions), trap_exit, registered name, memory. NotFound for a null or dead Pid. Any thread;
// the mailbox length is the owner's count at some recent moment.
absl::StatusOr<ProcessInfo> GetProcessInfo(const Pid& pid);

// The Pid of the process running on this thread, or the null Pid on a plain thread (tables check
// access against it). It is set whenever a process runs from the process API; a process body that
// directly awaits an executor primitive (etsmgr::Sleep, a WaitSlot) is resumed outside it and
// counts as no process until its next process-API suspension: use self.Sleep and receives.
Pid CurrentPid();

// Sends an exit signal to `pid` (Erlang's exit/2), from any thread. `kill` cannot be trapped;
// `normal` is ignored by a non-trapping target. `from` may be null (from outside any process).
void SendExit(const Pid& pid, ExitReason reason, const Pid& from = Pid());

class Process {
 public:
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  const Pid& self() const { return control_->self(); }
  Node& node() const { return *control_->node(); }

  // --- Receiving. Each awaitable yields what it names; "For" variants take a timeout and yield
  // std::nullopt when it passes first. Selective receives leave other messages in order.
  class ReceiveAwaiter;
  template <typename T>
  class TypedReceiveAwaiter;

  ReceiveAwaiter ReceiveAny(absl::Time deadline);  // -> std::optional<Message>
  auto Receive();                                  // -> Message
  auto ReceiveFor(absl::Duration timeout);         // -> std::optional<Message>
  template <typename T>
  auto Receive();  // -> T (first message of type T)
  template <typename T>
  TypedReceiveAwaiter<T> ReceiveFor(absl::Duration timeout);  // -> std::optional<T>
  // First message for which `pred` holds (-> std::optional<Message>). The predicate sees each
  // queued message (Envelope::Is<T>() / As<T>()) on this process's thread, once per receive (as
  // in Erlang: a message it refused is not offered to it again when the receive wakes up, so a
  // predicate that depends on changing state sees only messages that arrive after the change).
  class PredicateReceiveAwaiter;
  PredicateReceiveAwaiter ReceiveIf(std::function<bool(const Envelope&)> pred,
                                    absl::Time deadline = absl::InfiniteFuture());
  // The same with a timeout from now (one clock read instead of three: for hot call paths).
  PredicateReceiveAwaiter ReceiveIfFor(std::function<bool(const Envelope&)> pred,
                                       absl::Duration timeout);
  // Suspends for `duration` (messages stay queued; signals still act).
  ReceiveAwaiter Sleep(absl::Duration duration);

  // Exits with `reason` (untrappable for this process: it is its own decision).
  ReceiveAwaiter Exit(ExitReason reason);
  // Lets every other ready process and task of this scheduler run first (signals act here). A
  // process in a long computation that never suspends is beyond any scheduler's reach: give it
  // such points (see "Fairness" below).
  ReceiveAwaiter Yield();

  // --- Links, monitors, flags.
  // Links to `other`; if it has exited, this process gets an exit signal noproc (as Erlang).
  void Link(const Pid& other) { control_->Link(other, /*signal_if_dead=*/true); }
  // Links to `other` if it is alive (true); false, with no signal, if it has exited.
  bool TryLink(const Pid& other) { return control_->Link(other, /*signal_if_dead=*/false); }
  void Unlink(const Pid& other) { control_->Unlink(other); }
  // Whether this process is linked to `other` now.
  bool LinkedTo(const Pid& other) const { return control_->LinkedTo(other); }
  uint64_t Monitor(const Pid& target) { return control_->Monitor(target); }
  void Demonitor(uint64_t ref, bool flush = false) { control_->Demonitor(ref, flush); }
  bool trap_exit() const { return control_->trap_exit(); }
  void set_trap_exit(bool on) { control_->set_trap_exit(on); }
  size_t mailbox_size() const { return control_->mailbox_size(); }

  // --- Spawning from a process.
  absl::StatusOr<Pid> Spawn(ProcessBody body, SpawnOptions options = {});
  // Spawns and links atomically: the child cannot exit unseen before the link exists.
  absl::StatusOr<Pid> SpawnLink(ProcessBody body, SpawnOptions options = {});

  // --- Registry.
  absl::Status Register(const std::string& name);
  // Waits until `name` is registered (woken by the registration, no polling), up to `deadline`.
  // Yields the Pid, or std::nullopt at the deadline.
  Task<std::optional<Pid>> WaitForRegistered(std::string name,
                                             absl::Time deadline = absl::InfiniteFuture());

 private:
  // The process package and process_internal::ProcessAccess (what other packages may do).
  friend class process_internal::ProcessAccess;
  friend class process_internal::ProcessControl;
  friend class Node;
  // Made by the control block, in its own storage, for the body it runs.
  explicit Process(process_internal::ProcessControl* control) : control_(control) {}
  process_internal::ProcessControl* control() const { return control_; }
  process_internal::ProcessControl* control_;
};

// Waits until `pid` has exited and yields its exit reason (Erlang's monitor + receive of its
// 'DOWN'): noproc at once for a dead or null pid. Only that Down is taken; other messages stay
// queued in order. From the process `self` only.
//
//   ExitReason why = co_await AwaitDown(self, worker);
Task<ExitReason> AwaitDown(Process& self, Pid pid);
// The same, up to `deadline`: std::nullopt when it passes first (the monitor is then removed, and
// a Down that raced with the deadline is flushed).
Task<std::optional<ExitReason>> AwaitDown(Process& self, Pid pid, absl::Time deadline);

class Process::ReceiveAwaiter {
 public:
  ReceiveAwaiter(ReceiveAwaiter&& other) noexcept
      : control_(other.control_),
        wait_{other.wait_.matcher, nullptr},
        deadline_ns_(other.deadline_ns_) {}

  bool await_ready() {
    if (control_->exit_pending()) return false;  // Suspend: Run() terminates the process.
    wait_.result = control_->TakeMatch(&wait_);
    if (wait_.result == nullptr) return false;
    // A message was waiting: no suspension needed, but it costs a reduction of the time slice;
    // past the slice the process yields with the message in hand (fairness).
    control_->set_busy();
    if (Scheduler::Current()->Charge()) {
      yield_ = true;
      return false;
    }
    return true;
  }
  void await_suspend(std::coroutine_handle<> h) {
    if (yield_) {
      control_->YieldWith(h, &wait_);
    } else {
      control_->Suspend(h, &wait_, deadline_ns_);
    }
  }
  std::optional<Message> await_resume() {
    if (wait_.error) std::rethrow_exception(std::exchange(wait_.error, nullptr));
    if (wait_.result == nullptr) return std::nullopt;
    return Message(std::move(wait_.result));
  }

 private:
  // Made by Process's receive calls (and the awaiters below that wrap one).
  friend class Process;
  template <typename T>
  friend class TypedReceiveAwaiter;
  friend class PredicateReceiveAwaiter;
  ReceiveAwaiter(process_internal::ProcessControl* control, process_internal::Matcher matcher,
                 int64_t deadline_ns)
      : control_(control), wait_{matcher, nullptr}, deadline_ns_(deadline_ns) {}

  process_internal::ProcessControl* control_;
  process_internal::WaitRecord wait_;
  int64_t deadline_ns_;
  bool yield_ = false;
};

// A receive with a predicate: owns the predicate the matcher points at (kept out of the plain
// awaiter so that a process waiting by type stays small).
class Process::PredicateReceiveAwaiter {
 public:
  PredicateReceiveAwaiter(PredicateReceiveAwaiter&& other) noexcept
      : pred_(std::move(other.pred_)),
        inner_(other.inner_.control_, process_internal::Matcher{&MatchPredicate, &pred_},
               other.inner_.deadline_ns_) {}
  bool await_ready() { return inner_.await_ready(); }
  void await_suspend(std::coroutine_handle<> h) { inner_.await_suspend(h); }
  std::optional<Message> await_resume() { return inner_.await_resume(); }

 private:
  friend class Process;
  PredicateReceiveAwaiter(process_internal::ProcessControl* control,
                          std::function<bool(const Envelope&)> pred, int64_t deadline_ns)
      : pred_(std::move(pred)),
        inner_(control, process_internal::Matcher{&MatchPredicate, &pred_}, deadline_ns) {}
  static bool MatchPredicate(const Envelope& e, const void* ctx) {
    return (*static_cast<const std::function<bool(const Envelope&)>*>(ctx))(e);
  }
  std::function<bool(const Envelope&)> pred_;
  ReceiveAwaiter inner_;
};

template <typename T>
class Process::TypedReceiveAwaiter {
 public:
  bool await_ready() { return inner_.await_ready(); }
  void await_suspend(std::coroutine_handle<> h) { inner_.await_suspend(h); }
  std::optional<T> await_resume() {
    std::optional<Message> m = inner_.await_resume();
    if (!m) return std::nullopt;
    return std::move(*m->As<T>());
  }

 private:
  friend class Process;
  TypedReceiveAwaiter(process_internal::ProcessControl* control, int64_t deadline_ns)
      : inner_(control, process_internal::Matcher{&MatchType, MessageTypeTag<T>()}, deadline_ns) {}
  static bool MatchType(const Envelope& e, const void* tag) { return e.type() == tag; }
  ReceiveAwaiter inner_;
};

namespace process_internal {
inline bool MatchAny(const Envelope&, const void*) { return true; }
inline bool MatchNone(const Envelope&, const void*) { return false; }
int64_t DeadlineNanos(absl::Time deadline);
int64_t TimeoutNanos(absl::Duration timeout);

// Unwraps an awaiter yielding std::optional<X> into X (for receives without a deadline).
template <typename Inner>
class Unwrap {
 public:
  explicit Unwrap(Inner inner) : inner_(std::move(inner)) {}
  bool await_ready() { return inner_.await_ready(); }
  void await_suspend(std::coroutine_handle<> h) { inner_.await_suspend(h); }
  auto await_resume() { return std::move(*inner_.await_resume()); }

 private:
  Inner inner_;
};
}  // namespace process_internal

inline Process::ReceiveAwaiter Process::ReceiveAny(absl::Time deadline) {
  return ReceiveAwaiter(control_, process_internal::Matcher{&process_internal::MatchAny, nullptr},
                        process_internal::DeadlineNanos(deadline));
}
inline auto Process::Receive() {
  return process_internal::Unwrap<ReceiveAwaiter>(ReceiveAwaiter(
      control_, process_internal::Matcher{&process_internal::MatchAny, nullptr}, INT64_MAX));
}
inline auto Process::ReceiveFor(absl::Duration timeout) {
  return ReceiveAwaiter(control_, process_internal::Matcher{&process_internal::MatchAny, nullptr},
                        process_internal::TimeoutNanos(timeout));
}
template <typename T>
auto Process::Receive() {
  return process_internal::Unwrap<TypedReceiveAwaiter<T>>(
      TypedReceiveAwaiter<T>(control_, INT64_MAX));
}
template <typename T>
Process::TypedReceiveAwaiter<T> Process::ReceiveFor(absl::Duration timeout) {
  return TypedReceiveAwaiter<T>(control_, process_internal::TimeoutNanos(timeout));
}

namespace process_internal {
inline ProcessControl* ProcessAccess::Control(const Process& process) { return process.control(); }
}  // namespace process_internal

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_PROCESS_H_
