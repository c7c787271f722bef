// Process races replayed in deterministic mode over many seeds: each seed is one interleaving,
// and a failing seed replays exactly (RuntimeOptions::seed).
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/node.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

constexpr uint64_t kSeeds = 150;

std::unique_ptr<Node> MakeNode(uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = true;
  options.seed = seed;
  return Node::Create(options).value();
}

struct Go {};

struct Result {
  std::vector<std::string> events;
};

// Two linked processes crash at the same time: both die, neither hangs, the watcher sees both.
TEST(DeterministicRacesTest, SimultaneousDeathsOfLinkedProcesses) {
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto node = MakeNode(seed);
    auto result = std::make_shared<Result>();
    ASSERT_TRUE(node->Spawn([result](Process& self) -> Task<void> {
                      auto crasher = [](Process& p) -> Task<void> {
                        co_await p.Receive<Go>();
                        co_await p.Exit(ExitReason::Custom("crash"));
                      };
                      Pid a = self.Spawn(crasher).value();
                      Pid b = self.Spawn(crasher).value();
                      uint64_t ra = self.Monitor(a);
                      uint64_t rb = self.Monitor(b);
                      // A third process links to both, then reports; a and b crash together.
                      Pid linker =
                          self.Spawn([a, b, probe = self.self()](Process& p) -> Task<void> {
                                p.Link(a);
                                p.Link(b);
                                Send(probe, Go{});
                                co_await p.Receive<Go>();
                              })
                              .value();
                      uint64_t rl = self.Monitor(linker);
                      co_await self.Receive<Go>();
                      Send(a, Go{});
                      Send(b, Go{});
                      for (int i = 0; i < 3; ++i) {
                        Down d = co_await self.Receive<Down>();
                        result->events.push_back(absl::StrCat(d.ref == ra   ? "a"
                                                              : d.ref == rb ? "b"
                                                              : d.ref == rl ? "l"
                                                                            : "?",
                                                              "=", d.reason.ToString()));
                      }
                    })
                    .ok());
    node->runtime().RunUntilIdle();
    ASSERT_EQ(result->events.size(), 3u) << "seed " << seed;
    std::sort(result->events.begin(), result->events.end());
    EXPECT_EQ(result->events[0], "a=crash") << "seed " << seed;
    EXPECT_EQ(result->events[1], "b=crash") << "seed " << seed;
    EXPECT_EQ(result->events[2], "l=crash") << "seed " << seed;
    EXPECT_EQ(node->process_count(), 0u) << "seed " << seed;
  }
}

// A kill races with link setup: the linker either sees the victim alive (and gets its exit
// signal) or dead (and gets noproc); it always learns of the death exactly once. Both must
// occur across the seeds.
TEST(DeterministicRacesTest, KillDuringLink) {
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto node = MakeNode(seed);
    auto result = std::make_shared<Result>();
    ASSERT_TRUE(
        node->Spawn([result](Process& self) -> Task<void> {
              Pid victim =
                  self.Spawn([](Process& p) -> Task<void> { co_await p.Receive<Go>(); }).value();
              Pid killer = self.Spawn([victim](Process& p) -> Task<void> {
                                 co_await p.Sleep(absl::ZeroDuration());
                                 SendExit(victim, ExitReason::Kill());
                                 co_return;
                               })
                               .value();
              (void)killer;
              self.set_trap_exit(true);
              co_await self.Sleep(absl::ZeroDuration());
              self.Link(victim);
              ExitSignal sig = co_await self.Receive<ExitSignal>();
              std::optional<ExitSignal> second =
                  co_await self.ReceiveFor<ExitSignal>(absl::Seconds(1));
              result->events.push_back(sig.reason.ToString());
              result->events.push_back(second ? "duplicate" : "once");
            })
            .ok());
    node->runtime().RunUntilIdle();
    ASSERT_EQ(result->events.size(), 2u) << "seed " << seed;
    EXPECT_TRUE(result->events[0] == "killed" || result->events[0] == "noproc")
        << "seed " << seed << ": " << result->events[0];
    EXPECT_EQ(result->events[1], "once") << "seed " << seed;
    seen.insert(result->events[0]);
  }
  EXPECT_EQ(seen.size(), 2u) << "only " << *seen.begin() << " ever happened";
}

struct Counter {
  std::shared_ptr<int> destroyed;
  ~Counter() { ++*destroyed; }
};

// A kill races with message delivery to a process in receive: it dies exactly once, its
// destructors run exactly once if it ever ran (a process killed before its first run never runs,
// as in Erlang), and the monitor fires exactly once. Both cases must occur across the seeds.
TEST(DeterministicRacesTest, KillDuringReceive) {
  int ran = 0;
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto node = MakeNode(seed);
    auto destroyed = std::make_shared<int>(0);
    auto constructed = std::make_shared<int>(0);
    auto result = std::make_shared<Result>();
    ASSERT_TRUE(node->Spawn([result, destroyed, constructed](Process& self) -> Task<void> {
                      Pid victim = self.Spawn([destroyed, constructed](Process& p) -> Task<void> {
                                         ++*constructed;
                                         Counter c{destroyed};
                                         while (true) co_await p.Receive<Go>();
                                       })
                                       .value();
                      uint64_t ref = self.Monitor(victim);
                      Pid sender = self.Spawn([victim](Process& p) -> Task<void> {
                                         for (int i = 0; i < 5; ++i) {
                                           Send(victim, Go{});
                                           co_await p.Sleep(absl::ZeroDuration());
                                         }
                                       })
                                       .value();
                      (void)sender;
                      co_await self.Sleep(absl::ZeroDuration());
                      SendExit(victim, ExitReason::Kill());
                      Down d = co_await self.Receive<Down>();
                      std::optional<Down> again = co_await self.ReceiveFor<Down>(absl::Seconds(1));
                      result->events.push_back(
                          absl::StrCat(d.ref == ref, d.reason.ToString(), again ? " twice" : ""));
                    })
                    .ok());
    node->runtime().RunUntilIdle();
    ASSERT_EQ(result->events.size(), 1u) << "seed " << seed;
    EXPECT_EQ(result->events[0], "1killed") << "seed " << seed;
    EXPECT_EQ(*destroyed, *constructed) << "seed " << seed;
    ran += *constructed;
  }
  EXPECT_GT(ran, 0) << "never killed after it ran";
  EXPECT_LT(ran, static_cast<int>(kSeeds)) << "never killed before it ran";
}

}  // namespace
}  // namespace etsmgr
