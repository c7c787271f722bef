// The Erlang etsmgr test suite ported (start/stop, new_table, add_table, del_table), the conflict
// and error cases, and the instance, info and wait_for_manager contracts.
#include "etsmgr/manager/manager.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/table_file.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

bool Contains(const std::vector<Pid>& v, const Pid& p) {
  return std::find(v.begin(), v.end(), p) != v.end();
}

class ManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RuntimeOptions options;
    options.schedulers = 2;
    node_ = Node::Create(options).value();
  }
  void TearDown() override {
    StopManager(*node_).IgnoreError();
    StopManager(*node_, "aaa").IgnoreError();
  }
  // Runs `body` in a fresh process until it returns (it asserts in place).
  void InProcess(std::function<Task<void>(Process&)> body, SpawnOptions options = {}) {
    RunInProcess(*node_, std::move(body), std::move(options));
  }
  std::unique_ptr<Node> node_;
};

TEST(InstToNameTest, FollowsErlang) {
  EXPECT_EQ(InstToName("etsmgr_srv", "etsmgr"), "etsmgr_srv");
  EXPECT_EQ(InstToName("etsmgr_srv", "aaa"), "etsmgr_srv_aaa");
  EXPECT_EQ(Etsmgr("aaa").supervisor_name(), "etsmgr_sup_aaa");
}

TEST_F(ManagerTest, StartStopDefaultAndNamedInstances) {
  for (std::string inst : {std::string(kDefaultInstance), std::string("aaa")}) {
    SCOPED_TRACE(inst);
    Etsmgr mgr(inst);
    ASSERT_TRUE(StartManager(*node_, inst).ok());
    absl::Status again = StartManager(*node_, inst);
    EXPECT_THAT(again, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kAlreadyStarted));
    EXPECT_NE(again.message().find(inst), std::string::npos) << again;
    EXPECT_TRUE(node_->Whereis(mgr.server_name()).valid());
    EXPECT_TRUE(node_->Whereis(mgr.supervisor_name()).valid());
    EXPECT_TRUE(node_->Whereis(mgr.vault_name()).valid());
    Pid server = node_->Whereis(mgr.server_name());
    ASSERT_TRUE(StopManager(*node_, inst).ok());
    absl::Status stopped = StopManager(*node_, inst);
    EXPECT_THAT(stopped, StatusIs(absl::StatusCode::kNotFound, Atom::kNotStarted));
    EXPECT_FALSE(node_->Whereis(mgr.server_name()).valid());
    EXPECT_FALSE(node_->Whereis(mgr.supervisor_name()).valid());
    EXPECT_FALSE(server.alive());
  }
  // Instances are isolated: both run, each with its own processes.
  ASSERT_TRUE(StartManager(*node_).ok());
  ASSERT_TRUE(StartManager(*node_, "aaa").ok());
  EXPECT_NE(node_->Whereis("etsmgr_srv"), node_->Whereis("etsmgr_srv_aaa"));
}

TEST_F(ManagerTest, NewTable) {
  ASSERT_TRUE(StartManager(*node_).ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "table1");
    CO_ASSERT_OK(r, "new_table(table1)");
    TableInfo info = r->table.Info().value();
    EXPECT_TRUE(r->created) << "created";
    EXPECT_EQ(info.owner, self.self()) << "the caller owns the new table";
    EXPECT_EQ(info.heir, self.node().Whereis("etsmgr_vault")) << "the vault is its heir";
    EXPECT_EQ(r->manager, self.node().Whereis("etsmgr_srv")) << "the reply names the manager";
    EXPECT_EQ(self.mailbox_size(), 0u) << "no stray TableTransfer";
    absl::Status del = co_await mgr.DelTable(self, "table1");
    EXPECT_TRUE(del.ok()) << "del_table(table1): " << del;
    EXPECT_FALSE(r->table.Info().value().heir.valid()) << "no heir after del_table";
    absl::Status deleted = r->table.Delete();
    EXPECT_TRUE(deleted.ok()) << "the owner deletes the table: " << deleted;
  });
}

struct Go {};

std::string TempPath(const std::string& leaf) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", leaf);
}

// A restarted machine finds its data: the first creation loads the file SaveTable wrote; a
// missing file gives an empty table; a damaged file or one of another type is an error that
// creates and overwrites nothing; a table the instance holds comes back without reading the file.
TEST_F(ManagerTest, NewTableFromFileLoadsOnFirstCreationOnly) {
  const std::string path = TempPath("from_file.tab");
  const std::string damaged = TempPath("from_file_damaged.tab");
  std::remove(path.c_str());
  RunInProcess(*node_, [&](Process&) {
    IntTable t = IntTable::New().value();
    for (int64_t k = 0; k < 1000; ++k) t.Insert(k, k * 10).IgnoreError();
    absl::Status st = SaveTable(t, path);
    if (st.ok()) st = SaveTable(t, damaged);
    (void)t.Delete();
    EXPECT_TRUE(st.ok()) << "save the table twice: " << st;
  });
  ASSERT_FALSE(::testing::Test::HasFailure());
  {  // Flip one byte of the body.
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  ASSERT_TRUE(StartManager(*node_).ok());
  auto owner = std::make_shared<std::promise<void>>();
  Pid first = node_
                  ->Spawn([&, owner](Process& self) -> Task<void> {
                    Etsmgr mgr;
                    absl::StatusOr<ManagedTableRef> r =
                        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "t", path);
                    EXPECT_TRUE(r.ok()) << r.status();
                    if (r.ok()) {
                      EXPECT_TRUE(r->loaded);
                      EXPECT_FALSE(r->created);
                      IntTable t = IntTable::Attach(r->table).value();
                      EXPECT_EQ(t.Size().value(), 1000u);
                      EXPECT_EQ(t.Get(999).value().value(), 9990);
                      EXPECT_EQ(t.Info().value().heir, self.node().Whereis(mgr.vault_name()));
                      t.Insert(5000, 1).IgnoreError();  // A write after the load.
                      absl::StatusOr<ManagedTableRef> again =
                          co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "t", path);
                      EXPECT_TRUE(again.ok() && !again->loaded && !again->created);
                    }
                    owner->set_value();
                    co_await self.Receive<Go>();
                  })
                  .value();
  owner->get_future().get();
  std::remove(path.c_str());  // The hand-back must not need the file.
  InProcess([&](Process& self) -> Task<void> {
    Etsmgr mgr;
    SendExit(first, ExitReason::Kill());
    co_await AwaitDown(self, first);
    absl::StatusOr<ManagedTableRef> back =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "t", path);
    CO_ASSERT_OK(back, "the hand-back of t (the file removed)");
    IntTable t = IntTable::Attach(back->table).value();
    EXPECT_FALSE(back->loaded) << "back: not loaded";
    EXPECT_FALSE(back->created) << "back: not created";
    EXPECT_EQ(t.Size().value(), 1001u) << "back: the loaded rows and the write after the load";
    EXPECT_EQ(t.Get(5000).value().value(), 1) << "back: the write after the load is kept";
    // No file: an empty table, to initialise.
    absl::StatusOr<ManagedTableRef> fresh =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "fresh", path);
    CO_ASSERT_OK(fresh, "new_table_from_file of a missing file");
    EXPECT_FALSE(fresh->loaded) << "fresh: not loaded";
    EXPECT_TRUE(fresh->created) << "fresh: created";
    EXPECT_EQ(fresh->table.Info().value().size, 0u) << "fresh: empty";
    // A damaged file: DataLoss naming the file, no table, the file left as it was.
    absl::StatusOr<ManagedTableRef> bad =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "bad", damaged);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << "bad: " << bad.status();
    EXPECT_TRUE(bad.status().message().find(damaged) != std::string::npos)
        << "bad: names the file: " << bad.status();
    EXPECT_TRUE(bad.status().message().find("bad") != std::string::npos)
        << "bad: names the table: " << bad.status();
    // Another key type, or another table type: InvalidArgument.
    std::string good = TempPath("from_file_good.tab");
    IntTable src = IntTable::New().value();
    src.Insert(1, 1).IgnoreError();
    (void)SaveTable(src, good);
    (void)src.Delete();
    absl::StatusOr<ManagedTableRef> types =
        co_await mgr.NewTableFromFile<std::string, int64_t>(self, "types", good);
    EXPECT_EQ(types.status().code(), absl::StatusCode::kInvalidArgument)
        << "a file of another key type: " << types.status();
    TableOptions ordered;
    ordered.type = TableType::kOrderedSet;
    absl::StatusOr<ManagedTableRef> kind =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "kind", good, ordered);
    EXPECT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument)
        << "a file of another table type: " << kind.status();
    // Shared storage with a file, there or not: refused before any segment is made (a loaded
    // table lives on the heap; it silently passed over the segment and lost writes at a kill).
    for (const std::string& file : {good, TempPath("no_such_file.tab")}) {
      TableOptions in_segment;
      in_segment.shared = SharedStorage();
      in_segment.shared->segment = absl::StrCat("etsmgr-from-file-refused-", ::getpid());
      absl::StatusOr<ManagedTableRef> shared =
          co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "shared", file, in_segment);
      EXPECT_EQ(shared.status().code(), absl::StatusCode::kInvalidArgument) << shared.status();
      EXPECT_NE(shared.status().message().find("options.shared"), std::string::npos)
          << shared.status();
      EXPECT_NE(::access(absl::StrCat("/dev/shm/", in_segment.shared->segment).c_str(), F_OK), 0)
          << "a segment was made";
    }
    // A missing directory is not a first start: NotFound, no table.
    absl::StatusOr<ManagedTableRef> no_dir = co_await mgr.NewTableFromFile<int64_t, int64_t>(
        self, "no_dir", TempPath("no/such/dir/t.tab"));
    EXPECT_EQ(no_dir.status().code(), absl::StatusCode::kNotFound)
        << "a missing directory: " << no_dir.status();
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    CO_ASSERT_OK(info, "info");
    EXPECT_EQ(info->tables.size(), 2u) << "managed tables: t and fresh, none of the failures";
  });
  std::ifstream still(damaged, std::ios::binary);
  EXPECT_TRUE(still.good());
}

TEST_F(ManagerTest, AddTable) {
  ASSERT_TRUE(StartManager(*node_).ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr;
    IntTable mine = IntTable::New().value();
    absl::StatusOr<ManagedTableRef> r = co_await mgr.AddTable(self, "table1", mine.any());
    CO_ASSERT_OK(r, "add_table(table1)");
    TableInfo info = mine.Info().value();
    EXPECT_EQ(info.owner, self.self()) << "the caller still owns its added table";
    EXPECT_EQ(info.heir, self.node().Whereis("etsmgr_vault")) << "the vault is its heir";
    // Idempotent: adding again is fine.
    absl::StatusOr<ManagedTableRef> again = co_await mgr.AddTable(self, "table1", mine.any());
    EXPECT_TRUE(again.ok()) << "add_table again: " << again.status();
    absl::Status del = co_await mgr.DelTable(self, "table1");
    EXPECT_TRUE(del.ok()) << "del_table(table1): " << del;
  });
}

TEST_F(ManagerTest, DelTableUnknownAndOneOfSeveralKeepsTheLink) {
  ASSERT_TRUE(StartManager(*node_).ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr;
    absl::Status unknown = co_await mgr.DelTable(self, "table1");
    EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound) << "del_table(unknown): " << unknown;
    EXPECT_TRUE(ErrorAtom(unknown) == Atom::kNoSuchTableEntry) << "del_table(unknown): " << unknown;
    absl::StatusOr<ManagedTableRef> t1 = co_await mgr.NewTable<int64_t, int64_t>(self, "table1");
    absl::StatusOr<ManagedTableRef> t2 = co_await mgr.NewTable<int64_t, int64_t>(self, "table2");
    CO_ASSERT_OK(t1, "new_table(table1)");
    CO_ASSERT_OK(t2, "new_table(table2)");
    Pid manager = t1->manager;
    EXPECT_TRUE(Contains(GetProcessInfo(self.self())->links, manager))
        << "a client is linked to the manager";
    absl::Status d1 = co_await mgr.DelTable(self, "table1");
    EXPECT_TRUE(d1.ok()) << "del_table(table1): " << d1;
    EXPECT_TRUE(Contains(GetProcessInfo(self.self())->links, manager))
        << "still linked while table2 is managed";
    absl::Status d2 = co_await mgr.DelTable(self, "table2");
    EXPECT_TRUE(d2.ok()) << "del_table(table2): " << d2;
    EXPECT_FALSE(Contains(GetProcessInfo(self.self())->links, manager))
        << "unlinked after its last table";
    t1->table.Delete().IgnoreError();
    t2->table.Delete().IgnoreError();
  });
}

// A process that owns a managed table and waits (until Go, or until killed).
Pid SpawnHolder(Node& node, std::string name, std::promise<ManagedTableRef>* made) {
  return node
      .Spawn(
          [name, made](Process& self) -> Task<void> {
            Etsmgr mgr;
            absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, name);
            EXPECT_TRUE(r.ok()) << r.status();
            if (r.ok()) IntTable::Attach(r->table)->Insert(1, 100).IgnoreError();
            made->set_value(r.ok() ? *r : ManagedTableRef{});
            co_await self.Receive<Go>();
          },
          {.trap_exit = true})
      .value();
}

TEST_F(ManagerTest, ConflictsAreErrorsNamingTableAndPids) {
  ASSERT_TRUE(StartManager(*node_).ok());
  std::promise<ManagedTableRef> made;
  Pid holder = SpawnHolder(*node_, "shared", &made);
  ManagedTableRef held = made.get_future().get();
  InProcess([held, holder](Process& self) -> Task<void> {
    Etsmgr mgr;
    // new_table of a name another live process holds: table_exists.
    absl::StatusOr<ManagedTableRef> taken = co_await mgr.NewTable<int64_t, int64_t>(self, "shared");
    EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists)
        << "new_table of a held name: " << taken.status();
    EXPECT_TRUE(taken.status().message().find(holder.ToString()) != std::string::npos)
        << "new_table of a held name names the holder: " << taken.status();
    EXPECT_TRUE(ErrorAtom(taken.status()) == Atom::kTableExists)
        << "new_table of a held name: " << taken.status();
    // Same name with other types: InvalidArgument naming both.
    absl::StatusOr<ManagedTableRef> types =
        co_await mgr.NewTable<std::string, int64_t>(self, "shared");
    EXPECT_EQ(types.status().code(), absl::StatusCode::kInvalidArgument)
        << "new_table with other types: " << types.status();
    EXPECT_TRUE(types.status().message().find("<long, long>") != std::string::npos)
        << "new_table with other types names the table's: " << types.status();
    // add_table of a table we do not own: not_owner.
    absl::StatusOr<ManagedTableRef> not_mine = co_await mgr.AddTable(self, "other", held.table);
    EXPECT_EQ(not_mine.status().code(), absl::StatusCode::kPermissionDenied)
        << "add_table of a table we do not own: " << not_mine.status();
    EXPECT_TRUE(ErrorAtom(not_mine.status()) == Atom::kNotOwner)
        << "add_table of a table we do not own: " << not_mine.status();
    // add_table of another table under a taken name: table_exists.
    IntTable mine = IntTable::New().value();
    absl::StatusOr<ManagedTableRef> clash = co_await mgr.AddTable(self, "shared", mine.any());
    EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists)
        << "add_table under a taken name: " << clash.status();
    // del_table by neither client nor owner: not_owner, naming the caller, client and owner.
    absl::Status del = co_await mgr.DelTable(self, "shared");
    EXPECT_EQ(del.code(), absl::StatusCode::kPermissionDenied)
        << "del_table by neither client nor owner: " << del;
    EXPECT_TRUE(del.message().find(absl::StrCat(
                    "caller ", self.self().ToString(), " is neither the registered client ",
                    holder.ToString(), " nor the owner ", holder.ToString())) != std::string::npos)
        << "del_table by neither client nor owner: " << del;
  });
  Send(holder, Go{});
}

// A table the vault holds goes back to the next client that asks for it (taken over from the
// vault, with its data and no stray TableTransfer), unless a live client is registered for it
// (it gave its table to the vault and may ask for it again): then it is table_exists.
TEST_F(ManagerTest, VaultHeldTableGoesBackOnceToOneClient) {
  ASSERT_TRUE(StartManager(*node_).ok());
  auto made = std::make_shared<std::promise<void>>();
  Pid holder = node_
                   ->Spawn(
                       [made](Process& self) -> Task<void> {
                         Etsmgr mgr;
                         absl::StatusOr<ManagedTableRef> r =
                             co_await mgr.NewTable<int64_t, int64_t>(self, "t");
                         EXPECT_TRUE(r.ok()) << r.status();
                         IntTable::Attach(r->table)->Insert(1, 100).IgnoreError();
                         // Registered to us, held by the vault: as during a hand-back to us.
                         Pid vault = self.node().Whereis(mgr.vault_name());
                         EXPECT_TRUE(r->table.GiveAway(vault, std::string("t")).ok());
                         made->set_value();
                         co_await self.Receive<Go>();
                       },
                       {.trap_exit = true})
                   .value();
  made->get_future().get();
  InProcess([holder](Process& self) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> busy = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_EQ(busy.status().code(), absl::StatusCode::kAlreadyExists)
        << "new_table while the vault holds it for a live client: " << busy.status();
    EXPECT_TRUE(busy.status().message().find("held for its live client " + holder.ToString()) !=
                std::string::npos)
        << "new_table while the vault holds it for a live client: " << busy.status();
    SendExit(holder, ExitReason::Kill());
    co_await AwaitDown(self, holder);
    absl::StatusOr<ManagedTableRef> back = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    CO_ASSERT_OK(back, "new_table after the client died");
    IntTable t = IntTable::Attach(back->table).value();
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    EXPECT_FALSE(back->created) << "taken over, not created";
    EXPECT_EQ(t.Info().value().owner, self.self()) << "the new client owns it";
    EXPECT_EQ(t.Get(1).value().value(), 100) << "with its data";
    CO_ASSERT_OK(info, "info");
    EXPECT_EQ(info->counters.hand_backs, 1u) << "hand_backs";
    EXPECT_EQ(self.mailbox_size(), 0u) << "no stray TableTransfer";
    EXPECT_TRUE((co_await mgr.DelTable(self, "t")).ok());
    EXPECT_TRUE(t.Delete().ok());
  });
}

TEST_F(ManagerTest, BadInputIsInvalidArgument) {
  EXPECT_EQ(StartManager(*node_, "").code(), absl::StatusCode::kInvalidArgument);
  ManagerOptions bad;
  bad.period = absl::ZeroDuration();
  absl::Status st = StartManager(*node_, "x", bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("period"), std::string::npos) << st;
  ASSERT_TRUE(StartManager(*node_).ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> empty = co_await mgr.NewTable<int64_t, int64_t>(self, "");
    EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument)
        << "new_table with an empty name: " << empty.status();
    absl::StatusOr<ManagedTableRef> null = co_await mgr.AddTable(self, "t", AnyTable());
    EXPECT_EQ(null.status().code(), absl::StatusCode::kInvalidArgument)
        << "add_table of a null table: " << null.status();
    absl::Status del = co_await mgr.DelTable(self, "");
    EXPECT_EQ(del.code(), absl::StatusCode::kInvalidArgument)
        << "del_table with an empty name: " << del;
  });
}

TEST_F(ManagerTest, UnavailableAndDeadline) {
  // Never started: Unavailable at once, for every call.
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("nobody");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable)
        << "new_table, never started: " << r.status();
    absl::StatusOr<ManagerInfo> i = co_await mgr.Info(self);
    EXPECT_EQ(i.status().code(), absl::StatusCode::kUnavailable)
        << "info, never started: " << i.status();
    absl::Status d = co_await mgr.DelTable(self, "t");
    EXPECT_EQ(d.code(), absl::StatusCode::kUnavailable) << "del_table, never started: " << d;
    absl::StatusOr<Pid> w = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(20)));
    EXPECT_EQ(w.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "wait_for_manager, never started: " << w.status();
    EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "not_started")
        << "the instance's state";
  });
  // A process merely registered under the manager's name is not a manager.
  Pid mute = node_
                 ->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Go>(); },
                         {.name = "etsmgr_srv_mute"})
                 .value();
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("mute");
    absl::Status r = co_await mgr.DelTable(self, "t");
    EXPECT_EQ(r.code(), absl::StatusCode::kUnavailable)
        << "del_table to a process merely registered under the manager's name: " << r;
  });
  Send(mute, Go{});
  // Stopped: table calls are Unavailable; a waiter waits for the next start until its deadline.
  ASSERT_TRUE(StartManager(*node_, "aaa").ok());
  ASSERT_TRUE(StopManager(*node_, "aaa").ok());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("aaa");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable)
        << "new_table, stopped: " << r.status();
    absl::StatusOr<Pid> w = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(20)));
    EXPECT_EQ(w.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "wait_for_manager, stopped: " << w.status();
    EXPECT_TRUE(w.status().message().find("stopped") != std::string::npos)
        << "wait_for_manager, stopped: " << w.status();
    EXPECT_EQ(std::string(ToString(mgr.State(self.node()))), "stopped") << "the instance's state";
  });
}

TEST_F(ManagerTest, WaitForManagerWakesOnRegistration) {
  auto waiting = std::make_shared<std::promise<void>>();
  std::thread waiter([&] {
    InProcess([waiting](Process& self) -> Task<void> {
      Etsmgr mgr;
      absl::StatusOr<Pid> none = co_await mgr.WaitForManager(self, absl::Now());
      EXPECT_EQ(none.status().code(), absl::StatusCode::kDeadlineExceeded)
          << "wait_for_manager with a past deadline, not started: " << none.status();
      waiting->set_value();
      absl::StatusOr<Pid> pid = co_await mgr.WaitForManager(self, absl::Now() + absl::Seconds(30));
      EXPECT_TRUE(pid.ok()) << "wait_for_manager wakes on the start: " << pid.status();
      if (pid.ok()) {
        EXPECT_EQ(*pid, self.node().Whereis("etsmgr_srv")) << "it yields the manager";
      }
    });
  });
  waiting->get_future().get();
  absl::Status started = StartManager(*node_);
  waiter.join();
  EXPECT_TRUE(started.ok()) << started;
}

TEST_F(ManagerTest, InfoListsTablesAndCounters) {
  ASSERT_TRUE(StartManager(*node_).ok());
  std::promise<ManagedTableRef> made;
  Pid holder = SpawnHolder(*node_, "held", &made);
  made.get_future().get();
  InProcess([holder](Process& self) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    CO_ASSERT_OK(info, "info");
    CO_ASSERT_TRUE(info->tables.size() == 1, "info lists the one managed table");
    const ManagedTableInfo& t = info->tables.at(0);
    EXPECT_EQ(t.name, "held") << "the table's name";
    EXPECT_EQ(t.client, holder) << "its client";
    EXPECT_EQ(t.owner, holder) << "its owner";
    EXPECT_EQ(t.heir, info->vault) << "its heir is the vault";
    EXPECT_EQ(t.size, 1u) << "its size";
    EXPECT_EQ(info->counters.tables_created, 1u) << "tables_created";
    EXPECT_EQ(info->counters.tables_lost, 0u) << "tables_lost";
  });
  Send(holder, Go{});
}

// Embedded: the manager as a child of the application's own supervisor.
TEST_F(ManagerTest, EmbeddedInTheApplicationsSupervisor) {
  std::vector<ChildSpec> children;
  children.push_back(ManagerChildSpec("emb"));
  SupervisorFlags flags;
  Pid sup = StartSupervisor(*node_, flags, std::move(children)).value();
  EXPECT_TRUE(node_->Whereis("etsmgr_srv_emb").valid());
  InProcess([](Process& self) -> Task<void> {
    Etsmgr mgr("emb");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    EXPECT_TRUE(r.ok()) << "new_table from the embedded manager: " << r.status();
  });
  // The standalone start of the same instance is refused while the embedded one runs.
  EXPECT_EQ(StartManager(*node_, "emb").code(), absl::StatusCode::kAlreadyExists);
  InProcess([sup](Process& self) -> Task<void> {
    absl::Status st = co_await StopSupervisor(self, sup);
    EXPECT_TRUE(st.ok()) << "stop the application's supervisor: " << st;
  });
  EXPECT_FALSE(node_->Whereis("etsmgr_srv_emb").valid());
}

}  // namespace
}  // namespace etsmgr
