#include "etsmgr/process/supervisor.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/exception_text.h"
#include "etsmgr/base/log.h"
#include "etsmgr/base/status_macros.h"

namespace etsmgr {
namespace {

struct SupRequest {
  enum class Kind { kStart, kTerminate, kDelete, kRestart, kWhich, kCount, kStop };
  Kind kind;
  std::string id;
  std::optional<ChildSpec> spec;
};

// GCC12-WORKAROUND: built by a function, not braced in place: gcc 12 destroys the members of a
// braced aggregate temporary twice when the full-expression contains a co_await (see task.h).
SupRequest MakeRequest(SupRequest::Kind kind, std::string id,
                       std::optional<ChildSpec> spec = std::nullopt) {
  SupRequest r;
  r.kind = kind;
  r.id = std::move(id);
  r.spec = std::move(spec);
  return r;
}

struct SupReply {
  absl::Status status;
  Pid pid;
  std::vector<ChildInfo> children;
  ChildCounts counts;
};

struct SupInitDone {
  uint64_t ref;
  absl::Status status;
};

struct Child {
  ChildSpec spec;
  Pid pid;
  // A restart of its group failed: a TryAgainRestart for it is in the supervisor's mailbox.
  bool restarting = false;
};

// The supervisor's message to itself after a failed restart (OTP's try_again_restart): the next
// attempt comes after what its mailbox already holds (a stop, its parent's exit).
struct TryAgainRestart {
  std::string id;
};

// WorkerChild's start function. The supervisor recognises it (std::function::target) and
// spawn_links the body itself, so restarting a worker takes no coroutine; a start function a
// caller wrapped or replaced is awaited as written.
struct WorkerStart {
  ProcessBody body;
  Task<absl::StatusOr<Pid>> operator()(Process& sup) const { co_return sup.SpawnLink(body); }
};

class Supervisor {
 public:
  Supervisor(Process& self, SupervisorFlags flags, std::vector<ChildSpec> specs, Pid parent)
      : self_(self), flags_(flags), parent_(std::move(parent)) {
    for (ChildSpec& spec : specs) children_.push_back(Child{std::move(spec), Pid()});
  }

  // Starts every child in order; on a failure stops the started ones in reverse.
  Task<absl::Status> Init() {
    for (size_t i = 0; i < children_.size(); ++i) {
      absl::Status s = co_await StartOne(children_[i]);
      if (!s.ok()) {
        for (size_t j = i; j-- > 0;) co_await StopOne(children_[j]);
        co_return s;
      }
    }
    co_return absl::OkStatus();
  }

  // The receive loop; returns the reason the supervisor exits with.
  Task<ExitReason> Loop() {
    while (true) {
      Message m = co_await self_.Receive();
      if (const ExitSignal* sig = m.As<ExitSignal>()) {
        if (parent_.valid() && sig->from == parent_) {
          co_await StopAll();
          co_return sig->reason;
        }
        auto it = std::find_if(children_.begin(), children_.end(),
                               [&](const Child& c) { return c.pid.valid() && c.pid == sig->from; });
        if (it == children_.end()) continue;  // Not (or no longer) one of ours.
        size_t index = static_cast<size_t>(it - children_.begin());
        bool retry = false;
        std::optional<bool> restarted = HandleChildExitNow(index, sig->reason, &retry);
        if (retry) {
          TryAgainLater(index);
          restarted = true;
        } else if (!restarted.has_value()) {
          restarted = co_await HandleChildExit(index, sig->reason);
        }
        if (!*restarted) co_return co_await GiveUp();
      } else if (const TryAgainRestart* again = m.As<TryAgainRestart>()) {
        Child* c = Find(again->id);
        if (c == nullptr || !c->restarting) continue;  // Terminated, deleted or restarted since.
        // Others run first: a child that keeps failing at once must not hold the scheduler (the
        // process whose exit the next attempt waits for may need it).
        co_await self_.Sleep(absl::ZeroDuration());
        if (!co_await RestartGroupOnce(static_cast<size_t>(c - children_.data()))) {
          co_return co_await GiveUp();
        }
      } else if (CallRequest<SupRequest>* req = m.As<CallRequest<SupRequest>>()) {
        if (req->request.kind == SupRequest::Kind::kStop) {
          co_await StopAll();
          ReplyTo(*req, SupReply{});
          co_return ExitReason::Normal();  // Like gen_server:stop: a linked parent lives on.
        }
        SupReply reply = co_await Handle(req->request);
        ReplyTo(*req, std::move(reply));
      }
    }
  }

  Task<void> StopAll() {
    for (size_t j = children_.size(); j-- > 0;) co_await StopOne(children_[j]);
  }

 private:
  Task<absl::Status> StartOne(Child& c) {
    if (IsWorker(c)) co_return StartWorker(c);
    if (!c.spec.start) {
      co_return absl::InvalidArgumentError(
          absl::StrCat("child \"", c.spec.id, "\": no start function"));
    }
    // A start that throws fails like one that returns an error (OTP catches it too): the
    // exception must not end the supervisor and its children with it.
    absl::StatusOr<Pid> pid;
    try {
      pid = co_await c.spec.start(self_);
    } catch (...) {
      pid = absl::InternalError(absl::StrCat("its start threw: ", CurrentExceptionText()));
    }
    co_return Started(c, std::move(pid));
  }

  // A child whose start is WorkerChild's (not replaced since): spawn_link'ed directly.
  static bool IsWorker(const Child& c) { return c.spec.start.target<WorkerStart>() != nullptr; }
  absl::Status StartWorker(Child& c) {
    return Started(c, self_.SpawnLink(c.spec.start.target<WorkerStart>()->body));
  }

  absl::Status Started(Child& c, absl::StatusOr<Pid> pid) {
    if (!pid.ok()) {
      return WithMessage(pid.status(),
                         absl::StrCat("supervisor ", self_.self().ToString(), ": child \"",
                                      c.spec.id, "\" failed to start: ", pid.status().message()));
    }
    c.pid = *std::move(pid);
    return absl::OkStatus();
  }

  // Stops a running child per its shutdown spec and waits until it is gone. The link stays until
  // the child is gone: if this supervisor is killed meanwhile, the child still hears of it.
  Task<void> StopOne(Child& c) {
    if (!c.pid.valid()) co_return;
    Pid pid = std::exchange(c.pid, Pid());
    uint64_t ref = self_.Monitor(pid);
    auto is_down = [ref](const Envelope& e) {
      const Down* d = e.As<Down>();
      return d != nullptr && d->ref == ref;
    };
    if (c.spec.shutdown <= absl::ZeroDuration()) {
      SendExit(pid, ExitReason::Kill(), self_.self());
    } else {
      SendExit(pid, ExitReason::Shutdown(), self_.self());
      if (!co_await self_.ReceiveIfFor(is_down, c.spec.shutdown)) {
        SendExit(pid, ExitReason::Kill(), self_.self());
        co_await self_.ReceiveIf(is_down);
      }
    }
    if (c.spec.shutdown <= absl::ZeroDuration()) co_await self_.ReceiveIf(is_down);
    // Its exit signal was asked for, so it must not be seen as a crash later: dropped if it is
    // queued by now. (Across threads it may come after the Down; then Loop finds no child with
    // its pid, the pid having been cleared or replaced, and drops it too.)
    self_.Unlink(pid);
    while (co_await self_.ReceiveIf(
        [&pid](const Envelope& e) {
          const ExitSignal* s = e.As<ExitSignal>();
          return s != nullptr && s->from == pid;
        },
        absl::InfinitePast())) {
    }
  }

  bool ShouldRestart(const Child& c, const ExitReason& reason) const {
    switch (c.spec.restart) {
      case RestartType::kPermanent:
        return true;
      case RestartType::kTransient:
        return !reason.is_normal() && reason.kind() != ExitReason::Kind::kShutdown;
      case RestartType::kTemporary:
        return false;
    }
    return false;
  }

  // Records a restart; false when it exceeds the intensity within the period.
  bool AddRestart() {
    Scheduler* s = Scheduler::Current();
    int64_t now = s->NowNanos();
    int64_t period = absl::ToInt64Nanoseconds(flags_.period);
    restarts_.push_back(now);
    while (!restarts_.empty() && restarts_.front() <= now - period) restarts_.pop_front();
    return static_cast<int>(restarts_.size()) <= flags_.intensity;
  }

  // The children [first, last) that restart when child `index` exits.
  std::pair<size_t, size_t> RestartGroup(size_t index) const {
    switch (flags_.strategy) {
      case RestartStrategy::kOneForOne:
        return {index, index + 1};
      case RestartStrategy::kOneForAll:
        return {0, children_.size()};
      case RestartStrategy::kRestForOne:
        return {index, children_.size()};
    }
    return {index, index + 1};
  }

  // What every exit of child `index` does first: false when it is not restarted.
  bool NoteChildExit(size_t index, const ExitReason& reason) {
    Child& child = children_[index];
    child.pid = Pid();
    if (!ShouldRestart(child, reason)) {
      // An abnormal end is reported even when nothing restarts (as OTP's child_terminated).
      if (!reason.is_normal() && reason.kind() != ExitReason::Kind::kShutdown &&
          LogEnabled(LogLevel::kWarning)) {
        Logf(LogLevel::kWarning, "supervisor %s: child \"%s\" exited (%s), not restarted",
             self_.self().ToString(), child.spec.id, reason.ToString());
      }
      if (child.spec.restart == RestartType::kTemporary) {
        children_.erase(children_.begin() + static_cast<ptrdiff_t>(index));
      }
      return false;
    }
    if (LogEnabled(LogLevel::kNotice)) {  // Not even the arguments otherwise: once per restart.
      Logf(LogLevel::kNotice, "supervisor %s: child \"%s\" exited (%s), restarting",
           self_.self().ToString(), child.spec.id, reason.ToString());
    }
    return true;
  }

  // HandleChildExit without a coroutine when the group to restart is the exited worker alone
  // (one_for_one, the common case) and its first restart works; nullopt, having done nothing,
  // when the group is more than that worker, and `retry` when that first restart failed (the
  // coroutine path retries).
  std::optional<bool> HandleChildExitNow(size_t index, const ExitReason& reason, bool* retry) {
    auto [first, last] = RestartGroup(index);
    if (first != index || last != index + 1 || !IsWorker(children_[index])) return std::nullopt;
    if (!NoteChildExit(index, reason)) return true;
    if (!AddRestart()) return false;
    absl::Status s = StartWorker(children_[index]);
    if (s.ok()) return true;
    Logf(LogLevel::kError, "%s", s.message());
    *retry = true;
    return std::nullopt;
  }

  // Applies the strategy after child `index` exited; false: intensity exceeded.
  Task<bool> HandleChildExit(size_t index, ExitReason reason) {
    if (!NoteChildExit(index, reason)) co_return true;
    co_return co_await RestartGroupOnce(index);
  }

  // One attempt at restarting child `index`'s group; false: the intensity is exceeded. A child
  // that fails to start is tried again through the mailbox (TryAgainLater), as OTP does: a stop
  // request or the parent's exit that arrived meanwhile is handled first, so a child that fails
  // slowly (never reaching the intensity) cannot make the supervisor deaf for ever. The retry is
  // that child's own (OTP marks the child that failed, not the one that exited): it restarts
  // that child's group (rest_for_one: from it on).
  Task<bool> RestartGroupOnce(size_t index) {
    auto [first, last] = RestartGroup(index);
    // This attempt covers any retry pending in the group (one for an earlier member's exit):
    // it must not restart the group once more when it comes.
    for (size_t j = first; j < last; ++j) children_[j].restarting = false;
    if (!AddRestart()) co_return false;
    // Stop the others of the group in reverse start order, then start the group in order.
    // (The child that exited has no pid left: no coroutine to stop it.)
    for (size_t j = last; j-- > first;) {
      if (children_[j].pid.valid()) co_await StopOne(children_[j]);
    }
    // Temporary children never restart: stopped with their group, they go (OTP's
    // terminate_children).
    for (size_t j = last; j-- > first;) {
      if (j != index && children_[j].spec.restart == RestartType::kTemporary) {
        children_.erase(children_.begin() + static_cast<ptrdiff_t>(j));
        --last;
        if (j < index) --index;
      }
    }
    for (size_t j = first; j < last; ++j) {
      absl::Status s = co_await StartOne(children_[j]);
      if (!s.ok()) {
        Logf(LogLevel::kError, "%s", s.message());
        TryAgainLater(j);
        break;
      }
    }
    co_return true;
  }
  void TryAgainLater(size_t index) {
    children_[index].restarting = true;
    Send(self_.self(), TryAgainRestart{children_[index].spec.id});
  }
  // The restart intensity was exceeded: every child stops, and so does the supervisor.
  Task<ExitReason> GiveUp() {
    Logf(LogLevel::kError, "supervisor %s: reached max restart intensity (%d in %s)",
         self_.self().ToString(), flags_.intensity, absl::FormatDuration(flags_.period));
    co_await StopAll();
    co_return ExitReason::Shutdown();
  }

  Child* Find(const std::string& id) {
    for (Child& c : children_) {
      if (c.spec.id == id) return &c;
    }
    return nullptr;
  }

  // OTP's {error, restarting}: the supervisor itself is trying again (its group included).
  absl::Status Restarting(const std::string& what, const std::string& id) const {
    return absl::FailedPreconditionError(
        absl::StrCat(what, "(\"", id, "\"): supervisor ", self_.self().ToString(),
                     " is restarting it (a failed restart is tried again)"));
  }

  absl::Status NotFound(const std::string& what, const std::string& id) const {
    return absl::NotFoundError(absl::StrCat(what, "(\"", id, "\"): supervisor ",
                                            self_.self().ToString(), " has no such child"));
  }

  Task<SupReply> Handle(SupRequest& req) {
    SupReply reply;
    switch (req.kind) {
      case SupRequest::Kind::kStart: {
        ChildSpec& spec = *req.spec;
        if (Find(spec.id) != nullptr) {
          reply.status = absl::AlreadyExistsError(
              absl::StrCat("start_child(\"", spec.id, "\"): supervisor ", self_.self().ToString(),
                           " already has a child with this id"));
          break;
        }
        children_.push_back(Child{std::move(spec), Pid()});
        reply.status = co_await StartOne(children_.back());
        if (reply.status.ok()) {
          reply.pid = children_.back().pid;
        } else {
          children_.pop_back();
        }
        break;
      }
      case SupRequest::Kind::kTerminate: {
        Child* c = Find(req.id);
        if (c == nullptr) {
          reply.status = NotFound("terminate_child", req.id);
          break;
        }
        co_await StopOne(*c);
        c->restarting = false;  // Terminated: no restart is pending any more.
        if (c->spec.restart == RestartType::kTemporary) {
          children_.erase(children_.begin() + (c - children_.data()));
        }
        break;
      }
      case SupRequest::Kind::kDelete: {
        Child* c = Find(req.id);
        if (c == nullptr) {
          reply.status = NotFound("delete_child", req.id);
        } else if (c->restarting) {
          reply.status = Restarting("delete_child", req.id);
        } else if (c->pid.valid()) {
          reply.status = absl::FailedPreconditionError(
              absl::StrCat("delete_child(\"", req.id, "\"): child is running as ",
                           c->pid.ToString(), "; terminate it first"));
        } else {
          children_.erase(children_.begin() + (c - children_.data()));
        }
        break;
      }
      case SupRequest::Kind::kRestart: {
        Child* c = Find(req.id);
        if (c == nullptr) {
          reply.status = NotFound("restart_child", req.id);
        } else if (c->restarting) {
          reply.status = Restarting("restart_child", req.id);
        } else if (c->pid.valid()) {
          reply.status = absl::FailedPreconditionError(absl::StrCat(
              "restart_child(\"", req.id, "\"): child is running as ", c->pid.ToString()));
        } else {
          reply.status = co_await StartOne(*c);
          reply.pid = c->pid;
        }
        break;
      }
      case SupRequest::Kind::kWhich:
        for (const Child& c : children_) {
          reply.children.push_back(ChildInfo{c.spec.id, c.pid, c.spec.is_supervisor, c.restarting});
        }
        break;
      case SupRequest::Kind::kStop:  // Handled by Loop().
        break;
      case SupRequest::Kind::kCount:
        for (const Child& c : children_) {
          ++reply.counts.specs;
          if (c.pid.valid()) ++reply.counts.active;
          ++(c.spec.is_supervisor ? reply.counts.supervisors : reply.counts.workers);
        }
        break;
    }
    co_return reply;
  }

  Process& self_;
  SupervisorFlags flags_;
  Pid parent_;
  std::vector<Child> children_;
  std::deque<int64_t> restarts_;
};

Task<void> SupervisorBody(Process& self, SupervisorFlags flags, std::vector<ChildSpec> specs,
                          Pid parent, std::function<void(absl::Status)> ack) {
  self.set_trap_exit(true);
  Supervisor sup(self, flags, std::move(specs), parent);
  absl::Status init = co_await sup.Init();
  // The starter gets its own copy, not a second reference to our status: Debian's Abseil counts
  // references in code TSan cannot see, so a shared status freed on the other thread reads as a
  // race. The copy keeps the payloads (a child's error atom).
  ack(UnsharedCopy(init));
  if (!init.ok()) {
    // The starter gets the status; it is not also killed by our exit.
    if (parent.valid()) self.Unlink(parent);
    co_await self.Exit(ExitReason::Custom(std::string(init.message())));
  }
  ExitReason reason = co_await sup.Loop();
  co_await self.Exit(std::move(reason));
}

ProcessBody MakeSupervisorBody(SupervisorFlags flags, std::vector<ChildSpec> specs, Pid parent,
                               std::function<void(absl::Status)> ack) {
  return [flags, specs = std::move(specs), parent = std::move(parent), ack = std::move(ack)](
             Process& self) { return SupervisorBody(self, flags, specs, parent, ack); };
}

}  // namespace

ChildSpec WorkerChild(std::string id, ProcessBody body, RestartType restart,
                      absl::Duration shutdown) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.start = WorkerStart{std::move(body)};
  spec.restart = restart;
  spec.shutdown = shutdown;
  return spec;
}

ChildSpec SupervisorChild(std::string id, SupervisorFlags flags, std::vector<ChildSpec> children,
                          RestartType restart) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.start = [flags, children = std::move(children)](Process& sup) {
    return StartSupervisorLink(sup, flags, children);
  };
  spec.restart = restart;
  spec.shutdown = absl::InfiniteDuration();  // OTP's default for supervisor children.
  spec.is_supervisor = true;
  return spec;
}

absl::Status ValidateFlags(const SupervisorFlags& flags) {
  if (flags.intensity < 0 || flags.period <= absl::ZeroDuration() ||
      flags.period == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "supervisor flags: the restart intensity must be >= 0 and the period positive and finite "
        "(got ",
        flags.intensity, " in ", absl::FormatDuration(flags.period), ")"));
  }
  return absl::OkStatus();
}

namespace {

// Spawns a supervisor (linked to `starter` when `link`) and waits for its children to start, or
// for its exit: a supervisor killed before it acknowledges is an error, not a hang.
Task<absl::StatusOr<Pid>> StartFrom(Process& starter, SupervisorFlags flags,
                                    std::vector<ChildSpec> children, SpawnOptions options,
                                    bool link) {
  ETSMGR_CO_RETURN_IF_ERROR(ValidateFlags(flags));
  const uint64_t ref = starter.node().NextRef();
  Pid starter_pid = starter.self();
  ProcessBody body = MakeSupervisorBody(flags, std::move(children), link ? starter_pid : Pid(),
                                        [starter_pid, ref](absl::Status s) {
                                          Send(starter_pid, SupInitDone{ref, std::move(s)});
                                        });
  ETSMGR_CO_ASSIGN_OR_RETURN(Pid pid, link ? starter.SpawnLink(std::move(body), std::move(options))
                                           : starter.Spawn(std::move(body), std::move(options)));
  const uint64_t monitor = starter.Monitor(pid);
  std::optional<Message> m = co_await starter.ReceiveIf([ref, monitor](const Envelope& e) {
    if (const SupInitDone* d = e.As<SupInitDone>()) return d->ref == ref;
    const Down* down = e.As<Down>();
    return down != nullptr && down->ref == monitor;
  });
  if (const Down* down = m->As<Down>()) {
    co_return absl::AbortedError(absl::StrCat("supervisor ", pid.ToString(),
                                              " exited before it started its children (",
                                              down->reason.ToString(), ")"));
  }
  starter.Demonitor(monitor, /*flush=*/true);
  ETSMGR_CO_RETURN_IF_ERROR(m->As<SupInitDone>()->status);
  co_return pid;
}

}  // namespace

absl::StatusOr<Pid> StartSupervisor(Node& node, SupervisorFlags flags,
                                    std::vector<ChildSpec> children, SpawnOptions options) {
  return node.Run<absl::StatusOr<Pid>>(
      [flags, children = std::move(children),
       options = std::move(options)](Process& self) -> Task<absl::StatusOr<Pid>> {
        return StartFrom(self, flags, children, options, /*link=*/false);
      });
}

Task<absl::StatusOr<Pid>> StartSupervisor(Process& starter, SupervisorFlags flags,
                                          std::vector<ChildSpec> children, SpawnOptions options) {
  return StartFrom(starter, flags, std::move(children), std::move(options), /*link=*/false);
}

Task<absl::StatusOr<Pid>> StartSupervisorLink(Process& parent, SupervisorFlags flags,
                                              std::vector<ChildSpec> children,
                                              SpawnOptions options) {
  return StartFrom(parent, flags, std::move(children), std::move(options), /*link=*/true);
}

Task<absl::StatusOr<Pid>> StartChild(Process& self, Pid sup, ChildSpec spec,
                                     absl::Duration timeout) {
  std::string id = spec.id;
  ETSMGR_CO_ASSIGN_OR_RETURN(
      SupReply r,
      co_await Call<SupReply>(self, sup,
                              MakeRequest(SupRequest::Kind::kStart, std::move(id), std::move(spec)),
                              timeout));
  ETSMGR_CO_RETURN_IF_ERROR(r.status);
  co_return r.pid;
}

Task<absl::Status> TerminateChild(Process& self, Pid sup, std::string id, absl::Duration timeout) {
  absl::StatusOr<SupReply> r = co_await Call<SupReply>(
      self, sup, MakeRequest(SupRequest::Kind::kTerminate, std::move(id)), timeout);
  co_return r.ok() ? r->status : r.status();
}

Task<absl::Status> DeleteChild(Process& self, Pid sup, std::string id, absl::Duration timeout) {
  absl::StatusOr<SupReply> r = co_await Call<SupReply>(
      self, sup, MakeRequest(SupRequest::Kind::kDelete, std::move(id)), timeout);
  co_return r.ok() ? r->status : r.status();
}

Task<absl::StatusOr<Pid>> RestartChild(Process& self, Pid sup, std::string id,
                                       absl::Duration timeout) {
  ETSMGR_CO_ASSIGN_OR_RETURN(
      SupReply r, co_await Call<SupReply>(
                      self, sup, MakeRequest(SupRequest::Kind::kRestart, std::move(id)), timeout));
  ETSMGR_CO_RETURN_IF_ERROR(r.status);
  co_return r.pid;
}

Task<absl::StatusOr<std::vector<ChildInfo>>> WhichChildren(Process& self, Pid sup,
                                                           absl::Duration timeout) {
  ETSMGR_CO_ASSIGN_OR_RETURN(
      SupReply r,
      co_await Call<SupReply>(self, sup, MakeRequest(SupRequest::Kind::kWhich, ""), timeout));
  co_return std::move(r.children);
}

Task<absl::StatusOr<ChildCounts>> CountChildren(Process& self, Pid sup, absl::Duration timeout) {
  ETSMGR_CO_ASSIGN_OR_RETURN(
      SupReply r,
      co_await Call<SupReply>(self, sup, MakeRequest(SupRequest::Kind::kCount, ""), timeout));
  co_return r.counts;
}

Task<absl::Status> StopSupervisor(Process& self, Pid sup, absl::Duration timeout) {
  absl::StatusOr<SupReply> r =
      co_await Call<SupReply>(self, sup, MakeRequest(SupRequest::Kind::kStop, ""), timeout);
  if (!r.ok()) co_return r.status();
  co_await AwaitDown(self, sup);  // It stops its children, replies, and exits.
  co_return absl::OkStatus();
}

}  // namespace etsmgr
