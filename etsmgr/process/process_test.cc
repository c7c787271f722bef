#include "etsmgr/process/process.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/executor/internal/test_backends.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/internal/test_util.h"
#include "etsmgr/process/node.h"
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
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid short_lived = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
        co_await AwaitDown(self, short_lived);
        // Many new processes; none may receive what is sent to the dead Pid.
        std::vector<Pid> fresh;
        std::vector<uint64_t> refs;
        for (int i = 0; i < 50; ++i) {
          fresh.push_back(self.Spawn([](Process& p) -> Task<void> {
                                Message m = co_await p.Receive();
                                if (!m.Is<Pong>())
                                  throw std::runtime_error("stale message arrived");
                              })
                              .value());
          refs.push_back(self.Monitor(fresh.back()));
        }
        bool delivered = Send(short_lived, Note{"to the dead"});
        for (const Pid& p : fresh) Send(p, Pong{0});
        int normal = 0;
        std::string other;
        for (uint64_t ref : refs) {
          std::optional<Message> m = co_await self.ReceiveIf(
              [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; },
              absl::Now() + absl::Seconds(10));
          if (!m) {
            other += " timeout";
          } else if (m->As<Down>()->reason == ExitReason::Normal()) {
            ++normal;
          } else {
            other += " " + m->As<Down>()->reason.ToString();
          }
        }
        report(absl::StrCat("delivered=", delivered, " alive=", short_lived.alive(),
                            " normal=", normal, other));
      });
  EXPECT_EQ(got, "delivered=0 alive=0 normal=50");
}

TEST_P(ProcessTest, MailboxIsFifoAndSelectiveReceiveKeepsOrder) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Send(self.self(), Note{"a"});
        Send(self.self(), Pong{1});
        Send(self.self(), Note{"b"});
        Send(self.self(), Pong{2});
        Send(self.self(), Note{"c"});
        Pong p1 = co_await self.Receive<Pong>();
        Pong p2 = co_await self.Receive<Pong>();
        std::string order = absl::StrCat(p1.n, p2.n, ":");
        for (int i = 0; i < 3; ++i) {
          Message m = co_await self.Receive();
          order += m.As<Note>()->text;
        }
        report(order);
      });
  EXPECT_EQ(got, "12:abc");
}

TEST_P(ProcessTest, ReceiveWithTimeoutAndPredicate) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        absl::Time start = absl::Now();
        std::optional<Message> none = co_await self.ReceiveFor(absl::Milliseconds(20));
        bool waited = absl::Now() - start >= absl::Milliseconds(20);
        Send(self.self(), Pong{1});
        Send(self.self(), Pong{7});
        std::optional<Message> seven = co_await self.ReceiveIf(
            [](const Envelope& e) { return e.Is<Pong>() && e.As<Pong>()->n == 7; });
        std::optional<Pong> one = co_await self.ReceiveFor<Pong>(absl::Seconds(1));
        std::optional<Pong> nothing = co_await self.ReceiveFor<Pong>(absl::Milliseconds(1));
        report(absl::StrCat(none.has_value(), waited, seven->As<Pong>()->n, one->n,
                            nothing.has_value()));
      });
  EXPECT_EQ(got, "01710");
}

Task<void> Ponger(Process& self) {
  while (true) {
    Ping p = co_await self.Receive<Ping>();
    Send(p.from, Pong{p.n});
  }
}

TEST_P(ProcessTest, PingPongAcrossSchedulersAndFromPlainThreads) {
  Pid ponger = node_->Spawn(Ponger, {.scheduler = 1}).value();
  std::string got =
      RunProbe(*node_,
               [ponger](Process& self, std::function<void(std::string)> report) -> Task<void> {
                 int sum = 0;
                 for (int i = 0; i < 1000; ++i) {
                   Send(ponger, Ping{self.self(), i});
                   sum += (co_await self.Receive<Pong>()).n;
                 }
                 report(absl::StrCat(sum));
               },
               {.scheduler = 0});
  EXPECT_EQ(got, absl::StrCat(999 * 1000 / 2));
  // Sends from plain threads reach a process too.
  std::string from_threads =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
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
        report(absl::StrCat(n));
      });
  EXPECT_EQ(from_threads, "1000");
}

// Same scheduler: a message may skip the incoming queue, but never overtake an earlier signal
// or message from the same sender.
TEST_P(ProcessTest, SignalThenMessageKeepOrderOnOneScheduler) {
  std::string got = RunProbe(
      *node_,
      [](Process& self, std::function<void(std::string)> report) -> Task<void> {
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
        report(order.text);
      },
      {.scheduler = 0, .pin = true});
  EXPECT_EQ(got, "aSb");
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

  std::string got = RunProbe(
      *node_, [worker](Process& self, std::function<void(std::string)> report) -> Task<void> {
        uint64_t ref = self.Monitor(worker);
        SendExit(worker, ExitReason::Kill());
        co_await self.ReceiveIf(
            [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
        report("");
      });
  (void)got;
  EXPECT_FALSE(node_->Whereis("ponger").valid());
  EXPECT_EQ(node_->Register("ponger", worker).code(), absl::StatusCode::kNotFound);
}

TEST_P(ProcessTest, WaitForRegisteredWakesOnRegistration) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Node& node = self.node();
        std::thread registrar([&node] {
          Pid late = node.Spawn(Ponger).value();
          ASSERT_TRUE(node.Register("late", late).ok());
        });
        std::optional<Pid> found =
            co_await self.WaitForRegistered("late", absl::Now() + absl::Seconds(10));
        registrar.join();
        std::optional<Pid> missing =
            co_await self.WaitForRegistered("never", absl::Now() + absl::Milliseconds(20));
        report(
            absl::StrCat(found.has_value() && *found == node.Whereis("late"), missing.has_value()));
      });
  EXPECT_EQ(got, "10");
}

struct Guard {
  std::shared_ptr<std::atomic<int>> destroyed;
  ~Guard() { destroyed->fetch_add(1); }
};

TEST_P(ProcessTest, KillDuringReceiveRunsDestructorsOnceAndFiresMonitor) {
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::string got = RunProbe(
      *node_, [destroyed](Process& self, std::function<void(std::string)> report) -> Task<void> {
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
        report(absl::StrCat(m ? m->As<Down>()->reason.ToString() : "timeout", " ",
                            destroyed->load(), " ", victim.alive()));
      });
  EXPECT_EQ(got, "killed 1 0");
  EXPECT_EQ(destroyed->load(), 1);
}

TEST_P(ProcessTest, MonitorsAndDemonitorFlush) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
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
        Pid quick =
            self.Spawn([](Process& q) -> Task<void> { co_await q.Receive<Ping>(); }).value();
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
        report(absl::StrCat(d1.ref == r1, d1.reason.ToString(), " ", d2.ref == r2,
                            d2.reason.ToString(), " ", d4.has_value(), " ", queued, " ",
                            none.has_value()));
      });
  // The first Down is normal or noproc depending on whether it died before the monitor.
  EXPECT_TRUE(got == "1normal 1noproc 1 1 0" || got == "1noproc 1noproc 1 1 0") << got;
}

TEST_P(ProcessTest, LinkToDeadPidGivesNoproc) {
  std::string got =
      RunProbe(*node_,
               [](Process& self, std::function<void(std::string)> report) -> Task<void> {
                 Pid dead = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
                 uint64_t ref = self.Monitor(dead);
                 co_await self.ReceiveIf(
                     [ref](const Envelope& e) { return e.Is<Down>() && e.As<Down>()->ref == ref; });
                 self.Link(dead);
                 ExitSignal sig = co_await self.Receive<ExitSignal>();
                 report(absl::StrCat(sig.from == dead, sig.reason.ToString()));
               },
               {.trap_exit = true});
  EXPECT_EQ(got, "1noproc");
}

TEST_P(ProcessTest, TryLinkLinksALiveProcessAndReportsADeadOneWithoutSignal) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid dead = self.Spawn([](Process&) -> Task<void> { co_return; }).value();
        co_await AwaitDown(self, dead);
        Pid live = self.Spawn([](Process& p) -> Task<void> { co_await p.Receive<Note>(); }).value();
        bool to_dead = self.TryLink(dead);
        bool to_live = self.TryLink(live);
        std::vector<Pid> links = GetProcessInfo(self.self())->links;
        bool linked = std::find(links.begin(), links.end(), live) != links.end();
        // No noproc signal: this process does not trap exits and is still running.
        Send(live, Note{"go"});
        co_await AwaitDown(self, live);
        report(absl::StrCat(to_dead, to_live, linked, " mailbox=", self.mailbox_size()));
      });
  EXPECT_EQ(got, "011 mailbox=0");
}

TEST_P(ProcessTest, UnlinkStopsSignals) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid other = self.Spawn([](Process& p) -> Task<void> {
                          co_await p.Receive<Note>();
                          co_await p.Exit(ExitReason::Custom("crash"));
                        })
                        .value();
        self.Link(other);
        self.Unlink(other);
        uint64_t ref = self.Monitor(other);
        Send(other, Note{"go"});
        Down d = co_await self.Receive<Down>();
        (void)ref;
        report(d.reason.ToString());  // Still alive to report: the unlinked crash did not kill us.
      });
  EXPECT_EQ(got, "crash");
}

TEST_P(ProcessTest, SpawnLinkedChildCrashKillsParent) {
  std::string got =
      RunProbe(*node_, [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid parent = self.Spawn([](Process& p) -> Task<void> {
                           (void)p.SpawnLink([](Process&) -> Task<void> {
                             throw std::runtime_error("child failed");
                             co_return;
                           });
                           co_await p.Receive<Note>();
                         })
                         .value();
        uint64_t ref = self.Monitor(parent);
        Down d = co_await self.Receive<Down>();
        (void)ref;
        report(d.reason.ToString());
      });
  EXPECT_EQ(got, "{exception,\"child failed\"}");
}

TEST_P(ProcessTest, ProcessInfo) {
  std::string got = RunProbe(
      *node_,
      [](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid other = self.Spawn(Ponger).value();
        self.Link(other);
        uint64_t ref = self.Monitor(other);
        (void)ref;
        (void)self.Register("info_probe");
        Send(self.self(), Note{"queued"});
        co_await self.Sleep(absl::Milliseconds(1));
        absl::StatusOr<ProcessInfo> mine = GetProcessInfo(self.self());
        // The ponger suspends in its receive soon after it starts: wait for that, with a deadline.
        absl::StatusOr<ProcessInfo> theirs = GetProcessInfo(other);
        absl::Time deadline = absl::Now() + absl::Seconds(5);
        while (theirs->status != process_internal::ProcessControl::Status::kWaiting &&
               absl::Now() < deadline) {
          co_await self.Sleep(absl::Milliseconds(1));
          theirs = GetProcessInfo(other);
        }
        bool waiting = theirs->status == process_internal::ProcessControl::Status::kWaiting;
        SendExit(other, ExitReason::Kill());
        co_await self.Receive<ExitSignal>();
        absl::StatusOr<ProcessInfo> dead = GetProcessInfo(other);
        report(absl::StrCat(mine->links.size(), mine->monitoring.size(),
                            theirs->monitored_by.size(), mine->trap_exit, waiting, " ",
                            mine->registered_name, " ", mine->mailbox_length, " ", mine->memory > 0,
                            " ", absl::StatusCodeToString(dead.status().code())));
      },
      {.trap_exit = true});
  EXPECT_EQ(got, "11111 info_probe 1 1 NOT_FOUND");
}

// OTP's order: a dying process releases what it owns (exit hooks: tables to their heirs) before
// its links and monitors fire, so a watcher never sees the exit before the hand-over.
TEST_P(ProcessTest, ExitHooksRunBeforeLinksAndMonitorsFire) {
  auto hook_ran = std::make_shared<std::atomic<bool>>(false);
  std::string got = RunProbe(
      *node_,
      [hook_ran](Process& self, std::function<void(std::string)> report) -> Task<void> {
        Pid victim =
            self.Spawn([hook_ran, probe = self.self()](Process& v) -> Task<void> {
                  process_internal::ProcessAccess::Control(v)->AddExitHook(
                      [hook_ran](const Pid&, const ExitReason&) { hook_ran->store(true); });
                  Send(probe, Note{"ready"});
                  co_await v.Receive<Ping>();
                })
                .value();
        self.Link(victim);
        uint64_t ref = self.Monitor(victim);
        co_await self.Receive<Note>();
        SendExit(victim, ExitReason::Kill());
        ExitSignal sig = co_await self.Receive<ExitSignal>();
        bool at_signal = hook_ran->load();
        Down d = co_await self.Receive<Down>();
        report(absl::StrCat(at_signal, hook_ran->load(), d.ref == ref, sig.reason.ToString()));
      },
      {.trap_exit = true});
  EXPECT_EQ(got, "111killed");
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

ETSMGR_INSTANTIATE_ON_ALL_BACKENDS(ProcessTest);

}  // namespace
}  // namespace etsmgr
