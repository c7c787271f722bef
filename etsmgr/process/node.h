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
#include "etsmgr/base/mutex.h"
#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/wait_slot.h"
#include "etsmgr/process/pid.h"
#include "etsmgr/process/process.h"

namespace etsmgr {

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

  // Runs `body` in a fresh process and waits for what it returns, from a plain thread: the one
  // way for code outside the runtime to call the process API (start a supervisor, make a call).
  // Works in threaded mode (blocks) and deterministic mode (drives the runtime until done). T is
  // absl::Status or absl::StatusOr<U>; its error when the body could not finish: FailedPrecondition
  // from a scheduler thread (it would deadlock: await the body's task from your process instead)
  // or after shutdown, Aborted when the process exited first (killed, or the runtime shut down),
  // Internal when a deterministic runtime has nothing left to run before the body is done.
  template <typename T>
  T Run(std::function<Task<T>(Process&)> body, SpawnOptions options = {});

  size_t process_count() const { return live_.load(std::memory_order_relaxed); }
  uint64_t NextRef() { return next_ref_.fetch_add(1, std::memory_order_relaxed); }

  // Called by the process's control block.
  void OnProcessExit(process_internal::ProcessControl* p);

  void Shutdown();

 private:
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
template <typename T>
struct RunState {
  WaitSlot done;
  std::optional<T> result;
};
// Signals the waiter when the process is done with the body: held by the body's closure, which
// the process drops when it exits, whether or not the body ever ran (a process killed before its
// first run never runs it).
template <typename T>
class RunGuard {
 public:
  explicit RunGuard(std::shared_ptr<RunState<T>> state) : state_(std::move(state)) {}
  RunGuard(const RunGuard&) = delete;
  RunGuard& operator=(const RunGuard&) = delete;
  ~RunGuard() { state_->done.Notify(); }

 private:
  std::shared_ptr<RunState<T>> state_;
};
template <typename T>
Task<void> AwaitRun(std::shared_ptr<RunState<T>> state) {
  co_await state->done.Wait();
}
}  // namespace node_internal

template <typename T>
T Node::Run(std::function<Task<T>(Process&)> body, SpawnOptions options) {
  static_assert(std::is_constructible_v<T, absl::Status>,
                "Node::Run's body yields absl::Status or absl::StatusOr<U>");
  if (Scheduler::Current() != nullptr) {
    return T(absl::FailedPreconditionError(
        "Node::Run: called from a scheduler thread (it would deadlock); await from a process"));
  }
  auto state = std::make_shared<node_internal::RunState<T>>();
  auto guard = std::make_shared<node_internal::RunGuard<T>>(state);
  absl::StatusOr<Pid> pid =
      Spawn([state, guard, body = std::move(body)](
                Process& self) -> Task<void> { state->result.emplace(co_await body(self)); },
            std::move(options));
  guard.reset();  // The closure's copy (or, if the spawn failed, none) signals the end.
  if (!pid.ok()) return T(pid.status());
  try {
    runtime().BlockOn(node_internal::AwaitRun(state));
  } catch (const RuntimeShutDown&) {
    return T(absl::FailedPreconditionError("Node::Run: the runtime shut down"));
  } catch (const std::logic_error& e) {
    return T(absl::InternalError(std::string("Node::Run: ") + e.what()));
  }
  if (!state->result.has_value()) {
    return T(absl::AbortedError(
        absl::StrCat("Node::Run: process ", pid->ToString(), " exited before its body returned")));
  }
  return std::move(*state->result);
}

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_NODE_H_
