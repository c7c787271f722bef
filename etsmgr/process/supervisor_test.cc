// Supervisor conformance, in the spirit of OTP's supervisor_SUITE.
#include "etsmgr/process/supervisor.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etsmgr/process/internal/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

struct Stop {};

// A shared event log the children write to (from several scheduler threads).
struct EventLog {
  std::mutex mu;
  std::vector<std::string> events;
  void Add(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
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
  spec.start = [log, name, spawn](Process& sup) -> Task<absl::StatusOr<Pid>> {
    log->Add("start:" + name);
    co_return co_await spawn(sup);
  };
  return spec;
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override { node_ = Node::Create({.schedulers = 2}).value(); }

  std::vector<ChildSpec> ThreeChildren(RestartType restart = RestartType::kPermanent) {
    return {Logged(log_, "a", restart), Logged(log_, "b", restart), Logged(log_, "c", restart)};
  }

  // Runs `body` in a probe process and returns what it reports.
  std::string Probe(ProbeBody body) { return RunProbe(*node_, std::move(body)); }

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
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        // An exit signal from a non-parent is not a stop request (OTP)... The WhichChildren
        // round trip proves the supervisor took the signal (sent first, on the same queue) and
        // is still serving.
        SendExit(sup, ExitReason::Shutdown());
        absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
        bool survived = which.ok() && which->size() == 3 && sup.alive();
        // ...StopSupervisor is.
        absl::Status stopped = co_await StopSupervisor(self, sup);
        report(absl::StrCat(survived, stopped.ok(), sup.alive()));
      });
  EXPECT_EQ(got, "110");
  EXPECT_EQ(log_->Joined(), "stop:c stop:b stop:a");
}

TEST_F(SupervisorTest, OneForOneRestartsOnlyTheChild) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kOneForOne, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
        report(new_b.valid() ? "restarted" : "not restarted");
      });
  EXPECT_EQ(got, "restarted");
  EXPECT_EQ(log_->Joined(), "stop:b start:b");
}

// WorkerChild as it is (the tests above wrap its start function to log): the supervisor spawns
// the body itself and restarts a lone worker without a coroutine -- one_for_one, and rest_for_one
// when the exited child is the last -- with the same rules: a new pid each time, transient not
// restarted after a normal exit, temporary removed, too many restarts stop the supervisor.
TEST_F(SupervisorTest, PlainWorkersRestartByTheSameRules) {
  auto body = [](Process& self) -> Task<void> { co_await self.Receive<Stop>(); };
  std::string got = Probe([body](Process& self,
                                 std::function<void(std::string)> report) -> Task<void> {
    self.set_trap_exit(true);  // Linked to supervisors that exit with reason shutdown.
    std::vector<std::string> out;
    for (RestartStrategy strategy : {RestartStrategy::kOneForOne, RestartStrategy::kRestForOne}) {
      std::vector<ChildSpec> children = {
          WorkerChild("first", body), WorkerChild("transient", body, RestartType::kTransient),
          WorkerChild("temporary", body, RestartType::kTemporary), WorkerChild("last", body)};
      SupervisorFlags flags{.strategy = strategy, .intensity = 3, .period = absl::Seconds(60)};
      absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
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
      out.push_back(absl::StrCat(last2.valid() && last2 != last, first2 == first, " ",
                                 absl::StrJoin(listed, ","), " ",
                                 down ? down->As<Down>()->reason.ToString() : "alive"));
    }
    report(absl::StrJoin(out, " | "));
  });
  EXPECT_EQ(got, "11 first+,transient-,last+ shutdown | 11 first+,transient-,last+ shutdown");
}

TEST_F(SupervisorTest, OneForAllRestartsEveryChild) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kOneForAll, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid old_a = co_await ChildPid(self, sup, "a");
        Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
        // Wait until c (the last started) runs again too.
        Pid new_a = co_await ChildPid(self, sup, "a");
        report(absl::StrCat(new_b.valid(), new_a != old_a));
      });
  EXPECT_EQ(got, "11");
  // b died (killed), then the others stop in reverse order, then all start in order.
  EXPECT_EQ(log_->Joined(), "stop:b stop:c stop:a start:a start:b start:c");
}

TEST_F(SupervisorTest, RestForOneRestartsTheChildAndLaterOnes) {
  Pid sup = StartSupervisor(*node_, {.strategy = RestartStrategy::kRestForOne, .intensity = 5},
                            ThreeChildren())
                .value();
  log_->Clear();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid old_a = co_await ChildPid(self, sup, "a");
        Pid new_b = co_await KillAndAwaitRestart(self, sup, "b");
        Pid a = co_await ChildPid(self, sup, "a");
        report(absl::StrCat(new_b.valid(), a == old_a));
      });
  EXPECT_EQ(got, "11");
  EXPECT_EQ(log_->Joined(), "stop:b stop:c start:b start:c");
}

TEST_F(SupervisorTest, IntensityExceededStopsTheSupervisor) {
  Pid sup =
      StartSupervisor(
          *node_,
          {.strategy = RestartStrategy::kOneForOne, .intensity = 2, .period = absl::Seconds(10)},
          ThreeChildren())
          .value();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        uint64_t ref = self.Monitor(sup);
        for (int i = 0; i < 2; ++i) co_await KillAndAwaitRestart(self, sup, "a");
        Pid a = co_await ChildPid(self, sup, "a");
        SendExit(a, ExitReason::Kill());  // Third restart within the period: too many.
        std::optional<Message> m = co_await self.ReceiveIf(
            [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
            absl::Now() + absl::Seconds(10));
        report(m ? m->As<Down>()->reason.ToString() : "supervisor still alive");
      });
  EXPECT_EQ(got, "shutdown");
  EXPECT_FALSE(sup.alive());
}

TEST_F(SupervisorTest, SubSecondPeriodForgetsOldRestarts) {
  Pid sup = StartSupervisor(*node_,
                            {.strategy = RestartStrategy::kOneForOne,
                             .intensity = 1,
                             .period = absl::Milliseconds(50)},
                            ThreeChildren())
                .value();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        for (int i = 0; i < 3; ++i) {
          co_await KillAndAwaitRestart(self, sup, "a");
          co_await self.Sleep(absl::Milliseconds(60));  // Older than the period: forgotten.
        }
        report(sup.alive() ? "alive" : "dead");
      });
  EXPECT_EQ(got, "alive");
}

TEST_F(SupervisorTest, TransientAndTemporaryRules) {
  std::vector<ChildSpec> children = {
      Logged(log_, "transient", RestartType::kTransient),
      Logged(log_, "temporary", RestartType::kTemporary),
  };
  Pid sup = StartSupervisor(*node_, {.intensity = 5}, children).value();
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
        // Transient: a normal exit is not restarted...
        Pid t = co_await ChildPid(self, sup, "transient");
        uint64_t ref = self.Monitor(t);
        Send(t, Stop{});
        co_await self.ReceiveIf(
            [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
        co_await self.Sleep(absl::Milliseconds(20));
        Pid after_normal = co_await ChildPid(self, sup, "transient");
        // ...a crash is (restart_child brings it back first).
        absl::StatusOr<Pid> again = co_await RestartChild(self, sup, "transient");
        Pid restarted = co_await KillAndAwaitRestart(self, sup, "transient");
        // Temporary: never restarted, and its spec disappears.
        Pid tmp = co_await ChildPid(self, sup, "temporary");
        uint64_t ref2 = self.Monitor(tmp);
        SendExit(tmp, ExitReason::Kill());
        co_await self.ReceiveIf(
            [ref2](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref2; });
        co_await self.Sleep(absl::Milliseconds(20));
        absl::StatusOr<ChildCounts> counts = co_await CountChildren(self, sup);
        report(absl::StrCat(after_normal.valid(), again.ok(), restarted.valid(),
                            " specs=", counts->specs, " active=", counts->active));
      });
  EXPECT_EQ(got, "011 specs=1 active=1");
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
  std::string got =
      Probe([sup](Process& self, std::function<void(std::string)> report) -> Task<void> {
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
        report(absl::StrCat(st.ok(), bt.ok(), took >= absl::Milliseconds(50), " ", rs_reason, " ",
                            rb_reason));
      });
  EXPECT_EQ(got, "111 killed killed");
}

TEST_F(SupervisorTest, NestedSupervisors) {
  std::vector<ChildSpec> inner = {Logged(log_, "w")};
  Pid outer =
      StartSupervisor(*node_, {.intensity = 5},
                      {SupervisorChild("inner", {.intensity = 5}, inner), Logged(log_, "x")})
          .value();
  EXPECT_EQ(log_->Joined(), "start:w start:x");
  log_->Clear();
  std::string got =
      Probe([outer](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid inner_sup = co_await ChildPid(self, outer, "inner");
        // A worker of the inner supervisor is restarted by the inner one.
        Pid w2 = co_await KillAndAwaitRestart(self, inner_sup, "w");
        Pid same_inner = co_await ChildPid(self, outer, "inner");
        // Killing the inner supervisor: the outer restarts it (and so its worker).
        Pid inner2 = co_await KillAndAwaitRestart(self, outer, "inner");
        absl::StatusOr<ChildCounts> counts = co_await CountChildren(self, outer);
        report(absl::StrCat(w2.valid(), same_inner == inner_sup, inner2.valid(),
                            " sup=", counts->supervisors, " workers=", counts->workers));
      });
  EXPECT_EQ(got, "111 sup=1 workers=1");
}

TEST_F(SupervisorTest, DynamicChildrenApi) {
  Pid sup = StartSupervisor(*node_, {}, {}).value();
  std::string got = Probe(
      [sup, log = log_](Process& self, std::function<void(std::string)> report) -> Task<void> {
        std::vector<std::string> out;
        absl::StatusOr<Pid> p = co_await StartChild(self, sup, Logged(log, "d"));
        out.push_back(absl::StrCat("start=", p.ok()));
        absl::StatusOr<Pid> dup = co_await StartChild(self, sup, Logged(log, "d"));
        out.push_back(absl::StrCat("dup=", absl::StatusCodeToString(dup.status().code())));
        absl::Status del_running = co_await DeleteChild(self, sup, "d");
        out.push_back(absl::StrCat("del_running=", absl::StatusCodeToString(del_running.code())));
        absl::Status term = co_await TerminateChild(self, sup, "d");
        absl::StatusOr<std::vector<ChildInfo>> which = co_await WhichChildren(self, sup);
        out.push_back(absl::StrCat("term=", term.ok(), " listed=", which->size(),
                                   " running=", which->front().pid.valid()));
        absl::StatusOr<Pid> re = co_await RestartChild(self, sup, "d");
        absl::Status stopped = co_await TerminateChild(self, sup, "d");
        out.push_back(absl::StrCat("restart=", re.ok(), " stopped=", stopped.ok()));
        absl::Status del = co_await DeleteChild(self, sup, "d");
        absl::Status missing = co_await TerminateChild(self, sup, "d");
        out.push_back(
            absl::StrCat("del=", del.ok(), " missing=", absl::StatusCodeToString(missing.code())));
        report(absl::StrJoin(out, " "));
      });
  EXPECT_EQ(got,
            "start=1 dup=ALREADY_EXISTS del_running=FAILED_PRECONDITION term=1 listed=1 "
            "running=0 restart=1 stopped=1 del=1 missing=NOT_FOUND");
}

struct SupervisorIs {
  Pid pid;
};

// StopSupervisor ends a supervisor with reason normal, so its linked parent (not trapping exits)
// lives on; exceeding the restart intensity ends it with shutdown, which takes that parent down.
TEST_F(SupervisorTest, StopSupervisorSparesALinkedParentButIntensityDoesNot) {
  std::string got =
      Probe([log = log_](Process& self, std::function<void(std::string)> report) -> Task<void> {
        std::vector<ChildSpec> children;
        children.push_back(Logged(log, "a"));
        absl::StatusOr<Pid> sup =
            co_await StartSupervisorLink(self, SupervisorFlags{}, std::move(children));
        absl::Status stopped = co_await StopSupervisor(self, *sup);
        // Still alive here (not trapping exits): the supervisor exited normally. (Its link signal
        // came before the Down that StopSupervisor waited for, so it has been taken.)
        std::string spared = absl::StrCat(sup.ok(), stopped.ok(), self.self().alive());

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
        std::optional<SupervisorIs> strict =
            co_await self.ReceiveFor<SupervisorIs>(absl::Seconds(10));
        std::optional<Message> down = co_await self.ReceiveIf(
            [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
            absl::Now() + absl::Seconds(10));
        report(absl::StrCat(spared, " parent ",
                            down ? down->As<Down>()->reason.ToString() : std::string("alive"),
                            " supervisor alive ", strict && strict->pid.alive()));
      });
  EXPECT_EQ(got, "111 parent shutdown supervisor alive 0");
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

}  // namespace
}  // namespace etsmgr
