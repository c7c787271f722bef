// Supervisor conformance, in the spirit of OTP's supervisor_SUITE.
#include "etsmgr/process/supervisor.h"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

struct Stop {};

// A shared event log the children write to (from several scheduler threads).
struct EventLog {
  std::mutex mu;
  std::vector<std::string> events;
  std::map<std::string, int> bodies;  // Bodies of each child that began to run.
  void Add(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
  }
  int Bodies(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    return bodies[name];
  }
  void BodyBegan(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    ++bodies[name];
  }
  std::string Joined() {
    std::lock_guard<std::mutex> lock(mu);
    return absl::StrJoin(events, " ");
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu);
    events.clear();
  }
};

struct Marker {
  Marker(std::shared_ptr<EventLog> l, std::string n) : log(std::move(l)), name(std::move(n)) {
    log->BodyBegan(name);
  }
  std::shared_ptr<EventLog> log;
  std::string name;
  ~Marker() { log->Add("stop:" + name); }
};

// A child spec whose start function logs (so the log shows the supervisor's start order) and
// whose process logs its stop by RAII; Stop makes it exit normally.
ChildSpec Logged(std::shared_ptr<EventLog> log, std::string name,
                 RestartType restart = RestartType::kPermanent) {
  ChildSpec spec = WorkerChild(
      name,
      [log, name](Process& self) -> Task<void> {
        Marker m{log, name};
        co_await self.Receive<Stop>();
      },
      restart);
  auto spawn = std::move(spec.start);
  // The start returns once the child's body runs (its Marker is made), as a proc_lib start
  // waits for its child's init: a child stopped before it ever ran would log no stop.
  spec.start = [log, name, spawn](Process& sup) -> Task<absl::StatusOr<Pid>> {
    log->Add("start:" + name);
    const int before = log->Bodies(name);
    absl::StatusOr<Pid> pid = co_await spawn(sup);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (pid.ok() && pid->alive() && log->Bodies(name) == before && absl::Now() < deadline) {
      co_await sup.Sleep(absl::Milliseconds(1));
    }
    co_return pid;
  };
  return spec;
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 2}).value(); }

  std::vector<ChildSpec> ThreeChildren(RestartType restart = RestartType::kPermanent) {
    return {Logged(log_, "a", restart), Logged(log_, "b", restart), Logged(log_, "c", restart)};
  }

  // Runs `body` in a fresh process until it returns (it asserts in place).
  void InProcess(std::function<Task<void>(Process&)> body) {
    RunInProcess(*node_, std::move(body));
  }

  std::unique_ptr<Node> node_;
  std::shared_ptr<EventLog> log_ = std::make_shared<EventLog>();
};

Task<Pid> ChildPid(Process& self, const Pid& sup, const std::string& id) {
  absl::StatusOr<std::vector<ChildInfo>> children = co_await WhichChildren(self, sup);
  for (const ChildInfo& c : *children) {
    if (c.id == id) co_return c.pid;
  }
  co_return Pid();
}

// Waits until child `id`'s pid in which_children is no longer `old` (the supervisor handled its
// exit: restarted it, or left it undefined, or dropped its spec: Pid()); `old` after 10 s.
Task<Pid> AwaitChildPidChange(Process& self, const Pid& sup, const std::string& id, Pid old) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    Pid now = co_await ChildPid(self, sup, id);
    if (now != old) co_return now;
    co_await self.Sleep(absl::Milliseconds(1));
  }
  co_return old;
}

// Kills child `id` and waits until the supervisor runs a new one.
Task<Pid> KillAndAwaitRestart(Process& self, const Pid& sup, const std::string& id) {
  Pid old = co_await ChildPid(self, sup, id);
  uint64_t ref = self.Monitor(old);
  SendExit(old, ExitReason::Kill());
  co_await self.ReceiveIf(
      [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    Pid now = co_await ChildPid(self, sup, id);
    if (now.valid() && now != old) co_return now;
    co_await self.Sleep(absl::Milliseconds(1));
  }
  co_return Pid();
}

TEST_F(SupervisorTest, StartsInOrderAndStopsInReverse) {
  Pid sup = StartSupervisor(*node_, {}, ThreeChildren()).value();
  EXPECT_EQ(log_->Joined(), "start:a start:b start:c");
  log_->Clear();
  InProcess([sup](Process& self) -> Task<void> {
    // An exit signal from a non-parent is not a stop request (OTP)... The WhichChildren
    // round trip proves the supervisor took the signal (sent first, on the same queue) and
    // is still serving.
    SendExit(sup, ExitReason::Shutdown());
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    EXPECT_TRUE(which.ok()) << "which_children after a shutdown signal from a non-parent: "
                            << which.status();
    if (which.ok()) {
      EXPECT_EQ(which->size(), 3u) << "children after that signal";
    }
    EXPECT_TRUE(sup.alive()) << "the supervisor survives a shutdown signal from a non-parent";
    // ...StopSupervisor is.
    absl::Status stopped = co_await StopSupervisor(self, sup);
    EXPECT_TRUE(stopped.ok()) << "StopSupervisor: " << stopped;
    EXPECT_FALSE(sup.alive()) << "the supervisor is gone after StopSupervisor";
  });
  EXPECT_EQ(log_->Joined(), "stop:c stop:b stop:a");
}

TEST_F(SupervisorTest, OneForOneRestartsOnlyTheChild) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kOneForOne, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  InProcess([sup](Process& self) -> Task<void> {
    Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
    EXPECT_TRUE(new_b.valid()) << "b restarted within 10 s";
  });
  EXPECT_EQ(log_->Joined(), "stop:b start:b");
}

// WorkerChild as it is (the tests above wrap its start function to log): the supervisor spawns
// the body itself and restarts a lone worker without a coroutine -- one_for_one, and rest_for_one
// when the exited child is the last -- with the same rules: a new pid each time, transient not
// restarted after a normal exit, temporary removed, too many restarts stop the supervisor.
TEST_F(SupervisorTest, PlainWorkersRestartByTheSameRules) {
  auto body = [](Process& self) -> Task<void> { co_await self.Receive<Stop>(); };
  InProcess([body](Process& self) -> Task<void> {
    self.set_trap_exit(true);  // Linked to supervisors that exit with reason shutdown.
    for (RestartStrategy strategy : {RestartStrategy::kOneForOne, RestartStrategy::kRestForOne}) {
      // Not SCOPED_TRACE: its trace stack is per thread, and this frame may resume on another.
      const char* name = strategy == RestartStrategy::kOneForOne ? "one_for_one" : "rest_for_one";
      std::vector<ChildSpec> children = {
          WorkerChild("first", body), WorkerChild("transient", body, RestartType::kTransient),
          WorkerChild("temporary", body, RestartType::kTemporary), WorkerChild("last", body)};
      SupervisorFlags flags{.strategy = strategy, .intensity = 3, .period = absl::Seconds(60)};
      absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
      CO_ASSERT_OK(sup, absl::StrCat(name, ": start the supervisor"));
      Pid first = co_await ChildPid(self, *sup, "first");
      Pid last = co_await ChildPid(self, *sup, "last");
      Pid last2 = co_await KillAndAwaitRestart(self, *sup, "last");
      // A transient child's normal exit and a temporary child's crash: no restart.
      Pid transient = co_await ChildPid(self, *sup, "transient");
      Pid temporary = co_await ChildPid(self, *sup, "temporary");
      uint64_t t_ref = self.Monitor(transient);
      uint64_t tmp_ref = self.Monitor(temporary);
      Send(transient, Stop{});
      SendExit(temporary, ExitReason::Kill());
      for (uint64_t ref : {t_ref, tmp_ref}) {
        co_await self.ReceiveIf(
            [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
      }
      // The supervisor handles its signals in order: once WhichChildren answers, both exits
      // were handled.
      absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, *sup);
      CO_ASSERT_OK(which, absl::StrCat(name, ": which_children"));
      std::vector<std::string> listed;
      for (const ChildInfo& c : *which) {
        listed.push_back(absl::StrCat(c.id, c.pid.valid() ? "+" : "-"));
      }
      Pid first2 = co_await ChildPid(self, *sup, "first");
      // Two more restarts are within the intensity (3); the third one is not.
      uint64_t sup_ref = self.Monitor(*sup);
      co_await KillAndAwaitRestart(self, *sup, "last");
      co_await KillAndAwaitRestart(self, *sup, "last");
      SendExit(co_await ChildPid(self, *sup, "last"), ExitReason::Kill());
      std::optional<Message> down = co_await self.ReceiveIf(
          [sup_ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == sup_ref; },
          absl::Now() + absl::Seconds(10));
      EXPECT_TRUE(last2.valid() && last2 != last)
          << name << ": the killed last child runs as a new pid";
      EXPECT_EQ(first2, first) << name << ": the first child was not restarted";
      EXPECT_EQ(absl::StrJoin(listed, ","), "first+,transient-,last+")
          << name << ": children after a transient's normal exit and a temporary's crash "
          << "(+: running)";
      EXPECT_EQ(down ? down->As<Down>()->reason.ToString() : "alive", "shutdown")
          << name << ": the supervisor after a restart beyond its intensity";
    }
  });
}

TEST_F(SupervisorTest, OneForAllRestartsEveryChild) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kOneForAll, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  InProcess([sup](Process& self) -> Task<void> {
    Pid old_a = co_await ChildPid(self, sup, "a");
    Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
    // Wait until c (the last started) runs again too.
    Pid new_a = co_await ChildPid(self, sup, "a");
    EXPECT_TRUE(new_b.valid()) << "b restarted within 10 s";
    EXPECT_NE(new_a, old_a) << "a was restarted with b";
  });
  // b died (killed), then the others stop in reverse order, then all start in order.
  EXPECT_EQ(log_->Joined(), "stop:b stop:c stop:a start:a start:b start:c");
}

TEST_F(SupervisorTest, RestForOneRestartsTheChildAndLaterOnes) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kRestForOne, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  InProcess([sup](Process& self) -> Task<void> {
    Pid old_a = co_await ChildPid(self, sup, "a");
    Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
    Pid a = co_await ChildPid(self, sup, "a");
    EXPECT_TRUE(new_b.valid()) << "b restarted within 10 s";
    EXPECT_EQ(a, old_a) << "a (before b) was not restarted";
  });
  EXPECT_EQ(log_->Joined(), "stop:b stop:c start:b start:c");
}

TEST_F(SupervisorTest, IntensityExceededStopsTheSupervisor) {
  Pid sup =
      StartSupervisor(
          *node_,
          {.strategy = RestartStrategy::kOneForOne, .intensity = 2, .period = absl::Seconds(10)},
          ThreeChildren())
          .value();
  InProcess([sup](Process& self) -> Task<void> {
    uint64_t ref = self.Monitor(sup);
    for (int i = 0; i < 2; ++i) co_await KillAndAwaitRestart(self, sup, "a");
    Pid a = co_await ChildPid(self, sup, "a");
    SendExit(a, ExitReason::Kill());  // Third restart within the period: too many.
    std::optional<Message> m = co_await self.ReceiveIf(
        [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
        absl::Now() + absl::Seconds(10));
    EXPECT_EQ(m ? m->As<Down>()->reason.ToString() : "supervisor still alive", "shutdown")
        << "the supervisor's exit reason after a third restart within the period";
  });
  EXPECT_FALSE(sup.alive());
}

TEST_F(SupervisorTest, SubSecondPeriodForgetsOldRestarts) {
  Pid sup = StartSupervisor(*node_,
                            {.strategy = RestartStrategy::kOneForOne,
                             .intensity = 1,
                             .period = absl::Milliseconds(50)},
                            ThreeChildren())
                .value();
  InProcess([sup](Process& self) -> Task<void> {
    for (int i = 0; i < 3; ++i) {
      co_await KillAndAwaitRestart(self, sup, "a");
      co_await self.Sleep(absl::Milliseconds(60));  // Older than the period: forgotten.
    }
    EXPECT_TRUE(sup.alive()) << "restarts further apart than the period never add up";
  });
}

TEST_F(SupervisorTest, TransientAndTemporaryRules) {
  std::vector<ChildSpec> children = {
      Logged(log_, "transient", RestartType::kTransient),
      Logged(log_, "temporary", RestartType::kTemporary),
  };
  Pid sup = StartSupervisor(*node_, {.intensity = 5}, children).value();
  InProcess([sup](Process& self) -> Task<void> {
    // Transient: a normal exit is not restarted...
    Pid t = co_await ChildPid(self, sup, "transient");
    uint64_t ref = self.Monitor(t);
    Send(t, Stop{});
    co_await self.ReceiveIf(
        [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
    // The supervisor restarts a child in the step that handles its exit: its first answer that
    // no longer names `t` tells.
    Pid after_normal = co_await AwaitChildPidChange(self, sup, "transient", t);
    // ...a crash is (restart_child brings it back first).
    absl::StatusOr<Pid> again = co_await RestartChild(self, sup, "transient");
    Pid restarted = co_await KillAndAwaitRestart(self, sup, "transient");
    // Temporary: never restarted, and its spec disappears.
    Pid tmp = co_await ChildPid(self, sup, "temporary");
    uint64_t ref2 = self.Monitor(tmp);
    SendExit(tmp, ExitReason::Kill());
    co_await self.ReceiveIf(
        [ref2](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref2; });
    co_await AwaitChildPidChange(self, sup, "temporary", tmp);
    absl::StatusOr<ChildCounts> counts = co_await CountChildren(self, sup);
    EXPECT_FALSE(after_normal.valid()) << "a transient child's normal exit: not restarted";
    EXPECT_TRUE(again.ok()) << "restart_child(transient): " << again.status();
    EXPECT_TRUE(restarted.valid()) << "a transient child's crash: restarted within 10 s";
    CO_ASSERT_OK(counts, "count_children");
    EXPECT_EQ(counts->specs, 1) << "specs: the temporary child's spec is gone";
    EXPECT_EQ(counts->active, 1) << "active: only the transient child runs";
  });
}

TEST_F(SupervisorTest, ShutdownTimeoutThenKill) {
  auto stubborn = [](Process& self) -> Task<void> {
    self.set_trap_exit(true);  // Ignores shutdown: receives it as a message and carries on.
    while (true) co_await self.Receive();
  };
  Pid sup = StartSupervisor(
                *node_, {},
                {WorkerChild("stubborn", stubborn, RestartType::kPermanent, absl::Milliseconds(50)),
                 WorkerChild("brutal", stubborn, RestartType::kPermanent, absl::ZeroDuration())})
                .value();
  InProcess([sup](Process& self) -> Task<void> {
    Pid s = co_await ChildPid(self, sup, "stubborn");
    Pid b = co_await ChildPid(self, sup, "brutal");
    uint64_t rs = self.Monitor(s);
    uint64_t rb = self.Monitor(b);
    absl::Time start = absl::Now();
    absl::Status st = co_await TerminateChild(self, sup, "stubborn");
    absl::Duration took = absl::Now() - start;
    absl::Status bt = co_await TerminateChild(self, sup, "brutal");
    Down d1 = co_await self.Receive<Down>();
    Down d2 = co_await self.Receive<Down>();
    std::string rs_reason = (d1.ref == rs ? d1 : d2).reason.ToString();
    std::string rb_reason = (d1.ref == rb ? d1 : d2).reason.ToString();
    EXPECT_TRUE(st.ok()) << "terminate_child(stubborn): " << st;
    EXPECT_TRUE(bt.ok()) << "terminate_child(brutal): " << bt;
    EXPECT_GE(took, absl::Milliseconds(50)) << "stubborn was given its 50 ms shutdown time";
    EXPECT_EQ(rs_reason, "killed") << "stubborn (ignores shutdown) is killed after its time";
    EXPECT_EQ(rb_reason, "killed") << "brutal (shutdown 0) is killed at once";
  });
}

TEST_F(SupervisorTest, NestedSupervisors) {
  std::vector<ChildSpec> inner = {Logged(log_, "w")};
  Pid outer =
      StartSupervisor(*node_, {.intensity = 5},
                      {SupervisorChild("inner", {.intensity = 5}, inner), Logged(log_, "x")})
          .value();
  EXPECT_EQ(log_->Joined(), "start:w start:x");
  log_->Clear();
  InProcess([outer](Process& self) -> Task<void> {
    Pid inner_sup = co_await ChildPid(self, outer, "inner");
    // A worker of the inner supervisor is restarted by the inner one.
    Pid w2 = co_await KillAndAwaitRestart(self, inner_sup, "w");
    Pid same_inner = co_await ChildPid(self, outer, "inner");
    // Killing the inner supervisor: the outer restarts it (and so its worker).
    Pid inner2 = co_await KillAndAwaitRestart(self, outer, "inner");
    absl::StatusOr<ChildCounts> counts = co_await CountChildren(self, outer);
    EXPECT_TRUE(w2.valid()) << "the inner supervisor restarted its worker";
    EXPECT_EQ(same_inner, inner_sup) << "the outer supervisor did not restart the inner one";
    EXPECT_TRUE(inner2.valid()) << "the outer supervisor restarted the killed inner one";
    CO_ASSERT_OK(counts, "count_children(outer)");
    EXPECT_EQ(counts->supervisors, 1) << "supervisor children of the outer one";
    EXPECT_EQ(counts->workers, 1) << "worker children of the outer one";
  });
}

TEST_F(SupervisorTest, DynamicChildrenApi) {
  Pid sup = StartSupervisor(*node_, {}, {}).value();
  InProcess([sup, log = log_](Process& self) -> Task<void> {
    absl::StatusOr<Pid> p = co_await StartChild(self, sup, Logged(log, "d"));
    EXPECT_TRUE(p.ok()) << "start_child(d): " << p.status();
    absl::StatusOr<Pid> dup = co_await StartChild(self, sup, Logged(log, "d"));
    EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists)
        << "start_child(d) again: " << dup.status();
    absl::Status del_running = co_await DeleteChild(self, sup, "d");
    EXPECT_EQ(del_running.code(), absl::StatusCode::kFailedPrecondition)
        << "delete_child of a running child: " << del_running;
    absl::Status term = co_await TerminateChild(self, sup, "d");
    EXPECT_TRUE(term.ok()) << "terminate_child(d): " << term;
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children");
    CO_ASSERT_TRUE(which->size() == 1, "a terminated child stays listed");
    EXPECT_FALSE(which->front().pid.valid()) << "a terminated child is listed as not running";
    absl::StatusOr<Pid> re = co_await RestartChild(self, sup, "d");
    EXPECT_TRUE(re.ok()) << "restart_child(d): " << re.status();
    absl::Status stopped = co_await TerminateChild(self, sup, "d");
    EXPECT_TRUE(stopped.ok()) << "terminate_child(d) after the restart: " << stopped;
    absl::Status del = co_await DeleteChild(self, sup, "d");
    EXPECT_TRUE(del.ok()) << "delete_child(d): " << del;
    absl::Status missing = co_await TerminateChild(self, sup, "d");
    EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound)
        << "terminate_child of a deleted child: " << missing;
  });
}

struct SupervisorIs {
  Pid pid;
};

// StopSupervisor ends a supervisor with reason normal, so its linked parent (not trapping exits)
// lives on; exceeding the restart intensity ends it with shutdown, which takes that parent down.
TEST_F(SupervisorTest, StopSupervisorSparesALinkedParentButIntensityDoesNot) {
  InProcess([log = log_](Process& self) -> Task<void> {
    std::vector<ChildSpec> children;
    children.push_back(Logged(log, "a"));
    absl::StatusOr<Pid> sup =
        co_await StartSupervisorLink(self, SupervisorFlags{}, std::move(children));
    CO_ASSERT_OK(sup, "start a linked supervisor");
    absl::Status stopped = co_await StopSupervisor(self, *sup);
    EXPECT_TRUE(stopped.ok()) << "StopSupervisor: " << stopped;
    // Still alive here (not trapping exits): the supervisor exited normally. (Its link signal
    // came before the Down that StopSupervisor waited for, so it has been taken.)
    EXPECT_TRUE(self.self().alive()) << "a parent lives on after StopSupervisor";

    // A parent whose linked supervisor allows no restart: one child exit is too many.
    Pid probe = self.self();
    Pid parent = self.Spawn([log, probe](Process& p) -> Task<void> {
                       std::vector<ChildSpec> one;
                       one.push_back(Logged(log, "b"));
                       absl::StatusOr<Pid> strict = co_await StartSupervisorLink(
                           p, SupervisorFlags{.intensity = 0}, std::move(one));
                       if (!strict.ok()) co_return;
                       Pid b = co_await ChildPid(p, *strict, "b");
                       Send(probe, SupervisorIs{*strict});
                       SendExit(b, ExitReason::Kill());
                       co_await p.Receive<Stop>();  // Never: the supervisor's exit ends us.
                     })
                     .value();
    uint64_t ref = self.Monitor(parent);
    std::optional<SupervisorIs> strict = co_await self.ReceiveFor<SupervisorIs>(absl::Seconds(10));
    std::optional<Message> down = co_await self.ReceiveIf(
        [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
        absl::Now() + absl::Seconds(10));
    EXPECT_EQ(down ? down->As<Down>()->reason.ToString() : std::string("alive"), "shutdown")
        << "the parent of a supervisor beyond its intensity exits with its reason";
    EXPECT_TRUE(strict.has_value()) << "the strict supervisor started";
    EXPECT_FALSE(strict && strict->pid.alive()) << "the strict supervisor is gone";
  });
}

TEST_F(SupervisorTest, ChildFailingToStartIsReported) {
  ChildSpec bad;
  bad.id = "bad";
  bad.start = [](Process&) -> Task<absl::StatusOr<Pid>> {
    co_return absl::InternalError("no database");
  };
  // "a" starts (spawned) before "bad" fails; its Pid is kept to see that it is stopped again.
  auto a = std::make_shared<Pid>();
  ChildSpec first = Logged(log_, "a");
  auto start_a = std::move(first.start);
  first.start = [a, start_a](Process& sup) -> Task<absl::StatusOr<Pid>> {
    absl::StatusOr<Pid> pid = co_await start_a(sup);
    if (pid.ok()) *a = *pid;
    co_return pid;
  };
  absl::StatusOr<Pid> sup = StartSupervisor(*node_, {}, {first, bad});
  ASSERT_FALSE(sup.ok());
  EXPECT_NE(std::string(sup.status().message()).find("child \"bad\" failed to start: no database"),
            std::string::npos)
      << sup.status();
  // The child started before the failure was stopped again (it may have been stopped before its
  // body ever ran: then it logged no "stop").
  ASSERT_TRUE(a->valid());
  AwaitDeath(*node_, *a);
  EXPECT_TRUE(log_->Joined() == "start:a stop:a" || log_->Joined() == "start:a") << log_->Joined();
}

// A child spec with no start function, or whose start throws, fails to start (an error to the
// caller); the supervisor and its other children live on. Before, the exception ended the
// supervisor (and took its children down): any process could stop etsmgr_sup with a
// StartChild of an empty spec.
TEST_F(SupervisorTest, AStartThatIsMissingOrThrowsFailsWithoutEndingTheSupervisor) {
  Pid sup = StartSupervisor(*node_, {}, {Logged(log_, "a")}).value();
  InProcess([sup](Process& self) -> Task<void> {
    ChildSpec empty;
    empty.id = "empty";
    absl::StatusOr<Pid> none = co_await StartChild(self, sup, empty);
    EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument) << none.status();
    EXPECT_NE(none.status().message().find("no start function"), std::string::npos)
        << none.status();
    ChildSpec throws;
    throws.id = "throws";
    throws.start = [](Process&) -> Task<absl::StatusOr<Pid>> {
      throw std::runtime_error("no config file");
      co_return absl::InternalError("unreached");
    };
    absl::StatusOr<Pid> threw = co_await StartChild(self, sup, throws);
    EXPECT_FALSE(threw.ok());
    EXPECT_NE(threw.status().message().find("its start threw: no config file"), std::string::npos)
        << threw.status();
    ChildSpec throws_at_once;  // Throws before it makes a task.
    throws_at_once.id = "throws_at_once";
    throws_at_once.start = [](Process&) -> Task<absl::StatusOr<Pid>> {
      throw std::runtime_error("at once");
    };
    absl::StatusOr<Pid> at_once = co_await StartChild(self, sup, throws_at_once);
    EXPECT_FALSE(at_once.ok()) << "a start that threw at once";
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children: the supervisor is alive");
    EXPECT_EQ(which->size(), 1u) << "only a, alive";
    if (which->size() == 1) {
      EXPECT_TRUE(which->front().pid.valid());
    }
  });
}

// A child whose restarts keep failing slowly (never reaching the intensity) is retried through
// the supervisor's mailbox, as OTP does: a stop request is handled between two attempts. Before,
// the supervisor retried in a loop that never read its mailbox: StopSupervisor (and the parent's
// exit) waited for ever.
TEST_F(SupervisorTest, AStopIsHandledBetweenFailingRestartAttempts) {
  struct Never {};
  struct Retrying {};
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto tester = std::make_shared<Pid>();  // Set before the first restart (no race: see below).
  ChildSpec flaky;
  flaky.id = "flaky";
  flaky.start = [calls, tester](Process& sup) -> Task<absl::StatusOr<Pid>> {
    const int call = ++*calls;
    if (call == 1) {
      co_return sup.SpawnLink([](Process& p) -> Task<void> { co_await p.Receive<Never>(); });
    }
    if (call == 3) Send(*tester, Retrying{});  // The first retry after a failed restart.
    co_await sup.Sleep(absl::Milliseconds(100));
    co_return absl::UnavailableError("the database is not up yet");
  };
  // 20 restarts in 1 s: attempts of 100 ms each never exceed it (they went on for ever).
  SupervisorFlags flags{
      .strategy = RestartStrategy::kOneForOne, .intensity = 20, .period = absl::Seconds(1)};
  Pid sup = StartSupervisor(*node_, flags, {flaky}).value();
  InProcess([sup, tester](Process& self) -> Task<void> {
    *tester = self.self();  // Read by the supervisor only after the kill below.
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children");
    CO_ASSERT_TRUE(which->size() == 1 && which->front().pid.valid(), "flaky runs");
    SendExit(which->front().pid, ExitReason::Kill());
    std::optional<Retrying> retrying = co_await self.ReceiveFor<Retrying>(absl::Seconds(10));
    CO_ASSERT_TRUE(retrying.has_value(), "the failed restart was tried again");
    absl::Status stopped = co_await StopSupervisor(self, sup, absl::Seconds(10));
    EXPECT_TRUE(stopped.ok()) << "stop while a restart keeps failing: " << stopped;
  });
  AwaitDeath(*node_, sup);
}

// one_for_all [a, b, c]: b exits; its group's restart kills a and then fails at b, so a retry
// for b waits in the mailbox behind a's exit. a's exit restarts the whole group (b included):
// the retry then has nothing left to do. Before, it restarted the healthy group once more,
// counting a third restart: past this supervisor's intensity of 2, it gave up and stopped all.
TEST_F(SupervisorTest, ARetryAGroupRestartAlreadyCoveredDoesNothing) {
  struct Never {};
  struct Settled {};
  auto a_pid = std::make_shared<Pid>();
  auto b_calls = std::make_shared<std::atomic<int>>(0);
  auto tester = std::make_shared<Pid>();  // Set before b's exit; read by b's later starts.
  auto worker = [](Process& sup) {
    return sup.SpawnLink([](Process& p) -> Task<void> { co_await p.Receive<Never>(); });
  };
  ChildSpec a{.id = "a"};
  a.start = [a_pid, worker](Process& sup) -> Task<absl::StatusOr<Pid>> {
    absl::StatusOr<Pid> pid = worker(sup);
    if (pid.ok()) *a_pid = *pid;
    co_return pid;
  };
  ChildSpec b{.id = "b"};
  b.start = [a_pid, b_calls, tester, worker](Process& sup) -> Task<absl::StatusOr<Pid>> {
    const int call = ++*b_calls;
    if (call == 2) {  // The group's first restart: a dies, then b fails.
      SendExit(*a_pid, ExitReason::Kill());
      co_await AwaitDown(sup, *a_pid);  // a's exit is in the supervisor's mailbox now.
      co_return absl::UnavailableError("b's database is restarting");
    }
    if (call == 3) Send(*tester, Settled{});  // a's group restart.
    co_return worker(sup);
  };
  ChildSpec c{.id = "c"};
  c.start = [worker](Process& sup) -> Task<absl::StatusOr<Pid>> { co_return worker(sup); };
  SupervisorFlags flags{
      .strategy = RestartStrategy::kOneForAll, .intensity = 2, .period = absl::Seconds(60)};
  Pid sup = StartSupervisor(*node_, flags, {a, b, c}).value();
  InProcess([sup, b_calls, tester](Process& self) -> Task<void> {
    *tester = self.self();
    SendExit(co_await ChildPid(self, sup, "b"), ExitReason::Kill());
    // b has started three times (init, the failed restart, a's group restart); the pending
    // retry, if it acts, comes before the next call in the supervisor's mailbox.
    CO_ASSERT_TRUE((co_await self.ReceiveFor<Settled>(absl::Seconds(10))).has_value(),
                   "a's group restart");
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children: the supervisor lives");
    EXPECT_EQ(b_calls->load(), 3);
    for (const ChildInfo& child : *which) EXPECT_TRUE(child.pid.valid()) << child.id;
    absl::StatusOr<std::vector<ChildInfo>> again = co_await WhichChildren(self, sup);
    EXPECT_TRUE(again.ok()) << "the supervisor gave up: " << again.status();
  });
}

// A child whose start fails (after 20 ms, in its supervisor) while *fail is set; a start that
// works sends FlakyBack to *tester once that is set.
struct FlakyBack {};
ChildSpec FlakyChild(std::string id, std::shared_ptr<std::atomic<bool>> fail,
                     std::shared_ptr<Pid> tester) {
  ChildSpec spec{.id = std::move(id)};
  spec.start = [fail, tester](Process& sup) -> Task<absl::StatusOr<Pid>> {
    if (fail->load()) {
      co_await sup.Sleep(absl::Milliseconds(20));
      co_return absl::UnavailableError("not yet");
    }
    if (tester->valid()) Send(*tester, FlakyBack{});
    co_return sup.SpawnLink([](Process& p) -> Task<void> { co_await p.Receive<Stop>(); });
  };
  return spec;
}

// A child whose group restart failed is being restarted by its supervisor: restart_child and
// delete_child of it are refused (OTP's {error, restarting}); they restarted it alone (and the
// pending retry, then dropped, left the rest of its group down) or deleted it.
TEST_F(SupervisorTest, RestartOrDeleteOfAChildBeingRestartedIsRefused) {
  auto fail = std::make_shared<std::atomic<bool>>(false);
  auto tester = std::make_shared<Pid>();
  ChildSpec flaky = FlakyChild("flaky", fail, tester);
  SupervisorFlags flags{
      .strategy = RestartStrategy::kOneForOne, .intensity = 1000, .period = absl::Seconds(60)};
  Pid sup = StartSupervisor(*node_, flags, {flaky}).value();
  InProcess([sup, fail, tester](Process& self) -> Task<void> {
    *tester = self.self();  // Read by a start only once `fail` is false again (ordered by it).
    fail->store(true);
    const Pid child = co_await ChildPid(self, sup, "flaky");
    SendExit(child, ExitReason::Kill());
    // Its exit reached the supervisor's mailbox as it died (before this Down reached us): the
    // calls below come after it, while the failed restart is being tried again.
    co_await AwaitDown(self, child);
    absl::StatusOr<Pid> restarted = co_await RestartChild(self, sup, "flaky");
    EXPECT_EQ(restarted.status().code(), absl::StatusCode::kFailedPrecondition)
        << restarted.status();
    EXPECT_NE(restarted.status().message().find("restarting"), std::string::npos)
        << restarted.status();
    absl::Status deleted = co_await DeleteChild(self, sup, "flaky");
    EXPECT_EQ(deleted.code(), absl::StatusCode::kFailedPrecondition) << deleted;
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children");
    CO_ASSERT_TRUE(which->size() == 1, "flaky is listed");
    EXPECT_TRUE(which->front().restarting) << "which_children says it is being restarted";
    EXPECT_FALSE(which->front().pid.valid());
    fail->store(false);  // The supervisor's own retry brings it back.
    EXPECT_TRUE((co_await self.ReceiveFor<FlakyBack>(absl::Seconds(10))).has_value())
        << "the supervisor's retry did not restart it";
    CO_ASSERT_OK(co_await StopSupervisor(self, sup, absl::Seconds(10)), "stop");
  });
}

// rest_for_one [a, b]: a exits, its restart starts a and fails at b. The retry is b's (OTP marks
// the child that failed to start): a terminate_child of a in between does not drop it, and b
// comes back. It was a's: the terminate cleared it, and b, permanent, stayed down for good.
TEST_F(SupervisorTest, TheRetryBelongsToTheChildThatFailedToStart) {
  auto fail = std::make_shared<std::atomic<bool>>(false);
  auto tester = std::make_shared<Pid>();
  // a's start never fails and tells nobody (its own flag and tester stay unset); b's fails
  // while `fail` is set, and b's coming back is what the test waits for.
  ChildSpec a =
      FlakyChild("a", std::make_shared<std::atomic<bool>>(false), std::make_shared<Pid>());
  ChildSpec b = FlakyChild("b", fail, tester);
  SupervisorFlags flags{
      .strategy = RestartStrategy::kRestForOne, .intensity = 1000, .period = absl::Seconds(10)};
  Pid sup = StartSupervisor(*node_, flags, {a, b}).value();
  InProcess([sup, fail, tester](Process& self) -> Task<void> {
    *tester = self.self();  // Read by b's start only once `fail` is false again.
    fail->store(true);
    const Pid a_pid = co_await ChildPid(self, sup, "a");
    SendExit(a_pid, ExitReason::Kill());
    co_await AwaitDown(self, a_pid);  // Its exit is in the supervisor's mailbox before the call.
    absl::Status terminated = co_await TerminateChild(self, sup, "a");
    EXPECT_TRUE(terminated.ok()) << terminated;
    fail->store(false);
    EXPECT_TRUE((co_await self.ReceiveFor<FlakyBack>(absl::Seconds(10))).has_value())
        << "b was never restarted";
    CO_ASSERT_OK(co_await StopSupervisor(self, sup, absl::Seconds(10)), "stop");
  });
}

// A temporary child is never restarted, also not as part of its group: one_for_all [p, t] with t
// temporary; p exits, p comes back and t goes (OTP's terminate_children). t was started again.
TEST_F(SupervisorTest, ATemporaryChildLeavesItsGroupsRestart) {
  struct Never {};
  struct Restarted {};
  auto tester = std::make_shared<Pid>();
  auto p_calls = std::make_shared<std::atomic<int>>(0);
  ChildSpec p{.id = "p"};
  p.start = [tester, p_calls](Process& sup) -> Task<absl::StatusOr<Pid>> {
    if (++*p_calls == 2) Send(*tester, Restarted{});
    co_return sup.SpawnLink([](Process& c) -> Task<void> { co_await c.Receive<Never>(); });
  };
  ChildSpec t = WorkerChild(
      "t", [](Process& c) -> Task<void> { co_await c.Receive<Never>(); }, RestartType::kTemporary);
  SupervisorFlags flags{
      .strategy = RestartStrategy::kOneForAll, .intensity = 10, .period = absl::Seconds(10)};
  Pid sup = StartSupervisor(*node_, flags, {p, t}).value();
  InProcess([sup, tester](Process& self) -> Task<void> {
    *tester = self.self();  // Read by p's second start, after the kill below.
    SendExit(co_await ChildPid(self, sup, "p"), ExitReason::Kill());
    CO_ASSERT_TRUE((co_await self.ReceiveFor<Restarted>(absl::Seconds(10))).has_value(),
                   "p restarted");
    absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
    CO_ASSERT_OK(which, "which_children");
    EXPECT_EQ(which->size(), 1u) << "the temporary child stays gone";
    if (which->size() == 1) {
      EXPECT_EQ(which->front().id, "p");
      EXPECT_TRUE(which->front().pid.valid());
    }
  });
}

// A process that calls itself gets InvalidArgument at once (OTP: calling_self); it waited for
// ever (StopSupervisor's timeout is infinite by default).
TEST_F(SupervisorTest, AProcessCallingItselfIsRefused) {
  InProcess([](Process& self) -> Task<void> {
    absl::Status stop = co_await StopSupervisor(self, self.self());
    EXPECT_EQ(stop.code(), absl::StatusCode::kInvalidArgument) << stop;
    EXPECT_NE(stop.message().find("calling itself"), std::string::npos) << stop;
  });
}

}  // namespace
}  // namespace etsmgr
