// ManagedTable: a client that initialises once, survives its own restart and the manager's,
// and cleans up on a normal stop.
#include "etsmgr/manager/managed_table.h"

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "etsmgr/process/testing/test_util.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using Counter = ManagedTable<std::string, int64_t>;

struct Bump {};
struct Stop {
  Pid reply_to;
};
struct Value {
  int64_t count;
  bool handled_manager_exit;
};
struct Closed {
  std::string status;
};

// The etscounter_srv pattern: count on Bump, report on Stop (closing the table), and live through
// manager restarts.
Task<void> CounterClient(Process& self, Pid parent) {
  absl::StatusOr<Counter> t = co_await Counter::Open(
      self, Etsmgr(), "counter", TableOptions(),
      [](Table<std::string, int64_t>& fresh) { return fresh.Insert("count", 0); });
  if (!t.ok()) {
    ADD_FAILURE() << t.status();
    co_return;
  }
  bool handled = false;
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> mine = co_await t->Handle(self, m);
    EXPECT_TRUE(mine.ok()) << mine.status();
    if (mine.ok() && *mine) {
      handled = true;
      continue;
    }
    if (m.Is<Bump>()) {
      EXPECT_TRUE(t->table().UpdateCounter("count", 1).ok());
      Send(parent, Value{*t->table().Get("count").value(), handled});
    } else if (const Stop* stop = m.As<Stop>()) {
      absl::Status closed = co_await t->Close(self);
      Send(stop->reply_to, Closed{closed.ToString()});
      co_return;
    }
  }
}

TEST(ManagedTableTest, InitialisesOnceAndSurvivesRestarts) {
  RuntimeOptions options;
  options.schedulers = 2;
  auto node = Node::Create(options).value();
  ASSERT_TRUE(StartManager(*node).ok());
  RunInProcess(*node, [](Process& self) -> Task<void> {
    Pid me = self.self();
    Pid client = self.Spawn([me](Process& p) { return CounterClient(p, me); }).value();
    Send(client, Bump{});
    Value v1 = co_await self.Receive<Value>();
    EXPECT_EQ(v1.count, 1) << "the first count";
    // The client is killed and restarted: its table comes back, not re-initialised.
    SendExit(client, ExitReason::Kill());
    co_await AwaitDown(self, client);
    client = self.Spawn([me](Process& p) { return CounterClient(p, me); }).value();
    Send(client, Bump{});
    Value v2 = co_await self.Receive<Value>();
    EXPECT_EQ(v2.count, 2) << "the count after the client's restart (not re-initialised)";
    // The manager is killed: the client re-adds its table and goes on counting.
    Etsmgr mgr;
    Pid manager = self.node().Whereis(mgr.server_name());
    SendExit(manager, ExitReason::Kill());
    co_await AwaitDown(self, manager);
    absl::StatusOr<Pid> back = co_await mgr.WaitForManager(self, absl::Now() + absl::Seconds(10));
    EXPECT_TRUE(back.ok()) << "the manager is back: " << back.status();
    Send(client, Bump{});
    Value v3 = co_await self.Receive<Value>();
    EXPECT_EQ(v3.count, 3) << "the count after the manager's restart";
    EXPECT_TRUE(v3.handled_manager_exit) << "the client re-added its table";
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    EXPECT_TRUE(info.ok() && info->tables.size() == 1 && info->tables[0].client == client)
        << "the restarted manager lists the table with its client";
    // A normal stop: del_table and delete.
    Send(client, Stop{me});
    Closed closed = co_await self.Receive<Closed>();
    absl::StatusOr<ManagerInfo> after = co_await mgr.Info(self);
    EXPECT_EQ(closed.status, "OK") << "the client's close (del_table and delete)";
    CO_ASSERT_OK(after, "info after the close");
    EXPECT_EQ(after->tables.size(), 0u) << "entries after the close";
    EXPECT_EQ(after->counters.tables_lost, 0u) << "tables lost";
  });
}

}  // namespace
}  // namespace etsmgr
