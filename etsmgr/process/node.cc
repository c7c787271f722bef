#include "etsmgr/process/node.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace etsmgr {

// The control block and its helpers, used throughout this package's implementation.
using process_internal::ExitResource;
using process_internal::ExitSignalEnvelope;
using process_internal::Matcher;
using process_internal::NameRegistered;
using process_internal::NotifyNameRegistered;
using process_internal::ProcessAccess;
using process_internal::ProcessControl;
using process_internal::WaitRecord;

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const RuntimeOptions& options) {
  absl::StatusOr<std::unique_ptr<Runtime>> rt = Runtime::Create(options);
  if (!rt.ok()) return rt.status();
  std::unique_ptr<Node> node(new Node());
  node->runtime_ = std::move(*rt);
  return node;
}

Node::~Node() { Shutdown(); }

size_t Node::NextServiceId() {
  static std::atomic<size_t> next{0};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void Node::Shutdown() {
  if (runtime_) runtime_->Shutdown();
  ExclusiveLock lock(registry_mu_);
  names_.clear();
  name_waiters_.clear();
}

absl::StatusOr<Pid> Node::Spawn(ProcessBody body, SpawnOptions options) {
  return SpawnImpl(std::move(body), std::move(options), nullptr);
}

absl::StatusOr<Pid> Node::SpawnLink(const Pid& parent, ProcessBody body, SpawnOptions options) {
  return SpawnImpl(std::move(body), std::move(options), &parent);
}

absl::StatusOr<Pid> Node::SpawnImpl(ProcessBody body, SpawnOptions options, const Pid* link_to) {
  absl::StatusOr<Scheduler*> scheduler = runtime_->PickScheduler(options.scheduler);
  if (!scheduler.ok()) return scheduler.status();
  if (!body) return absl::InvalidArgumentError("spawn: empty process body");
  auto* control =
      new ProcessControl(this, *scheduler, next_serial_.fetch_add(1, std::memory_order_relaxed),
                         std::move(body), options.trap_exit);
  Pid pid(control);
  control->set_pinned(options.pin);
  if (!options.name.empty()) {
    absl::Status registered = Register(options.name, pid);
    if (!registered.ok()) return registered;  // The never-started block dies with `pid`.
  }
  control->Bind(pid);
  // Link before the child can run; a dead parent makes the child get an exit signal noproc.
  if (link_to != nullptr) control->Link(*link_to, /*signal_if_dead=*/true);
  live_.fetch_add(1, std::memory_order_relaxed);
  if (!control->Launch()) {
    if (!options.name.empty()) UnregisterIfOwner(options.name, pid);
    return absl::FailedPreconditionError("spawn: the runtime shut down");
  }
  return pid;
}

absl::Status Node::Register(const std::string& name, const Pid& pid) {
  if (name.empty()) return absl::InvalidArgumentError("register: empty name");
  if (!pid.valid()) return absl::InvalidArgumentError("register(\"" + name + "\"): null pid");
  std::vector<Pid> waiters;
  {
    ExclusiveLock lock(registry_mu_);
    auto it = names_.find(name);
    // A dead process keeps its name only until its exit procedure unregisters it: as in Erlang,
    // the name is free as soon as the process is dead.
    if (it != names_.end() && !it->second.alive()) {
      names_.erase(it);
      it = names_.end();
    }
    if (it != names_.end()) {
      return absl::AlreadyExistsError(absl::StrCat("register(\"", name, "\", ", pid.ToString(),
                                                   "): name already registered to ",
                                                   it->second.ToString()));
    }
    if (!pid.control()->SetRegisteredName(name)) {
      if (!pid.alive()) {
        return absl::NotFoundError(
            absl::StrCat("register(\"", name, "\"): process ", pid.ToString(), " is dead"));
      }
      return absl::AlreadyExistsError(absl::StrCat("register(\"", name, "\"): process ",
                                                   pid.ToString(), " is already registered as \"",
                                                   pid.control()->registered_name(), "\""));
    }
    names_.emplace(name, pid);
    auto w = name_waiters_.find(name);
    if (w != name_waiters_.end()) {
      waiters = std::move(w->second);
      name_waiters_.erase(w);
    }
    // Under the lock: a waiter that leaves (RemoveNameWaiter) after this has its notice queued
    // already, and can drop it.
    for (const Pid& waiter : waiters) NotifyNameRegistered(waiter, name);
  }
  return absl::OkStatus();
}

absl::Status Node::Unregister(const std::string& name) {
  Pid pid;
  {
    ExclusiveLock lock(registry_mu_);
    auto it = names_.find(name);
    if (it == names_.end()) {
      return absl::NotFoundError("unregister(\"" + name + "\"): name not registered");
    }
    pid = std::move(it->second);
    names_.erase(it);
  }
  pid.control()->ClearRegisteredName();
  return absl::OkStatus();
}

void Node::UnregisterIfOwner(const std::string& name, const Pid& pid) {
  ExclusiveLock lock(registry_mu_);
  auto it = names_.find(name);
  if (it != names_.end() && it->second == pid) names_.erase(it);
}

Pid Node::Whereis(const std::string& name) const {
  ExclusiveLock lock(registry_mu_);
  auto it = names_.find(name);
  // Dead, but not yet unregistered by its exit procedure: gone, as in Erlang.
  return it == names_.end() || !it->second.alive() ? Pid() : it->second;
}

void Node::AddNameWaiter(const std::string& name, const Pid& waiter) {
  ExclusiveLock lock(registry_mu_);
  std::vector<Pid>& waiters = name_waiters_[name];
  if (std::find(waiters.begin(), waiters.end(), waiter) == waiters.end()) waiters.push_back(waiter);
}

void Node::RemoveNameWaiter(const std::string& name, const Pid& waiter) {
  ExclusiveLock lock(registry_mu_);
  auto it = name_waiters_.find(name);
  if (it == name_waiters_.end()) return;
  auto& v = it->second;
  v.erase(std::remove(v.begin(), v.end(), waiter), v.end());
  if (v.empty()) name_waiters_.erase(it);
}

void Node::OnProcessExit() { live_.fetch_sub(1, std::memory_order_relaxed); }

}  // namespace etsmgr
