// The OTP exit-signal clause table: reason x trapping x linked, one case per row.
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/node.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

enum class How { kReturn, kThrow, kExitShutdown, kExitCustom, kKilledFromOutside, kExitNormal };

std::string HowName(How h) {
  switch (h) {
    case How::kReturn:
      return "Return";
    case How::kThrow:
      return "Throw";
    case How::kExitShutdown:
      return "ExitShutdown";
    case How::kExitCustom:
      return "ExitCustom";
    case How::kKilledFromOutside:
      return "KilledFromOutside";
    case How::kExitNormal:
      return "ExitNormal";
  }
  return "?";
}

// The reason linked processes see.
ExitReason SeenReason(How h) {
  switch (h) {
    case How::kReturn:
    case How::kExitNormal:
      return ExitReason::Normal();
    case How::kThrow:
      return ExitReason::Exception("boom");
    case How::kExitShutdown:
      return ExitReason::Shutdown();
    case How::kExitCustom:
      return ExitReason::Custom("custom");
    case How::kKilledFromOutside:
      return ExitReason::Killed();
  }
  return ExitReason::Normal();
}

struct Go {};

Task<void> Victim(Process& self, How how) {
  co_await self.Receive<Go>();
  switch (how) {
    case How::kReturn:
      co_return;
    case How::kThrow:
      throw std::runtime_error("boom");
    case How::kExitShutdown:
      co_await self.Exit(ExitReason::Shutdown());
      break;
    case How::kExitCustom:
      co_await self.Exit(ExitReason::Custom("custom"));
      break;
    case How::kExitNormal:
      co_await self.Exit(ExitReason::Normal());
      break;
    case How::kKilledFromOutside:
      co_await self.Receive<Go>();  // Killed while waiting here.
      break;
  }
}

struct Outcome {
  std::string text;
};

// What the observer reported (it survived) or how it died (the probe's monitor `ref`).
Task<std::string> AwaitOutcome(Process& probe, uint64_t ref) {
  std::optional<Message> m = co_await probe.ReceiveIf(
      [ref](const Envelope& e) {
        return e.Is<Outcome>() || (e.Is<Down>() && e.As<Down>()->ref == ref);
      },
      absl::Now() + absl::Seconds(10));
  if (!m) co_return "probe timeout";
  if (Outcome* o = m->As<Outcome>()) co_return "alive, " + o->text;
  co_return "died " + m->As<Down>()->reason.ToString();
}

// The observer links to the victim (or not), traps exits (or not), and the probe watches it
// with a monitor: the result is what the observer received, or how it died.
class ExitTableTest : public ::testing::TestWithParam<std::tuple<How, bool, bool>> {};

TEST_P(ExitTableTest, Clause) {
  auto [how, trapping, linked] = GetParam();
  ExitReason seen = SeenReason(how);
  std::string expected;
  if (!linked) {
    expected = "alive, no signal";
  } else if (trapping) {
    expected = "alive, signal " + seen.ToString();
  } else if (seen.is_normal()) {
    expected = "alive, no signal";
  } else {
    expected = "died " + seen.ToString();
  }
  auto node = Node::Create({.schedulers = 2}).value();
  RunInProcess(
      *node,
      [how = how, linked = linked, trapping = trapping, expected](Process& probe) -> Task<void> {
        Pid victim = probe.Spawn([how](Process& self) { return Victim(self, how); }).value();
        Pid observer =
            probe
                .Spawn(
                    [victim, linked, probe_pid = probe.self()](Process& self) -> Task<void> {
                      if (linked) self.Link(victim);
                      // The victim's link signal is sent before its Down, and signals between two
                      // processes keep their order: once Down is here, any exit signal is too.
                      uint64_t watch = self.Monitor(victim);
                      Send(probe_pid, Go{});  // Linked (or not): let the victim go.
                      co_await self.ReceiveIf([watch](const Envelope& e) {
                        return e.Is<Down>() && e.As<Down>()->ref == watch;
                      });
                      std::optional<ExitSignal> sig =
                          co_await self.ReceiveFor<ExitSignal>(absl::ZeroDuration());
                      Send(probe_pid, Outcome{sig ? absl::StrCat("signal ", sig->reason.ToString())
                                                  : "no signal"});
                    },
                    {.trap_exit = trapping})
                .value();
        uint64_t ref = probe.Monitor(observer);
        co_await probe.Receive<Go>();
        if (how == How::kKilledFromOutside) {
          Send(victim, Go{});
          SendExit(victim, ExitReason::Kill());
        } else {
          Send(victim, Go{});
        }
        std::string outcome = co_await AwaitOutcome(probe, ref);
        EXPECT_EQ(outcome, expected) << "what the observer received, or how it died";
      });
}

INSTANTIATE_TEST_SUITE_P(AllClauses, ExitTableTest,
                         ::testing::Combine(::testing::Values(How::kReturn, How::kThrow,
                                                              How::kExitShutdown, How::kExitCustom,
                                                              How::kKilledFromOutside,
                                                              How::kExitNormal),
                                            ::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return HowName(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_Trapping" : "_NotTrapping") +
                                  (std::get<2>(info.param) ? "_Linked" : "_Unlinked");
                         });

// exit(pid, reason) sent directly (not through a link).
class DirectExitTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(DirectExitTest, Clause) {
  auto [reason_index, trapping] = GetParam();
  ExitReason reasons[] = {ExitReason::Normal(), ExitReason::Shutdown(), ExitReason::Kill(),
                          ExitReason::Custom("bye")};
  ExitReason reason = reasons[reason_index];
  std::string expected;
  if (reason.is_kill()) {
    expected = "died killed";
  } else if (trapping) {
    expected = "alive, signal " + reason.ToString() + " from probe=yes";
  } else if (reason.is_normal()) {
    expected = "alive, no signal";
  } else {
    expected = "died " + reason.ToString();
  }
  auto node = Node::Create({.schedulers = 2}).value();
  RunInProcess(*node, [reason, trapping = trapping, expected](Process& probe) -> Task<void> {
    Pid target = probe
                     .Spawn(
                         [probe_pid = probe.self()](Process& self) -> Task<void> {
                           Send(probe_pid, Go{});
                           // The probe sends the exit signal, then Go: in order, so once Go is
                           // here the signal has acted.
                           co_await self.Receive<Go>();
                           std::optional<ExitSignal> sig =
                               co_await self.ReceiveFor<ExitSignal>(absl::ZeroDuration());
                           Send(probe_pid,
                                Outcome{sig ? "signal " + sig->reason.ToString() + " from probe=" +
                                                  (sig->from == probe_pid ? "yes" : "no")
                                            : "no signal"});
                         },
                         {.trap_exit = trapping})
                     .value();
    uint64_t ref = probe.Monitor(target);
    co_await probe.Receive<Go>();
    SendExit(target, reason, probe.self());
    Send(target, Go{});
    std::string outcome = co_await AwaitOutcome(probe, ref);
    EXPECT_EQ(outcome, expected) << "what the target received, or how it died";
  });
}

INSTANTIATE_TEST_SUITE_P(AllClauses, DirectExitTest,
                         ::testing::Combine(::testing::Range(0, 4), ::testing::Bool()));

struct Crash {};

// An exit signal the process took in before its body returned (here the flush of a Demonitor,
// after an executor-level wait at which no signal acts) is its exit reason, as in Erlang, where
// the signal would have ended it: a crash along a link goes on to the process's own watchers.
// It was reported as a normal end, and the crash stopped there.
TEST(ExitSemanticsTest, ASignalTakenInBeforeTheBodyReturnsIsTheExitReason) {
  RuntimeOptions options;
  options.deterministic = true;
  options.seed = 11;
  auto node = Node::Create(options).value();
  RunInProcess(*node, [](Process& self) -> Task<void> {
    const Pid watcher = self.self();  // alive throughout: its monitor is flushed below
    Pid middle = self.Spawn([watcher](Process& p) -> Task<void> {
                       Pid crasher = p.SpawnLink([](Process& q) -> Task<void> {
                                        co_await q.Receive<Crash>();
                                        throw std::runtime_error("boom");
                                      }).value();
                       const uint64_t ref = p.Monitor(watcher);
                       Send(crasher, Crash{});
                       co_await Sleep(absl::Milliseconds(5));  // virtual: the crasher runs first
                       p.Demonitor(ref, /*flush=*/true);       // takes the link's signal in
                     })
                     .value();
    ExitReason why = co_await AwaitDown(self, middle);
    EXPECT_FALSE(why.is_normal()) << why.ToString();
    EXPECT_NE(why.ToString().find("boom"), std::string::npos) << why.ToString();
  });
}

}  // namespace
}  // namespace etsmgr
