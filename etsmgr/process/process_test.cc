#include "etsmgr/process/process.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/executor/testing/test_backends.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

struct Ping {
  Pid from;
  int n;
};
struct Pong {
  int n;
};
struct Note {
  std::string text;
};

class ProcessTest : public BackendTest {
 protected:
  void SetUp() override {
    BackendTest::SetUp();
    if (IsSkipped()) return;
    RuntimeOptions options;
    options.backend = backend();
    options.schedulers = 2;
    node_ = Node::Create(options).value();
  }
  std::unique_ptr<Node> node_;
};

TEST_P(ProcessTest, PidsAreUniqueAndPrintLikeErlang) {
  std::set<uint64_t> serials;
  for (int i = 0; i < 100; ++i) {
    Pid p = node_->Spawn([](Process&) -> Task<void> { co_return; }).value();
    EXPECT_TRUE(serials.insert(p.serial()).second);
    EXPECT_EQ(p.ToString(), absl::StrCat("<0.", p.serial(), ">"));
  }
  EXPECT_EQ(Pid().ToString(), "<null>");
}

// A PidCopier counts its first copy of a process at once and the rest when it flushes, also when
// processes clash on its slots (3,000 processes, 1,024 slots).
TEST_P(ProcessTest, PidCopierCountsEveryCopy) {
  std::vector<Pid> pids;  // Processes that wait: their own references stay put meanwhile.
  for (int i = 0; i < 3000; ++i) {
    pids.push_back(
        node_->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Note>(); }).value());
  }
  auto refs = [](const Pid& pid) { return process_internal::ProcessAccess::Control(pid)->refs(); };
  std::vector<uint32_t> before;
  for (const Pid& p : pids) before.push_back(refs(p));
  std::vector<Pid> copies;
  {
    PidCopier copier;
    for (int round = 0; round < 3; ++round) {
      for (const Pid& p : pids) copies.push_back(copier.Copy(p));
    }
    EXPECT_FALSE(copier.Copy(Pid()).valid());
    // Process 0 was copied three times, counted at least once already.
    EXPECT_GE(refs(pids[0]), before[0] + 1);
    copier.Flush();
    for (size_t i = 0; i < pids.size(); ++i) ASSERT_EQ(refs(pids[i]), before[i] + 3) << i;
    copies.push_back(copier.Copy(pids[0]));  // Owed after the flush: counted by the destructor.
  }
  EXPECT_EQ(refs(pids[0]), before[0] + 4);
  for (size_t i = 0; i < copies.size(); ++i) EXPECT_EQ(copies[i], pids[i % pids.size()]);
  copies.clear();
  for (size_t i = 0; i < pids.size(); ++i) ASSERT_EQ(refs(pids[i]), before[i]) << i;
  for (const Pid& p : pids) Send(p, Note{"done"});
}

// A message to a dead Pid goes nowhere: each fresh process takes the first message it gets and
// exits normally only if that is the Pong sent to it; a stale Note delivered to it would come
// first (one sender's messages keep their order) and crash it, and its Down would say so.
TEST_P(ProcessTest, StalePidNeverReachesANewProcess) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid short_lived = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
    co_await AwaitDown(self, short_lived);
    // Many new processes; none may receive what is sent to the dead Pid.
    std::vector<Pid> fresh;
    std::vector<uint64_t> refs;
    for (int i = 0; i < 50; ++i) {
      fresh.push_back(self.Spawn([](Process& p) -> Task<void> {
                            Message m = co_await p.Receive();
                            if (!m.Is<Pong>()) throw std::runtime_error("stale message arrived");
                          })
                          .value());
      refs.push_back(self.Monitor(fresh.back()));
    }
    EXPECT_FALSE(Send(short_lived, Note{"to the dead"})) << "Send to a dead pid reports delivery";
    for (const Pid& p : fresh) Send(p, Pong{0});
    for (size_t i = 0; i < refs.size(); ++i) {
      const uint64_t ref = refs[i];
      std::optional<Message> m = co_await self.ReceiveIf(
          [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
          absl::Now() + absl::Seconds(10));
      CO_ASSERT_TRUE(m.has_value(), absl::StrCat("fresh process ", i, "'s Down within 10 s"));
      EXPECT_EQ(m->As<Down>()->reason.ToString(), "normal")
          << "fresh process " << i << " " << fresh[i].ToString() << " got a stale message";
    }
    EXPECT_FALSE(short_lived.alive()) << "the short-lived process is dead";
  });
}

TEST_P(ProcessTest, MailboxIsFifoAndSelectiveReceiveKeepsOrder) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Send(self.self(), Note{"a"});
    Send(self.self(), Pong{1});
    Send(self.self(), Note{"b"});
    Send(self.self(), Pong{2});
    Send(self.self(), Note{"c"});
    Pong p1 = co_await self.Receive<Pong>();
    Pong p2 = co_await self.Receive<Pong>();
    EXPECT_EQ(p1.n, 1) << "first Pong by type";
    EXPECT_EQ(p2.n, 2) << "second Pong by type";
    std::string order;
    for (int i = 0; i < 3; ++i) {
      Message m = co_await self.Receive();
      CO_ASSERT_TRUE(m.Is<Note>(), "only Notes are left");
      order += m.As<Note>()->text;
    }
    EXPECT_EQ(order, "abc") << "the Notes left behind keep their order";
  });
}

TEST_P(ProcessTest, ReceiveWithTimeoutAndPredicate) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    absl::Time start = absl::Now();
    std::optional<Message> none = co_await self.ReceiveFor(absl::Milliseconds(20));
    EXPECT_FALSE(none.has_value()) << "ReceiveFor on an empty mailbox times out";
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(20)) << "ReceiveFor waited its timeout";
    Send(self.self(), Pong{1});
    Send(self.self(), Pong{7});
    std::optional<Message> seven = co_await self.ReceiveIf(
        [](const Envelope& e) { return e.Is<Pong>() && e.As<Pong>()->n == 7; });
    CO_ASSERT_TRUE(seven.has_value(), "ReceiveIf finds the Pong 7");
    EXPECT_EQ(seven->As<Pong>()->n, 7) << "ReceiveIf takes the message its predicate names";
    std::optional<Pong> one = co_await self.ReceiveFor<Pong>(absl::Seconds(1));
    CO_ASSERT_TRUE(one.has_value(), "the Pong 1 skipped by the predicate is still queued");
    EXPECT_EQ(one->n, 1) << "the Pong skipped by the predicate";
    std::optional<Pong> nothing = co_await self.ReceiveFor<Pong>(absl::Milliseconds(1));
    EXPECT_FALSE(nothing.has_value()) << "no third Pong";
  });
}

Task<void> Ponger(Process& self) {
  while (true) {
    Ping p = co_await self.Receive<Ping>();
    Send(p.from, Pong{p.n});
  }
}

TEST_P(ProcessTest, PingPongAcrossSchedulersAndFromPlainThreads) {
  Pid ponger = node_->Spawn(Ponger, {.scheduler = 1}).value();
  RunInProcess(*node_,
               [ponger](Process& self) -> Task<void> {
                 int sum = 0;
                 for (int i = 0; i < 1000; ++i) {
                   Send(ponger, Ping{self.self(), i});
                   sum += (co_await self.Receive<Pong>()).n;
                 }
                 EXPECT_EQ(sum, 999 * 1000 / 2) << "the sum of 1000 ping-pongs across schedulers";
               },
               {.scheduler = 0});
  // Sends from plain threads reach a process too.
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid me = self.self();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([me, t] {
        for (int i = 0; i < 250; ++i) Send(me, Pong{t});
      });
    }
    int n = 0;
    while (n < 1000) {
      co_await self.Receive<Pong>();
      ++n;
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(n, 1000) << "messages received from 4 plain threads";
  });
}

// Same scheduler: a message may skip the incoming queue, but never overtake an earlier signal
// or message from the same sender.
TEST_P(ProcessTest, SignalThenMessageKeepOrderOnOneScheduler) {
  RunInProcess(
      *node_,
      [](Process& self) -> Task<void> {
        Pid probe = self.self();
        Pid target = self.Spawn(
                             [probe](Process& t) -> Task<void> {
                               Send(probe, Note{"ready"});
                               co_await t.Sleep(absl::Milliseconds(20));  // Let both arrive.
                               std::string order;
                               for (int i = 0; i < 3; ++i) {
                                 Message m = co_await t.Receive();
                                 order += m.Is<ExitSignal>() ? "S" : m.As<Note>()->text;
                               }
                               Send(probe, Note{order});
                             },
                             {.scheduler = 0, .pin = true, .trap_exit = true})
                         .value();
        co_await self.Receive<Note>();
        Send(target, Note{"a"});
        SendExit(target, ExitReason::Custom("x"), self.self());
        Send(target, Note{"b"});
        Note order = co_await self.Receive<Note>();
        EXPECT_EQ(order.text, "aSb") << "message, signal (S), message: the order the target saw";
      },
      {.scheduler = 0, .pin = true});
}

TEST_P(ProcessTest, RegistryRegisterWhereisAndNameFreedOnExit) {
  Pid worker = node_->Spawn(Ponger, {.name = "ponger"}).value();
  EXPECT_EQ(node_->Whereis("ponger"), worker);
  absl::StatusOr<Pid> dup = node_->Spawn(Ponger, {.name = "ponger"});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(std::string(dup.status().message()).find("already registered to " + worker.ToString()),
            std::string::npos)
      << dup.status();
  EXPECT_EQ(node_->Register("second", worker).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(node_->Register("", worker).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(node_->SendNamed("ponger", Note{"x"}).ok());
  EXPECT_EQ(node_->SendNamed("nobody", Note{"x"}).code(), absl::StatusCode::kNotFound);

  RunInProcess(*node_, [worker](Process& self) -> Task<void> {
    uint64_t ref = self.Monitor(worker);
    SendExit(worker, ExitReason::Kill());
    co_await self.ReceiveIf(
        [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
  });
  EXPECT_FALSE(node_->Whereis("ponger").valid());
  EXPECT_EQ(node_->Register("ponger", worker).code(), absl::StatusCode::kNotFound);
}

TEST_P(ProcessTest, WaitForRegisteredWakesOnRegistration) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Node& node = self.node();
    std::thread registrar([&node] {
      Pid late = node.Spawn(Ponger).value();
      ASSERT_TRUE(node.Register("late", late).ok());
    });
    std::optional<Pid> found =
        co_await self.WaitForRegistered("late", absl::Now() + absl::Seconds(10));
    registrar.join();
    EXPECT_TRUE(found.has_value()) << "WaitForRegistered(\"late\") woke within 10 s";
    if (found) {
      EXPECT_EQ(*found, node.Whereis("late")) << "it yields the registered pid";
    }
    std::optional<Pid> missing =
        co_await self.WaitForRegistered("never", absl::Now() + absl::Milliseconds(20));
    EXPECT_FALSE(missing.has_value()) << "WaitForRegistered(\"never\") times out";
  });
}

struct Guard {
  std::shared_ptr<std::atomic<int>> destroyed;
  ~Guard() { destroyed->fetch_add(1); }
};

TEST_P(ProcessTest, KillDuringReceiveRunsDestructorsOnceAndFiresMonitor) {
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  RunInProcess(*node_, [destroyed](Process& self) -> Task<void> {
    Pid victim = self.Spawn([destroyed, probe = self.self()](Process& v) -> Task<void> {
                       Guard g{destroyed};
                       Send(probe, Note{"ready"});
                       co_await v.Receive<Ping>();  // Never arrives.
                     })
                     .value();
    uint64_t ref = self.Monitor(victim);
    co_await self.Receive<Note>();
    SendExit(victim, ExitReason::Kill());
    std::optional<Message> m = co_await self.ReceiveIf(
        [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
        absl::Now() + absl::Seconds(10));
    CO_ASSERT_TRUE(m.has_value(), "the victim's Down within 10 s");
    EXPECT_EQ(m->As<Down>()->reason.ToString(), "killed") << "the victim's exit reason";
    EXPECT_EQ(destroyed->load(), 1) << "the victim's destructors ran once by its Down";
    EXPECT_FALSE(victim.alive()) << "the victim is dead at its Down";
  });
  EXPECT_EQ(destroyed->load(), 1);
}

TEST_P(ProcessTest, MonitorsAndDemonitorFlush) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid dead = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
    uint64_t r1 = self.Monitor(dead);
    Down d1 = co_await self.Receive<Down>();
    // Monitoring a dead process gives Down noproc at once.
    uint64_t r2 = self.Monitor(dead);
    Down d2 = co_await self.Receive<Down>();
    // Demonitor with flush removes a Down already queued.
    // A second monitor's Down proves the first one's is queued: Downs go out in monitor
    // order, and one sender's messages keep their order.
    // `quick` lives until both monitors are in place: its exit then sends both Downs, in
    // monitor order (a monitor set after its death would get a noproc Down at once, which
    // can overtake the first).
    Pid quick = self.Spawn([](Process& q) -> Task<void> { co_await q.Receive<Ping>(); }).value();
    uint64_t r3 = self.Monitor(quick);
    uint64_t r4 = self.Monitor(quick);
    Send(quick, Ping{});
    auto down_of = [](uint64_t ref) {
      return [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; };
    };
    std::optional<Message> d4 =
        co_await self.ReceiveIf(down_of(r4), absl::Now() + absl::Seconds(10));
    size_t queued = self.mailbox_size();  // r3's Down.
    self.Demonitor(r3, /*flush=*/true);
    std::optional<Down> none = co_await self.ReceiveFor<Down>(absl::ZeroDuration());
    EXPECT_EQ(d1.ref, r1) << "the first Down carries the first monitor's ref";
    // Normal or noproc depending on whether it died before the monitor.
    EXPECT_TRUE(d1.reason.ToString() == "normal" || d1.reason.ToString() == "noproc")
        << "the first Down's reason: " << d1.reason.ToString();
    EXPECT_EQ(d2.ref, r2) << "the monitor of a dead pid: its Down's ref";
    EXPECT_EQ(d2.reason.ToString(), "noproc") << "the monitor of a dead pid: its Down's reason";
    EXPECT_TRUE(d4.has_value()) << "the second monitor's Down within 10 s";
    EXPECT_EQ(queued, 1u) << "the first monitor's Down is queued by then";
    EXPECT_FALSE(none.has_value()) << "Demonitor(flush) removed the queued Down";
  });
}

TEST_P(ProcessTest, LinkToDeadPidGivesNoproc) {
  RunInProcess(*node_,
               [](Process& self) -> Task<void> {
                 Pid dead = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
                 uint64_t ref = self.Monitor(dead);
                 co_await self.ReceiveIf(
                     [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
                 self.Link(dead);
                 ExitSignal sig = co_await self.Receive<ExitSignal>();
                 EXPECT_EQ(sig.from, dead) << "the exit signal is from the dead pid";
                 EXPECT_EQ(sig.reason.ToString(), "noproc") << "the exit signal's reason";
               },
               {.trap_exit = true});
}

TEST_P(ProcessTest, TryLinkLinksALiveProcessAndReportsADeadOneWithoutSignal) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid dead = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
    co_await AwaitDown(self, dead);
    Pid live = self.Spawn([](Process& p) -> Task<void> { co_await p.Receive<Note>(); }).value();
    EXPECT_FALSE(self.TryLink(dead)) << "TryLink to a dead pid";
    EXPECT_TRUE(self.TryLink(live)) << "TryLink to a live pid";
    std::vector<Pid> links = GetProcessInfo(self.self())->links;
    EXPECT_NE(std::find(links.begin(), links.end(), live), links.end())
        << "the live process is in this process's links";
    // No noproc signal: this process does not trap exits and is still running.
    Send(live, Note{"go"});
    co_await AwaitDown(self, live);
    EXPECT_EQ(self.mailbox_size(), 0u) << "no signal or message from the dead pid's TryLink";
  });
}

TEST_P(ProcessTest, UnlinkStopsSignals) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid other = self.Spawn([](Process& p) -> Task<void> {
                      co_await p.Receive<Note>();
                      co_await p.Exit(ExitReason::Custom("crash"));
                    })
                    .value();
    self.Link(other);
    self.Unlink(other);
    self.Monitor(other);
    Send(other, Note{"go"});
    Down d = co_await self.Receive<Down>();
    // Still alive to check: the unlinked crash did not kill us.
    EXPECT_EQ(d.reason.ToString(), "crash") << "the unlinked process's exit reason";
  });
}

TEST_P(ProcessTest, SpawnLinkedChildCrashKillsParent) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    Pid parent = self.Spawn([](Process& p) -> Task<void> {
                       (void)p.SpawnLink([](Process&) -> Task<void> {
                         throw std::runtime_error("child failed");
                         co_return;
                       });
                       co_await p.Receive<Note>();
                     })
                     .value();
    self.Monitor(parent);
    Down d = co_await self.Receive<Down>();
    EXPECT_EQ(d.reason.ToString(), "{exception,\"child failed\"}")
        << "the parent exits with its linked child's crash";
  });
}

TEST_P(ProcessTest, ProcessInfo) {
  RunInProcess(*node_,
               [](Process& self) -> Task<void> {
                 Pid other = self.Spawn(Ponger).value();
                 self.Link(other);
                 self.Monitor(other);
                 (void)self.Register("info_probe");
                 Send(self.self(), Note{"queued"});
                 co_await self.Sleep(absl::Milliseconds(1));
                 absl::StatusOr<ProcessInfo> mine = GetProcessInfo(self.self());
                 CO_ASSERT_OK(mine, "this process's info");
                 // The ponger suspends in its receive soon after it starts: wait for that, with a
                 // deadline.
                 absl::StatusOr<ProcessInfo> theirs = GetProcessInfo(other);
                 CO_ASSERT_OK(theirs, "the ponger's info");
                 absl::Time deadline = absl::Now() + absl::Seconds(5);
                 while (theirs->status != ProcessStatus::kWaiting && absl::Now() < deadline) {
                   co_await self.Sleep(absl::Milliseconds(1));
                   theirs = GetProcessInfo(other);
                   CO_ASSERT_OK(theirs, "the ponger's info");
                 }
                 EXPECT_EQ(theirs->status, ProcessStatus::kWaiting)
                     << "the ponger waits in its receive within 5 s";
                 SendExit(other, ExitReason::Kill());
                 co_await self.Receive<ExitSignal>();
                 absl::StatusOr<ProcessInfo> dead = GetProcessInfo(other);
                 EXPECT_EQ(mine->links.size(), 1u) << "links";
                 EXPECT_EQ(mine->monitoring.size(), 1u) << "monitoring";
                 EXPECT_EQ(theirs->monitored_by.size(), 1u) << "the ponger's monitored_by";
                 EXPECT_TRUE(mine->trap_exit) << "trap_exit";
                 EXPECT_EQ(mine->registered_name, "info_probe") << "registered_name";
                 EXPECT_EQ(mine->mailbox_length, 1u) << "mailbox_length";
                 EXPECT_GT(mine->memory, 0u) << "memory";
                 EXPECT_EQ(dead.status().code(), absl::StatusCode::kNotFound)
                     << "the info of a dead process: " << dead.status();
               },
               {.trap_exit = true});
}

// OTP's order: a dying process releases what it owns (exit hooks: tables to their heirs) before
// its links and monitors fire, so a watcher never sees the exit before the hand-over.
TEST_P(ProcessTest, ExitHooksRunBeforeLinksAndMonitorsFire) {
  auto hook_ran = std::make_shared<std::atomic<bool>>(false);
  RunInProcess(*node_,
               [hook_ran](Process& self) -> Task<void> {
                 Pid victim =
                     self.Spawn([hook_ran, probe = self.self()](Process& v) -> Task<void> {
                           process_internal::ProcessAccess::AddExitHook(
                               v.self(),
                               [hook_ran](const Pid&, const ExitReason&) { hook_ran->store(true); },
                               nullptr);
                           Send(probe, Note{"ready"});
                           co_await v.Receive<Ping>();
                         })
                         .value();
                 self.Link(victim);
                 uint64_t ref = self.Monitor(victim);
                 co_await self.Receive<Note>();
                 SendExit(victim, ExitReason::Kill());
                 ExitSignal sig = co_await self.Receive<ExitSignal>();
                 EXPECT_TRUE(hook_ran->load()) << "the exit hook ran before the link's exit signal";
                 Down d = co_await self.Receive<Down>();
                 EXPECT_TRUE(hook_ran->load()) << "the exit hook ran before the monitor's Down";
                 EXPECT_EQ(d.ref, ref) << "the Down's ref";
                 EXPECT_EQ(sig.reason.ToString(), "killed") << "the exit signal's reason";
               },
               {.trap_exit = true});
}

// Node::Run's result follows the body's: V for a status, Status for void, StatusOr<V> otherwise;
// a plain Task runs as a process too; a timeout answers DeadlineExceeded; from a scheduler thread
// it refuses at once instead of deadlocking.
TEST_P(ProcessTest, NodeRunYieldsWhatTheBodyYields) {
  absl::StatusOr<int> seven = node_->Run([](Process&) -> Task<int> { co_return 7; });
  ASSERT_TRUE(seven.ok()) << seven.status();
  EXPECT_EQ(*seven, 7) << "a Task<int> body's value";
  absl::Status fine = node_->Run([](Process& self) -> Task<void> { co_await self.Yield(); });
  EXPECT_TRUE(fine.ok()) << "a Task<void> body: " << fine;
  absl::Status failed = node_->Run<absl::Status>(
      [](Process&) -> Task<absl::Status> { co_return absl::NotFoundError("the body's error"); });
  EXPECT_EQ(failed.code(), absl::StatusCode::kNotFound) << "the body's own status: " << failed;
  absl::StatusOr<Pid> me = node_->Run([]() -> Task<Pid> { co_return CurrentPid(); }());
  EXPECT_TRUE(me.ok() && me->valid()) << "a plain Task runs as a process";
  absl::Status slow = node_->Run([](Process& self) -> Task<void> { co_await self.Receive<Ping>(); },
                                 {}, absl::Milliseconds(20));
  EXPECT_EQ(slow.code(), absl::StatusCode::kDeadlineExceeded) << "past its timeout: " << slow;
  // A timeout beyond what a clock can add (500 years) waits like an infinite one; it once
  // overflowed the condition variable's deadline and answered DeadlineExceeded at once.
  absl::StatusOr<int> patient = node_->Run(
      [](Process&) -> Task<int> {
        co_await Sleep(absl::Milliseconds(20));
        co_return 8;
      },
      {}, absl::Hours(24 * 365 * 500));
  EXPECT_TRUE(patient.ok() && *patient == 8) << "a 500-year timeout: " << patient.status();
  RunInProcess(*node_, [](Process& self) {
    absl::Status nested = self.node().Run([](Process&) -> Task<void> { co_return; });
    EXPECT_EQ(nested.code(), absl::StatusCode::kFailedPrecondition)
        << "Node::Run from a scheduler thread: " << nested;
  });
}

// AwaitDown yields the exit reason, noproc at once for a dead pid, nullopt at its deadline, and
// leaves other messages queued.
TEST_P(ProcessTest, AwaitDownYieldsTheReasonAndLeavesOtherMessages) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    // The worker exits once pinged and monitored, so its Down carries its own reason.
    Pid worker = self.Spawn([](Process& p) -> Task<void> {
                       co_await p.Receive<Ping>();
                       while (GetProcessInfo(p.self())->monitored_by.empty()) {
                         co_await p.Sleep(absl::Milliseconds(1));
                       }
                       co_await p.Exit(ExitReason::Custom("done"));
                     })
                     .value();
    Send(self.self(), Note{"queued"});
    std::optional<ExitReason> early =
        co_await AwaitDown(self, worker, absl::Now() + absl::Milliseconds(10));
    EXPECT_FALSE(early.has_value()) << "a live process at the deadline";
    Send(worker, Ping{});
    ExitReason why = co_await AwaitDown(self, worker);
    EXPECT_EQ(why.ToString(), "done") << "the worker's exit reason";
    ExitReason again = co_await AwaitDown(self, worker);
    EXPECT_EQ(again.ToString(), "noproc") << "a dead pid: at once";
    EXPECT_EQ(self.mailbox_size(), 1u) << "only the Note is left (no stray Down)";
  });
}

TEST_P(ProcessTest, ShutdownDestroysLiveProcesses) {
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  auto started = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(node_
                    ->Spawn([destroyed, started](Process& p) -> Task<void> {
                      Guard g{destroyed};
                      started->fetch_add(1);
                      co_await p.Receive<Ping>();
                    })
                    .ok());
  }
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (started->load() != 20 && absl::Now() < deadline) std::this_thread::yield();
  ASSERT_EQ(started->load(), 20);
  node_.reset();
  EXPECT_EQ(destroyed->load(), 20);
}

// A monitor that fired is gone from both sides, as in Erlang: AwaitDown and a received Down
// leave no entry in the watcher's `monitoring` (which would also keep the dead process's block).
TEST_P(ProcessTest, AFiredMonitorIsGoneFromTheWatcher) {
  RunInProcess(*node_, [](Process& self) -> Task<void> {
    for (int i = 0; i < 3; ++i) {
      // It exits once monitored, so the Down carries its own reason.
      Pid p = self.Spawn([](Process& p) -> Task<void> {
                    while (GetProcessInfo(p.self())->monitored_by.empty()) {
                      co_await p.Sleep(absl::Milliseconds(1));
                    }
                  })
                  .value();
      ExitReason why = co_await AwaitDown(self, p);
      EXPECT_EQ(why.ToString(), "normal") << "round " << i;
    }
    Pid q = self.Spawn([](Process& q) -> Task<void> { co_await q.Receive<Ping>(); }).value();
    uint64_t ref = self.Monitor(q);
    Send(q, Ping{});
    Down d = co_await self.Receive<Down>();
    EXPECT_EQ(d.ref, ref) << "the Down's ref";
    absl::StatusOr<ProcessInfo> me = GetProcessInfo(self.self());
    CO_ASSERT_OK(me, "this process's info");
    EXPECT_TRUE(me->monitoring.empty())
        << me->monitoring.size() << " monitor(s) of dead processes left";
    self.Demonitor(ref, /*flush=*/true);  // After the Down: a no-op, as demonitor/2 in Erlang.
    EXPECT_EQ(self.mailbox_size(), 0u) << "nothing queued";
  });
}

// Demonitor(ref, flush) while the target is dying on another scheduler: no Down of that monitor
// is ever left behind, even when the target has taken its watchers and not yet sent the Down.
// A second monitor, taken after, is the witness: the target sends Downs in ref order, so once
// the second Down is here the first one (if sent) is too.
TEST_P(ProcessTest, DemonitorWithFlushLeavesNoDownOfATargetDyingElsewhere) {
  RunInProcess(
      *node_,
      [](Process& self) -> Task<void> {
        const int kRounds = 3000;
        int stray = 0;
        for (int i = 0; i < kRounds; ++i) {
          Pid target = self.Spawn([](Process& t) -> Task<void> { co_await t.Receive<Ping>(); },
                                  {.scheduler = 1, .pin = true})
                           .value();
          uint64_t ref = self.Monitor(target);
          uint64_t witness = self.Monitor(target);
          Send(target, Ping{});
          // Vary the moment of the demonitor across the target's wake-up and exit.
          std::atomic<int> spin{0};
          while (spin.fetch_add(1, std::memory_order_relaxed) < (i % 64) * 40) {
          }
          self.Demonitor(ref, /*flush=*/true);
          std::optional<Message> w = co_await self.ReceiveIf(
              [witness](const Envelope& e) {
                const Down* d = e.As<Down>();
                return d != nullptr && d->ref == witness;
              },
              absl::Now() + absl::Seconds(10));
          CO_ASSERT_TRUE(w.has_value(), "the witness monitor's Down within 10 s");
          std::optional<Message> left = co_await self.ReceiveIf(
              [ref](const Envelope& e) {
                const Down* d = e.As<Down>();
                return d != nullptr && d->ref == ref;
              },
              absl::Now());
          if (left.has_value()) ++stray;
        }
        EXPECT_EQ(stray, 0) << "Downs left behind by Demonitor(flush) in " << kRounds << " rounds";
        absl::StatusOr<ProcessInfo> me = GetProcessInfo(self.self());
        CO_ASSERT_OK(me, "this process's info");
        EXPECT_TRUE(me->monitoring.empty()) << me->monitoring.size() << " monitor(s) left";
      },
      {.scheduler = 0, .pin = true});
}

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(ProcessTest);

}  // namespace
}  // namespace etsmgr
