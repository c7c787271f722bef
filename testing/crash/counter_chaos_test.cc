// A managed counter under crash injection: the counter and the manager are killed at seeded
// random points while a driver keeps incrementing. Invariants: every acknowledged increment
// survives (acknowledged values strictly increase, the final count is at least the number of
// acknowledgements), and no table is lost. Deterministic mode over many seeds (a failing seed
// replays exactly), then on two real schedulers.
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/process/supervisor.h"
#include "gtest/gtest.h"
#include "testing/crash/chaos.h"

namespace etsmgr {
namespace {

constexpr char kInst[] = "chaos";
constexpr char kCounter[] = "chaos_counter";

struct Incr {};
struct FaultsDone {
  std::vector<testing::FaultEvent> events;
};

Task<void> CounterBody(Process& self) {
  auto t = co_await ManagedTable<std::string, int64_t>::Open(
      self, Etsmgr(kInst), "count", TableOptions(),
      [](Table<std::string, int64_t>& fresh) { return fresh.Insert("n", 0); });
  if (!t.ok()) throw std::runtime_error(std::string(t.status().message()));
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> mine = co_await t->Handle(self, m);
    if (!mine.ok()) throw std::runtime_error(std::string(mine.status().message()));
    if (*mine) continue;
    if (const auto* r = m.As<CallRequest<Incr>>()) {
      absl::StatusOr<int64_t> n = t->table().UpdateCounter("n", 1);
      if (!n.ok()) ADD_FAILURE() << "counter " << self.self() << ": " << n.status();
      ReplyTo(*r, n.ok() ? *n : int64_t{-1});
    } else if (const auto* x = m.As<ExitSignal>()) {
      // Our only other link is the supervisor: its exit (a shutdown) ends us, as in OTP.
      ExitReason reason = x->reason;
      co_await self.Exit(std::move(reason));
    }
  }
}

struct Outcome {
  std::string error;  // Empty when every invariant held.
  int64_t acks = 0;
  int counter_kills = 0;  // Faults that hit a live process, per target.
  int manager_kills = 0;
};

Task<void> Driver(Process& self, uint64_t seed, std::shared_ptr<Outcome> out) {
  std::vector<ChildSpec> children;
  children.push_back(ManagerChildSpec(kInst));
  ChildSpec counter;
  counter.id = "counter";
  counter.start = [](Process& sup) -> Task<absl::StatusOr<Pid>> {
    SpawnOptions options;
    options.name = kCounter;
    co_return sup.SpawnLink(CounterBody, options);
  };
  children.push_back(std::move(counter));
  SupervisorFlags flags;
  flags.intensity = 1000;
  absl::StatusOr<Pid> sup = co_await StartSupervisorLink(self, flags, std::move(children));
  if (!sup.ok()) co_return void(out->error = sup.status().ToString());

  Pid me = self.self();
  testing::FaultSchedule schedule;
  schedule.seed = seed;
  schedule.faults = 12;
  schedule.targets = {kCounter, InstToName("etsmgr_srv", kInst)};
  self.Spawn([me, schedule](Process& p) -> Task<void> {
        std::vector<testing::FaultEvent> events = co_await testing::RunFaults(p, schedule);
        Send(me, FaultsDone{std::move(events)});
      })
      .value();

  int64_t last = 0;
  int64_t unacked = 0;
  bool faults_done = false;
  std::vector<testing::FaultEvent> events;
  for (int round = 0; round < 5000 && !(faults_done && out->acks > 0 && round > 0); ++round) {
    std::optional<FaultsDone> done = co_await self.ReceiveFor<FaultsDone>(absl::ZeroDuration());
    if (done) {
      faults_done = true;
      events = std::move(done->events);
    }
    std::optional<Pid> counter_pid =
        co_await self.WaitForRegistered(kCounter, Deadline(absl::Seconds(10)));
    if (!counter_pid) co_return void(out->error = "the counter never came back");
    absl::StatusOr<int64_t> n =
        co_await Call<int64_t>(self, *counter_pid, Incr{}, absl::Seconds(5));
    if (n.ok()) {
      if (*n <= last) {
        co_return void(out->error = absl::StrCat("count went from ", last, " to ", *n, " after ",
                                                 out->acks, " acknowledged increments"));
      }
      last = *n;
      ++out->acks;
    } else {
      ++unacked;  // The counter died with the request: it may or may not have counted.
    }
    co_await self.Sleep(absl::Microseconds(200));  // Pace the load (virtual time in det. mode).
  }
  if (!faults_done) co_return void(out->error = "the fault schedule did not finish");
  for (const auto& e : events) {
    if (!e.victim.valid()) continue;
    ++(e.target == kCounter ? out->counter_kills : out->manager_kills);
  }
  // The final value, read from the table itself (not from the library's own loss counter):
  // every acknowledged increment is in it, and at most the unacknowledged ones on top.
  Etsmgr mgr(kInst);
  absl::StatusOr<Pid> m = co_await mgr.WaitForManager(self, Deadline(absl::Seconds(10)));
  if (!m.ok()) co_return void(out->error = m.status().ToString());
  std::shared_ptr<manager_internal::Instance> st =
      manager_internal::FindInstance(self.node(), kInst);
  AnyTable table;
  {
    ExclusiveLock lock(st->mu);
    const manager_internal::Entry* e = st->dir.Find("count");
    if (e != nullptr) table = e->table;
  }
  absl::StatusOr<Table<std::string, int64_t>> typed = Table<std::string, int64_t>::Attach(table);
  absl::StatusOr<std::optional<int64_t>> final_value =
      typed.ok() ? typed->Get("n") : absl::StatusOr<std::optional<int64_t>>(typed.status());
  if (!final_value.ok() || !final_value->has_value()) {
    co_return void(out->error =
                       absl::StrCat("the counter's table is gone or empty: ",
                                    final_value.ok() ? "empty" : final_value.status().ToString()));
  }
  int64_t n = **final_value;
  if (n < last || n > out->acks + unacked) {
    co_return void(out->error =
                       absl::StrCat("final count ", n, " outside [", last, ", ",
                                    out->acks + unacked, "] (acknowledged up to ", last, ")"));
  }
  absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
  if (!info.ok()) co_return void(out->error = info.status().ToString());
  if (info->counters.tables_lost != 0) co_return void(out->error = "a table was lost");
  absl::Status stopped = co_await StopSupervisor(self, *sup);
  if (!stopped.ok()) out->error = stopped.ToString();
}

std::shared_ptr<Outcome> RunOnce(bool deterministic, uint64_t seed) {
  RuntimeOptions options;
  options.deterministic = deterministic;
  options.seed = seed;
  options.schedulers = 2;
  auto node = Node::Create(options).value();
  auto out = std::make_shared<Outcome>();
  auto finished = std::make_shared<std::promise<void>>();
  node->Spawn(
          [seed, out, finished](Process& self) -> Task<void> {
            co_await Driver(self, seed, out);
            finished->set_value();
          },
          {.trap_exit = true})
      .value();
  if (deterministic) node->runtime().RunUntilIdle();
  if (finished->get_future().wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    out->error = "did not finish";
  }
  return out;
}

TEST(CounterChaosTest, DeterministicSeeds) {
  SetMinLogLevel(LogLevel::kWarning);  // Hundreds of restarts: keep the log readable.
  int counter_kills = 0;
  int manager_kills = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::shared_ptr<Outcome> out = RunOnce(true, seed);
    ASSERT_EQ(out->error, "") << "seed " << seed << " (replay with RuntimeOptions::seed)";
    EXPECT_GT(out->acks, 0) << "seed " << seed;
    counter_kills += out->counter_kills;
    manager_kills += out->manager_kills;
  }
  // Both kinds of target must actually be hit, many times.
  EXPECT_GT(counter_kills, 40);
  EXPECT_GT(manager_kills, 40);
}

TEST(CounterChaosTest, TwoSchedulers) {
  SetMinLogLevel(LogLevel::kWarning);
  int counter_kills = 0;
  int manager_kills = 0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    std::shared_ptr<Outcome> out = RunOnce(false, seed);
    ASSERT_EQ(out->error, "") << "seed " << seed;
    EXPECT_GT(out->acks, 0) << "seed " << seed;
    counter_kills += out->counter_kills;
    manager_kills += out->manager_kills;
  }
  EXPECT_GT(counter_kills, 0);
  EXPECT_GT(manager_kills, 0);
}

}  // namespace
}  // namespace etsmgr
