// What the process layer owes the layers above under failure: names and waiters across a death,
// exit hooks, process_info from other threads, supervisors that fail instead of hanging, checked
// flags, a supervisor killed while it stops a child, Node::Run, and the clock deadlines use.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/executor/wait_slot.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

struct Go {};

std::unique_ptr<Node> Deterministic(uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = true;
  options.seed = seed;
  return Node::Create(options).value();
}

// A waiter woken by a registration whose process died before the waiter looked must still wake
// for the next registration of the name (it re-joins the waiter list).
TEST(RobustnessTest, WaitForRegisteredSurvivesARegisteredThenDeadName) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto node = Deterministic(seed);
    absl::Status ran = node->Run([seed](Process& self) -> Task<void> {
      Pid me = self.self();
      Pid waiter = self.Spawn([me](Process& p) -> Task<void> {
                         std::optional<Pid> found =
                             co_await p.WaitForRegistered("n", Deadline(absl::Seconds(10)));
                         Send(me, Go{});
                         (void)found;
                       })
                       .value();
      co_await self.Sleep(absl::Microseconds(1));  // The waiter waits.
      // Registered, and dead before the waiter runs.
      Pid brief = self.Spawn([](Process&) -> Task<void> { co_return; }, {.name = "n"}).value();
      co_await AwaitDown(self, brief);
      EXPECT_FALSE(self.node().Whereis("n").valid());  // A dead process has no name.
      Pid lasting =
          self.Spawn([](Process& p) -> Task<void> { co_await p.Receive<Go>(); }, {.name = "n"})
              .value();
      std::optional<Go> woke = co_await self.ReceiveFor<Go>(absl::Seconds(5));
      Send(lasting, Go{});
      (void)waiter;
      EXPECT_TRUE(woke.has_value())
          << "seed " << seed << ": the waiter woke for the second registration";
    });
    ASSERT_TRUE(ran.ok()) << ran;
  }
}

TEST(RobustnessTest, KeyedExitHooksRunOnceAndNoneCanBeAddedOnceExiting) {
  auto node = Node::Create({.schedulers = 2}).value();
  auto runs = std::make_shared<std::atomic<int>>(0);
  auto late = std::make_shared<std::atomic<int>>(-1);
  static const int kKey = 0;
  Pid p = node->Spawn([runs, late](Process& self) -> Task<void> {
                process_internal::ProcessControl* me =
                    process_internal::ProcessAccess::Control(self);
                auto hook = [runs, late, me](const Pid&, const ExitReason&) {
                  ++*runs;
                  // Too late: the exit procedure has taken the hooks to run.
                  *late = me->AddExitHook([](const Pid&, const ExitReason&) {}, nullptr) ? 1 : 0;
                };
                EXPECT_TRUE(me->AddExitHook(hook, &kKey));
                EXPECT_TRUE(me->AddExitHook(hook, &kKey));  // Already there: still true.
                co_await self.Receive<Go>();
              })
              .value();
  Send(p, Go{});
  AwaitDeath(*node, p);
  EXPECT_EQ(runs->load(), 1);
  EXPECT_EQ(late->load(), 0);
}

// process_info from other threads while the process receives and flips trap_exit (tsan: the
// owner-written fields are read safely).
TEST(RobustnessTest, ProcessInfoFromOtherThreadsWhileTheProcessRuns) {
  auto node = Node::Create({.schedulers = 2}).value();
  Pid p = node->Spawn([](Process& self) -> Task<void> {
                for (int i = 0; i < 20000; ++i) {
                  co_await self.Receive<Go>();
                  self.set_trap_exit(i % 2 == 0);
                }
              })
              .value();
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      absl::StatusOr<ProcessInfo> info = GetProcessInfo(p);
      if (info.ok()) {
        EXPECT_LE(info->mailbox_length, 20000u);
      }
    }
  });
  for (int i = 0; i < 20000; ++i) Send(p, Go{});
  AwaitDeath(*node, p);
  stop = true;
  reader.join();
}

// A supervisor killed before it acknowledged its start: the starter gets Aborted, never a hang or
// an exception, from a process and from a plain thread.
ChildSpec KillsItsSupervisor() {
  ChildSpec spec;
  spec.id = "assassin";
  spec.start = [](Process& sup) -> Task<absl::StatusOr<Pid>> {
    SendExit(sup.self(), ExitReason::Kill());
    co_await sup.Sleep(absl::Milliseconds(1));  // Dies here.
    co_return absl::InternalError("unreachable");
  };
  return spec;
}

TEST(RobustnessTest, ASupervisorKilledBeforeItStartedIsAnErrorNotAHang) {
  auto node = Node::Create({.schedulers = 2}).value();
  absl::StatusOr<Pid> plain = StartSupervisor(*node, {}, {KillsItsSupervisor()});
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kAborted) << plain.status();
  RunInProcess(*node,
               [](Process& self) -> Task<void> {
                 std::vector<ChildSpec> children = {KillsItsSupervisor()};
                 absl::StatusOr<Pid> sup =
                     co_await StartSupervisorLink(self, SupervisorFlags{}, std::move(children));
                 EXPECT_EQ(sup.status().code(), absl::StatusCode::kAborted)
                     << "StartSupervisorLink from a process: " << sup.status();
               },
               {.trap_exit = true});
}

TEST(RobustnessTest, BlockingFormsRefuseSchedulerThreadsAndDriveDeterministicRuntimes) {
  auto node = Node::Create({.schedulers = 1}).value();
  RunInProcess(*node, [](Process& self) {
    absl::StatusOr<Pid> sup = StartSupervisor(self.node(), {}, {});
    EXPECT_EQ(sup.status().code(), absl::StatusCode::kFailedPrecondition)
        << "the blocking StartSupervisor from a scheduler thread: " << sup.status();
  });
  // Deterministic: the calling thread drives the runtime until the supervisor is up.
  auto det = Deterministic(7);
  absl::StatusOr<Pid> sup = StartSupervisor(*det, {}, {});
  EXPECT_TRUE(sup.ok()) << sup.status();
}

// A Node destroyed while a Node::Run is still waiting for its process (here the deterministic
// runtime had nothing left to run: Run answered Internal and left its waiting root behind). The
// waiting root is destroyed before the process, whose end then notifies the wait: that Notify
// wrote into the destroyed root's frame (ASan: heap-use-after-free in WaitSlot::Notify).
TEST(RobustnessTest, ANodeDestroyedWhileARunWaitsForItsProcess) {
  auto det = Deterministic(3);
  absl::Status st = det->Run([](Process& self) -> Task<absl::Status> {
    co_await self.Receive<Go>();  // never sent
    co_return absl::OkStatus();
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  det.reset();
  // Threaded: a thread blocked in Run while the node shuts down.
  auto node = Node::Create({.schedulers = 1}).value();
  std::promise<void> running;
  std::future<void> started = running.get_future();
  absl::Status threaded;
  std::thread waiter([&] {
    threaded = node->Run([&running](Process& self) -> Task<absl::Status> {
      running.set_value();
      co_await self.Receive<Go>();
      co_return absl::OkStatus();
    });
  });
  ASSERT_EQ(started.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  node->Shutdown();
  waiter.join();
  EXPECT_FALSE(threaded.ok());
  node.reset();
}

struct Unwelcome {};
struct Caught {};

// A receive predicate that throws on a message that arrives while its process waits throws out of
// the body's co_await, as when the message was already there: uncaught, the process dies of it;
// caught, the body goes on. It threw out of the scheduler's noexcept resumption: std::terminate
// of the whole program.
TEST(RobustnessTest, AReceivePredicateThatThrowsKillsOnlyItsProcess) {
  auto det = Deterministic(5);
  RunInProcess(*det, [](Process& self) -> Task<void> {
    Pid picky = self.Spawn([](Process& p) -> Task<void> {
                      co_await p.ReceiveIf([](const Envelope& e) -> bool {
                        if (e.Is<Unwelcome>()) throw std::runtime_error("picky predicate");
                        return false;
                      });
                    })
                    .value();
    const Pid parent = self.self();
    Pid catcher = self.Spawn([parent](Process& p) -> Task<void> {
                        try {
                          co_await p.ReceiveIf([](const Envelope& e) -> bool {
                            if (e.Is<Unwelcome>()) throw std::runtime_error("picky predicate");
                            return false;
                          });
                        } catch (const std::runtime_error&) {
                          Send(parent, Caught{});
                        }
                      })
                      .value();
    co_await Sleep(absl::Milliseconds(1));  // virtual time: both wait by then
    Send(picky, Unwelcome{});
    ExitReason why = co_await AwaitDown(self, picky);
    EXPECT_NE(why.ToString().find("picky predicate"), std::string::npos) << why.ToString();
    Send(catcher, Unwelcome{});
    std::optional<Caught> caught = co_await self.ReceiveFor<Caught>(absl::Seconds(10));
    EXPECT_TRUE(caught.has_value()) << "the body caught its predicate's exception";
  });
}

TEST(RobustnessTest, SupervisorFlagsAreChecked) {
  auto node = Node::Create({.schedulers = 1}).value();
  for (SupervisorFlags flags :
       {SupervisorFlags{.intensity = -1}, SupervisorFlags{.period = absl::ZeroDuration()},
        SupervisorFlags{.period = -absl::Seconds(1)},
        SupervisorFlags{.period = absl::InfiniteDuration()}}) {
    absl::StatusOr<Pid> sup = StartSupervisor(*node, flags, {});
    EXPECT_EQ(sup.status().code(), absl::StatusCode::kInvalidArgument) << sup.status();
    RunInProcess(*node,
                 [flags](Process& self) -> Task<void> {
                   std::vector<ChildSpec> children = {SupervisorChild("inner", flags, {})};
                   absl::StatusOr<Pid> outer =
                       co_await StartSupervisorLink(self, SupervisorFlags{}, std::move(children));
                   EXPECT_EQ(outer.status().code(), absl::StatusCode::kInvalidArgument)
                       << "a nested supervisor with bad flags: " << outer.status();
                 },
                 {.trap_exit = true});
  }
}

// A supervisor killed while it waits for a child to shut down: the child is still linked to it,
// so it hears of the death (OTP's shape); it is never left alive and unlinked.
struct AskedToStop {};
TEST(RobustnessTest, ASupervisorKilledWhileStoppingAChildLeavesItLinked) {
  auto node = Node::Create({.schedulers = 2}).value();
  RunInProcess(*node,
               [](Process& self) -> Task<void> {
                 Pid me = self.self();
                 auto child = std::make_shared<Pid>();
                 ChildSpec stubborn;
                 stubborn.id = "stubborn";
                 stubborn.shutdown = absl::Seconds(600);
                 stubborn.start = [me, child](Process& sup) -> Task<absl::StatusOr<Pid>> {
                   Pid parent = sup.self();
                   absl::StatusOr<Pid> pid = sup.SpawnLink(
                       [parent, me](Process& p) -> Task<void> {
                         // Ignores the shutdown request; exits when its supervisor dies.
                         while (true) {
                           ExitSignal x = co_await p.Receive<ExitSignal>();
                           if (x.from != parent) continue;
                           if (x.reason.kind() == ExitReason::Kind::kShutdown) {
                             Send(me, AskedToStop{});
                             continue;
                           }
                           co_return;
                         }
                       },
                       {.trap_exit = true});
                   if (pid.ok()) *child = *pid;
                   co_return pid;
                 };
                 std::vector<ChildSpec> children = {stubborn};
                 absl::StatusOr<Pid> sup = co_await StartSupervisor(
                     self, SupervisorFlags{}, std::move(children), SpawnOptions());
                 CO_ASSERT_OK(sup, "start the supervisor");
                 Pid sup_pid = *sup;
                 // The supervisor asks the child to stop and waits (600 s) for it.
                 self.Spawn([sup_pid](Process& p) -> Task<void> {
                       (void)co_await TerminateChild(p, sup_pid, "stubborn", absl::Seconds(600));
                     })
                     .value();
                 co_await self.Receive<AskedToStop>();
                 SendExit(sup_pid, ExitReason::Kill());
                 ExitReason r = co_await AwaitDown(self, *child);
                 EXPECT_EQ(r.ToString(), "normal")
                     << "the child heard of its supervisor's death through the link";
               },
               {.trap_exit = true});
}

// Deadlines follow the deterministic clock: Now() is virtual time there, not the wall clock.
TEST(RobustnessTest, NowAndDeadlineFollowTheDeterministicClock) {
  auto node = Deterministic(1);
  absl::Status ran = node->Run([](Process& self) -> Task<void> {
    absl::Time t0 = Now();
    EXPECT_LT(t0, absl::Now() - absl::Hours(24 * 365));  // Virtual: near the epoch.
    EXPECT_EQ(Deadline(absl::Seconds(3)) - t0, absl::Seconds(3));
    std::optional<Message> none =
        co_await self.ReceiveIf([](const Envelope&) { return false; }, Deadline(absl::Seconds(3)));
    EXPECT_FALSE(none.has_value()) << "nothing matches: the receive times out";
    EXPECT_EQ(absl::ToInt64Seconds(Now() - t0), 3) << "virtual seconds the receive waited";
  });
  ASSERT_TRUE(ran.ok()) << ran;
  EXPECT_GT(Now(), absl::Now() - absl::Seconds(5));  // Off the runtime: the wall clock.
}

// A WaitSlot awaited off any scheduler does not suspend (nothing could resume it): it answers
// as with a deadline already past, instead of crashing.
Task<bool> WaitOn(WaitSlot& slot) { co_return co_await slot.Wait(absl::Now() + absl::Seconds(1)); }

// Runs `t` on this (plain) thread; it must finish without suspending.
bool RunHere(Task<bool>& t) {
  t.handle().resume();
  EXPECT_TRUE(t.done());
  return t.done() && t.handle().promise().take_result();
}

// The test helper fails the test, naming why, when its body does not finish in time (and kills
// it) or when its process dies first; it never hangs.
void RunsPastItsLimit() {
  auto node = Node::Create({.schedulers = 1}).value();
  RunInProcess(
      *node, [](Process& self) -> Task<void> { co_await self.Receive<Go>(); }, {},
      absl::Milliseconds(20));
}
void DiesBeforeItReturns() {
  auto node = Node::Create({.schedulers = 1}).value();
  RunInProcess(*node,
               [](Process& self) -> Task<void> { co_await self.Exit(ExitReason::Custom("gone")); });
}
TEST(RobustnessTest, RunInProcessFailsTheTestInsteadOfHanging) {
  EXPECT_NONFATAL_FAILURE(RunsPastItsLimit(), "the body did not finish within 20ms");
  EXPECT_NONFATAL_FAILURE(DiesBeforeItReturns(), "the body did not return");
}

TEST(RobustnessTest, AWaitSlotAwaitedOffASchedulerAnswersInsteadOfCrashing) {
  WaitSlot slot;
  Task<bool> t = WaitOn(slot);
  EXPECT_FALSE(RunHere(t));
  slot.Notify();
  Task<bool> again = WaitOn(slot);
  EXPECT_TRUE(RunHere(again));
}

}  // namespace
}  // namespace etsmgr
