// Node: a runtime of processes (Erlang's node): the executor, the process registry and names.
//
//   absl::StatusOr<std::unique_ptr<Node>> node = Node::Create({});
//   Pid p = (*node)->Spawn(Body, {.name = "worker"}).value();
//   Send((*node)->Whereis("worker"), Hello{});
//
// Thread safety: every method may be called from any thread (processes included), except the
// destructor, which must not run on a scheduler thread. Destroying the Node shuts the runtime
// down: every live process's frame is destroyed (destructors run once) without exit signals.
#ifndef ETSMGR_PROCESS_NODE_H_
#define ETSMGR_PROCESS_NODE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/wait_slot.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/process/process.h"

namespace etsmgr {

namespace node_internal {
struct Deduce {};  // Node::Run's default template argument: take V from the body.
template <typename V>
struct RunResultOf {
  using type = std::conditional_t<std::is_constructible_v<V, absl::Status>, V, absl::StatusOr<V>>;
};
template <>
struct RunResultOf<void> {
  using type = absl::Status;
};
template <typename Awaitable>
struct TaskValue;
template <typename V>
struct TaskValue<Task<V>> {
  using type = V;
};
}  // namespace node_internal

// What Node::Run returns for a body yielding V (see there).
template <typename V>
using RunResult = typename node_internal::RunResultOf<V>::type;

class Node {
 public:
  static absl::StatusOr<std::unique_ptr<Node>> Create(const RuntimeOptions& options = {});
  ~Node();

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  Runtime& runtime() { return *runtime_; }

  // Spawns a process. Errors: FailedPrecondition after shutdown, InvalidArgument for a bad
  // scheduler index, AlreadyExists when options.name is taken.
  absl::StatusOr<Pid> Spawn(ProcessBody body, SpawnOptions options = {});
  // Spawns and links to `parent` before the child can run.
  absl::StatusOr<Pid> SpawnLink(const Pid& parent, ProcessBody body, SpawnOptions options = {});

  // --- Registry (Erlang's register/unregister/whereis).
  // Errors: InvalidArgument (empty name), AlreadyExists (name taken, or the process already has
  // a name), NotFound (dead process).
  absl::Status Register(const std::string& name, const Pid& pid);
  absl::Status Unregister(const std::string& name);
  // Removes `name` only if it is still registered to `pid` (process exit).
  void UnregisterIfOwner(const std::string& name, const Pid& pid);
  Pid Whereis(const std::string& name) const;  // Null Pid when unregistered.
  // Sends to a registered name: NotFound when nobody has it.
  template <typename T>
  absl::Status SendNamed(const std::string& name, T&& message) {
    Pid to = Whereis(name);
    if (!to.valid() || !Send(to, std::forward<T>(message))) {
      return absl::NotFoundError("no process registered as \"" + name + "\"");
    }
    return absl::OkStatus();
  }

  // Registration waiters: `waiter` is notified (Notify()) whenever `name` gets registered.
  void AddNameWaiter(const std::string& name, const Pid& waiter);
  void RemoveNameWaiter(const std::string& name, const Pid& waiter);

  // Per-node state of higher layers (the table name registry, manager instances): one T per
  // node, default-constructed on first use, destroyed with the node after its processes.
  // After the first use, a lock-free load (the manager's client calls look theirs up per call).
  template <typename T>
  T& Service() {
    static const size_t id = NextServiceId();
    if (id < kFastServices) {
      if (void* p = fast_services_[id].load(std::memory_order_acquire)) return *static_cast<T*>(p);
    }
    ExclusiveLock lock(services_mu_);
    std::shared_ptr<void>& slot = services_[id];
    if (!slot) slot = std::make_shared<T>();
    if (id < kFastServices) fast_services_[id].store(slot.get(), std::memory_order_release);
    return *static_cast<T*>(slot.get());
  }

  // Runs `body` (a callable `Process& -> Task<V>`) in a fresh process and blocks until it
  // returns: the one way for code outside the runtime (main, a test, a plain thread) to call the
  // process API (start a supervisor, make a call).
  //
  //   absl::Status s = node->Run([](Process& self) -> Task<absl::Status> {
  //     co_return co_await StopManager(self);
  //   });
  //   absl::StatusOr<int> n = node->Run([](Process& self) -> Task<int> { co_return 7; });
  //
  // The result is RunResult<V>: V itself when V is absl::Status or absl::StatusOr<U> (Run's own
  // errors merge into it), absl::Status for V = void, absl::StatusOr<V> otherwise. Run's errors:
  // FailedPrecondition when called from a scheduler thread (it would deadlock: await the body
  // from your process instead; checked, never blocks) or after shutdown; Aborted when the process
  // exited before the body returned (killed, an exception, the runtime shut down);
  // DeadlineExceeded when `timeout` passed first (the process is left running: the body bounds
  // its own work, this is the backstop; in threaded mode the calling thread waits with a
  // deadline, so no scheduler holds a timer for it; in deterministic mode the timeout is virtual
  // time, which an idle runtime jumps to); Internal when a deterministic runtime has nothing left
  // to run before the body is done.
  //
  // Thread: any plain thread. Works in threaded mode (blocks) and deterministic mode (drives the
  // runtime until done). `body` is copied into the process (captures must be copyable) and
  // destroyed with it; references it captures must outlive the process, not just the call, when
  // the timeout can pass first. The optional explicit template argument names V (a check that the
  // body yields what the caller expects): `node->Run<absl::Status>(...)`.
  template <typename V = node_internal::Deduce, typename F>
  requires std::is_invocable_v<F&, Process&>
  auto Run(F body, SpawnOptions options = {}, absl::Duration timeout = absl::InfiniteDuration());
  // The same for a Task that needs no Process& (it still runs as a process: CurrentPid() is its
  // pid, table ownership applies).
  template <typename V>
  RunResult<V> Run(Task<V> task, SpawnOptions options = {},
                   absl::Duration timeout = absl::InfiniteDuration());

  size_t process_count() const { return live_.load(std::memory_order_relaxed); }
  uint64_t NextRef() { return next_ref_.fetch_add(1, std::memory_order_relaxed); }

  void Shutdown();

 private:
  friend class process_internal::ProcessControl;
  // Called by the process's control block when it exits.
  void OnProcessExit();
  Node() = default;
  absl::StatusOr<Pid> SpawnImpl(ProcessBody body, SpawnOptions options, const Pid* link_to);

  std::unique_ptr<Runtime> runtime_;
  std::atomic<uint64_t> next_serial_{1};
  std::atomic<uint64_t> next_ref_{1};
  std::atomic<size_t> live_{0};

  mutable Mutex registry_mu_;
  absl::flat_hash_map<std::string, Pid> names_ ABSL_GUARDED_BY(registry_mu_);
  absl::flat_hash_map<std::string, std::vector<Pid>> name_waiters_ ABSL_GUARDED_BY(registry_mu_);

  static size_t NextServiceId();  // One per service type, program-wide.
  static constexpr size_t kFastServices = 8;
  std::atomic<void*> fast_services_[kFastServices] = {};
  Mutex services_mu_;
  // Last: goes first.
  absl::flat_hash_map<size_t, std::shared_ptr<void>> services_ ABSL_GUARDED_BY(services_mu_);
};

namespace node_internal {
template <typename R>
struct RunState {
  WaitSlot done;  // For a BlockOn wait.
  std::mutex mu;  // For a plain-thread wait with a timeout: guards `finished`.
  std::condition_variable cv;
  bool finished = false;
  std::optional<R> result;  // Written by the process before `done`/`finished` are signalled.
};
// Signals the waiter when the process is done with the body: held by the body's closure, which
// the process drops when it exits, whether or not the body ever ran (a process killed before its
// first run never runs it).
template <typename R>
class RunGuard {
 public:
  explicit RunGuard(std::shared_ptr<RunState<R>> state) : state_(std::move(state)) {}
  RunGuard(const RunGuard&) = delete;
  RunGuard& operator=(const RunGuard&) = delete;
  ~RunGuard() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->finished = true;
    }
    state_->cv.notify_all();
    state_->done.Notify();
  }

 private:
  std::shared_ptr<RunState<R>> state_;
};
// Runs on a scheduler: the timeout starts on the runtime's clock.
template <typename R>
Task<bool> AwaitRun(std::shared_ptr<RunState<R>> state, absl::Duration timeout) {
  co_return co_await state->done.Wait(timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                          : Deadline(timeout));
}
// Awaits the body's task and stores what it yields as R.
template <typename V, typename R>
Task<void> StoreResult(Task<V> task, std::shared_ptr<RunState<R>> state) {
  if constexpr (std::is_void_v<V>) {
    co_await std::move(task);
    state->result.emplace(absl::OkStatus());
  } else {
    state->result.emplace(co_await std::move(task));
  }
}
}  // namespace node_internal

template <typename V, typename F>
requires std::is_invocable_v<F&, Process&>
auto Node::Run(F body, SpawnOptions options, absl::Duration timeout) {
  using Body = std::invoke_result_t<F&, Process&>;
  using Value = typename node_internal::TaskValue<Body>::type;
  static_assert(std::is_same_v<V, node_internal::Deduce> || std::is_same_v<V, Value>,
                "Node::Run<V>: the body does not yield a Task<V>");
  static_assert(!std::is_reference_v<Value>, "Node::Run: the body must yield a value");
  using R = RunResult<Value>;
  if (Scheduler::Current() != nullptr) {
    return R(absl::FailedPreconditionError(
        "Node::Run: called from a scheduler thread (it would deadlock); await from a process"));
  }
  auto state = std::make_shared<node_internal::RunState<R>>();
  auto guard = std::make_shared<node_internal::RunGuard<R>>(state);
  absl::StatusOr<Pid> pid = Spawn(
      [state, guard, body = std::move(body)](Process& self) mutable -> Task<void> {
        return node_internal::StoreResult<Value, R>(body(self), state);
      },
      std::move(options));
  guard.reset();  // The closure's copy (or, if the spawn failed, none) signals the end.
  if (!pid.ok()) return R(pid.status());
  // A timeout past what a clock can add (centuries) is an infinite one: its deadline would
  // overflow and answer at once.
  if (timeout > absl::Hours(24 * 365 * 100)) timeout = absl::InfiniteDuration();
  bool done = false;
  if (timeout != absl::InfiniteDuration() && !runtime().deterministic()) {
    // Threaded, with a timeout: wait here (a timer on a scheduler would keep it from parking).
    std::unique_lock<std::mutex> lock(state->mu);
    done = state->cv.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                              [&state] { return state->finished; });
  } else {
    try {
      done = runtime().BlockOn(node_internal::AwaitRun(state, timeout));
    } catch (const RuntimeShutDown&) {
      return R(absl::FailedPreconditionError("Node::Run: the runtime shut down"));
    } catch (const std::logic_error& e) {
      return R(absl::InternalError(std::string("Node::Run: ") + e.what()));
    }
  }
  if (!done) {
    return R(absl::DeadlineExceededError(absl::StrCat("Node::Run: process ", pid->ToString(),
                                                      " did not finish within ",
                                                      absl::FormatDuration(timeout))));
  }
  if (!state->result.has_value()) {
    return R(absl::AbortedError(
        absl::StrCat("Node::Run: process ", pid->ToString(), " exited before its body returned")));
  }
  return R(std::move(*state->result));
}

template <typename V>
RunResult<V> Node::Run(Task<V> task, SpawnOptions options, absl::Duration timeout) {
  auto shared = std::make_shared<Task<V>>(std::move(task));
  return Run([shared](Process&) { return std::move(*shared); }, std::move(options), timeout);
}

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_NODE_H_
