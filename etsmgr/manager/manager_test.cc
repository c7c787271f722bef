// The Erlang etsmgr test suite ported (start/stop, new_table, add_table, del_table), the conflict
// and error cases, and the instance, info and wait_for_manager contracts.
#include "etsmgr/manager/manager.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/process/internal/test_util.h"
#include "etsmgr/table/table_file.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;
using Report = std::function<void(std::string)>;

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
  std::string Probe(ProbeBody body, SpawnOptions options = {}) {
    return RunProbe(*node_, std::move(body), std::move(options));
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
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "table1");
    if (!r.ok()) co_return report(r.status().ToString());
    TableInfo info = r->table.Info().value();
    std::string out =
        absl::StrCat("created=", r->created, " owner_is_me=", info.owner == self.self(),
                     " heir_is_vault=", info.heir == self.node().Whereis("etsmgr_vault"),
                     " mgr=", r->manager == self.node().Whereis("etsmgr_srv"),
                     " no_stray_transfer=", self.mailbox_size() == 0);
    absl::Status del = co_await mgr.DelTable(self, "table1");
    out += " del=" + del.ToString();
    out += absl::StrCat(" heir_after_del=", r->table.Info().value().heir.valid());
    out += " delete=" + r->table.Delete().ToString();
    report(out);
  });
  EXPECT_EQ(got,
            "created=1 owner_is_me=1 heir_is_vault=1 mgr=1 no_stray_transfer=1 del=OK "
            "heir_after_del=0 delete=OK");
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
  std::string saved = Probe([&](Process&, Report report) -> Task<void> {
    IntTable t = IntTable::New().value();
    for (int64_t k = 0; k < 1000; ++k) t.Insert(k, k * 10).IgnoreError();
    absl::Status st = SaveTable(t, path);
    if (st.ok()) st = SaveTable(t, damaged);
    (void)t.Delete();
    report(st.ToString());
    co_return;
  });
  ASSERT_EQ(saved, "OK");
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
  std::string got = Probe([&](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    SendExit(first, ExitReason::Kill());
    co_await AwaitDown(self, first);
    absl::StatusOr<ManagedTableRef> back =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "t", path);
    if (!back.ok()) co_return report(back.status().ToString());
    IntTable t = IntTable::Attach(back->table).value();
    std::string out =
        absl::StrCat("back: loaded=", back->loaded, " created=", back->created,
                     " size=", t.Size().value(), " write_kept=", t.Get(5000).value().value());
    // No file: an empty table, to initialise.
    absl::StatusOr<ManagedTableRef> fresh =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "fresh", path);
    if (!fresh.ok()) co_return report(out + " fresh: " + fresh.status().ToString());
    out += absl::StrCat(" fresh: loaded=", fresh->loaded, " created=", fresh->created,
                        " size=", fresh->table.Info().value().size);
    // A damaged file: DataLoss naming the file, no table, the file left as it was.
    absl::StatusOr<ManagedTableRef> bad =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "bad", damaged);
    out += absl::StrCat(" bad: ", absl::StatusCodeToString(bad.status().code()),
                        " names_file=", bad.status().message().find(damaged) != std::string::npos,
                        " names_table=", bad.status().message().find("bad") != std::string::npos);
    // Another key type, or another table type: InvalidArgument.
    std::string good = TempPath("from_file_good.tab");
    IntTable src = IntTable::New().value();
    src.Insert(1, 1).IgnoreError();
    (void)SaveTable(src, good);
    (void)src.Delete();
    absl::StatusOr<ManagedTableRef> types =
        co_await mgr.NewTableFromFile<std::string, int64_t>(self, "types", good);
    out += absl::StrCat(" types: ", absl::StatusCodeToString(types.status().code()));
    TableOptions ordered;
    ordered.type = TableType::kOrderedSet;
    absl::StatusOr<ManagedTableRef> kind =
        co_await mgr.NewTableFromFile<int64_t, int64_t>(self, "kind", good, ordered);
    out += absl::StrCat(" kind: ", absl::StatusCodeToString(kind.status().code()));
    // A missing directory is not a first start: NotFound, no table.
    absl::StatusOr<ManagedTableRef> no_dir = co_await mgr.NewTableFromFile<int64_t, int64_t>(
        self, "no_dir", TempPath("no/such/dir/t.tab"));
    out += absl::StrCat(" no_dir: ", absl::StatusCodeToString(no_dir.status().code()));
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    out += absl::StrCat(" managed=", info.ok() ? info->tables.size() : 0);
    report(out);
  });
  EXPECT_EQ(got,
            "back: loaded=0 created=0 size=1001 write_kept=1 fresh: loaded=0 created=1 size=0 "
            "bad: DATA_LOSS names_file=1 names_table=1 types: INVALID_ARGUMENT kind: "
            "INVALID_ARGUMENT no_dir: NOT_FOUND managed=2");
  std::ifstream still(damaged, std::ios::binary);
  EXPECT_TRUE(still.good());
}

TEST_F(ManagerTest, AddTable) {
  ASSERT_TRUE(StartManager(*node_).ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    IntTable mine = IntTable::New().value();
    absl::StatusOr<ManagedTableRef> r = co_await mgr.AddTable(self, "table1", mine.any());
    if (!r.ok()) co_return report(r.status().ToString());
    TableInfo info = mine.Info().value();
    std::string out =
        absl::StrCat("owner_is_me=", info.owner == self.self(),
                     " heir_is_vault=", info.heir == self.node().Whereis("etsmgr_vault"));
    // Idempotent: adding again is fine.
    absl::StatusOr<ManagedTableRef> again = co_await mgr.AddTable(self, "table1", mine.any());
    out += " again=" + again.status().ToString();
    absl::Status del = co_await mgr.DelTable(self, "table1");
    out += " del=" + del.ToString();
    report(out);
  });
  EXPECT_EQ(got, "owner_is_me=1 heir_is_vault=1 again=OK del=OK");
}

TEST_F(ManagerTest, DelTableUnknownAndOneOfSeveralKeepsTheLink) {
  ASSERT_TRUE(StartManager(*node_).ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    absl::Status unknown = co_await mgr.DelTable(self, "table1");
    std::string out = absl::StrCat("unknown=", absl::StatusCodeToString(unknown.code()),
                                   ErrorAtom(unknown) == Atom::kNoSuchTableEntry);
    absl::StatusOr<ManagedTableRef> t1 = co_await mgr.NewTable<int64_t, int64_t>(self, "table1");
    absl::StatusOr<ManagedTableRef> t2 = co_await mgr.NewTable<int64_t, int64_t>(self, "table2");
    if (!t1.ok() || !t2.ok()) co_return report("new_table failed");
    Pid manager = t1->manager;
    out += absl::StrCat(" linked=", Contains(GetProcessInfo(self.self())->links, manager));
    absl::Status d1 = co_await mgr.DelTable(self, "table1");
    out += absl::StrCat(" del1=", d1.ok(),
                        " still_linked=", Contains(GetProcessInfo(self.self())->links, manager));
    absl::Status d2 = co_await mgr.DelTable(self, "table2");
    out += absl::StrCat(" del2=", d2.ok(),
                        " unlinked=", !Contains(GetProcessInfo(self.self())->links, manager));
    t1->table.Delete().IgnoreError();
    t2->table.Delete().IgnoreError();
    report(out);
  });
  EXPECT_EQ(got, "unknown=NOT_FOUND1 linked=1 del1=1 still_linked=1 del2=1 unlinked=1");
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
  std::string got = Probe([held, holder](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    std::string out;
    // new_table of a name another live process holds: table_exists.
    absl::StatusOr<ManagedTableRef> taken = co_await mgr.NewTable<int64_t, int64_t>(self, "shared");
    out += absl::StatusCodeToString(taken.status().code());
    out += absl::StrCat(taken.status().message().find(holder.ToString()) != std::string::npos,
                        ErrorAtom(taken.status()) == Atom::kTableExists);
    // Same name with other types: InvalidArgument naming both.
    absl::StatusOr<ManagedTableRef> types =
        co_await mgr.NewTable<std::string, int64_t>(self, "shared");
    out += " " + std::string(absl::StatusCodeToString(types.status().code()));
    out += absl::StrCat(types.status().message().find("<long, long>") != std::string::npos);
    // add_table of a table we do not own: not_owner.
    absl::StatusOr<ManagedTableRef> not_mine = co_await mgr.AddTable(self, "other", held.table);
    out += " " + std::string(absl::StatusCodeToString(not_mine.status().code()));
    out += absl::StrCat(ErrorAtom(not_mine.status()) == Atom::kNotOwner);
    // add_table of another table under a taken name: table_exists.
    IntTable mine = IntTable::New().value();
    absl::StatusOr<ManagedTableRef> clash = co_await mgr.AddTable(self, "shared", mine.any());
    out += " " + std::string(absl::StatusCodeToString(clash.status().code()));
    // del_table by neither client nor owner: not_owner, naming the caller, client and owner.
    absl::Status del = co_await mgr.DelTable(self, "shared");
    out += " " + std::string(absl::StatusCodeToString(del.code()));
    out += absl::StrCat(del.message().find(absl::StrCat(
                            "caller ", self.self().ToString(), " is neither the registered client ",
                            holder.ToString(), " nor the owner ", holder.ToString())) !=
                        std::string::npos);
    report(out);
  });
  EXPECT_EQ(got,
            "ALREADY_EXISTS11 INVALID_ARGUMENT1 PERMISSION_DENIED1 ALREADY_EXISTS "
            "PERMISSION_DENIED1");
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
  std::string got = Probe([holder](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> busy = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    std::string out = std::string(absl::StatusCodeToString(busy.status().code()));
    out += absl::StrCat(busy.status().message().find("held for its live client " +
                                                     holder.ToString()) != std::string::npos);
    SendExit(holder, ExitReason::Kill());
    co_await AwaitDown(self, holder);
    absl::StatusOr<ManagedTableRef> back = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    if (!back.ok()) co_return report(out + " " + back.status().ToString());
    IntTable t = IntTable::Attach(back->table).value();
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    out += absl::StrCat(
        " created=", back->created, " owner_is_me=", t.Info().value().owner == self.self(),
        " data=", t.Get(1).value().value(), " hand_backs=", info->counters.hand_backs,
        " no_stray_transfer=", self.mailbox_size() == 0);
    EXPECT_TRUE((co_await mgr.DelTable(self, "t")).ok());
    EXPECT_TRUE(t.Delete().ok());
    report(out);
  });
  EXPECT_EQ(got,
            "ALREADY_EXISTS1 created=0 owner_is_me=1 data=100 hand_backs=1 no_stray_transfer=1");
}

TEST_F(ManagerTest, BadInputIsInvalidArgument) {
  EXPECT_EQ(StartManager(*node_, "").code(), absl::StatusCode::kInvalidArgument);
  ManagerOptions bad;
  bad.period = absl::ZeroDuration();
  absl::Status st = StartManager(*node_, "x", bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("period"), std::string::npos) << st;
  ASSERT_TRUE(StartManager(*node_).ok());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagedTableRef> empty = co_await mgr.NewTable<int64_t, int64_t>(self, "");
    absl::StatusOr<ManagedTableRef> null = co_await mgr.AddTable(self, "t", AnyTable());
    absl::Status del = co_await mgr.DelTable(self, "");
    report(absl::StrCat(absl::StatusCodeToString(empty.status().code()), " ",
                        absl::StatusCodeToString(null.status().code()), " ",
                        absl::StatusCodeToString(del.code())));
  });
  EXPECT_EQ(got, "INVALID_ARGUMENT INVALID_ARGUMENT INVALID_ARGUMENT");
}

TEST_F(ManagerTest, UnavailableAndDeadline) {
  // Never started: Unavailable at once, for every call.
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("nobody");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    absl::StatusOr<ManagerInfo> i = co_await mgr.Info(self);
    absl::Status d = co_await mgr.DelTable(self, "t");
    absl::StatusOr<Pid> w = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(20)));
    report(absl::StrCat(
        absl::StatusCodeToString(r.status().code()), " ",
        absl::StatusCodeToString(i.status().code()), " ", absl::StatusCodeToString(d.code()), " ",
        absl::StatusCodeToString(w.status().code()), " ", ToString(mgr.State(self.node()))));
  });
  EXPECT_EQ(got, "UNAVAILABLE UNAVAILABLE UNAVAILABLE DEADLINE_EXCEEDED not_started");
  // A process merely registered under the manager's name is not a manager.
  Pid mute = node_
                 ->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Go>(); },
                         {.name = "etsmgr_srv_mute"})
                 .value();
  got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("mute");
    absl::Status r = co_await mgr.DelTable(self, "t");
    report(absl::StatusCodeToString(r.code()));
  });
  EXPECT_EQ(got, "UNAVAILABLE");
  Send(mute, Go{});
  // Stopped: table calls are Unavailable; a waiter waits for the next start until its deadline.
  ASSERT_TRUE(StartManager(*node_, "aaa").ok());
  ASSERT_TRUE(StopManager(*node_, "aaa").ok());
  got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("aaa");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    absl::StatusOr<Pid> w = co_await mgr.WaitForManager(self, Deadline(absl::Milliseconds(20)));
    report(absl::StrCat(absl::StatusCodeToString(r.status().code()), " ",
                        absl::StatusCodeToString(w.status().code()),
                        w.status().message().find("stopped") != std::string::npos, " ",
                        ToString(mgr.State(self.node()))));
  });
  EXPECT_EQ(got, "UNAVAILABLE DEADLINE_EXCEEDED1 stopped");
}

TEST_F(ManagerTest, WaitForManagerWakesOnRegistration) {
  auto waiting = std::make_shared<std::promise<void>>();
  auto result = std::make_shared<std::promise<std::string>>();
  node_
      ->Spawn([waiting, result](Process& self) -> Task<void> {
        Etsmgr mgr;
        absl::StatusOr<Pid> none = co_await mgr.WaitForManager(self, absl::Now());
        std::string out = std::string(absl::StatusCodeToString(none.status().code()));
        waiting->set_value();
        absl::StatusOr<Pid> pid =
            co_await mgr.WaitForManager(self, absl::Now() + absl::Seconds(30));
        out += absl::StrCat(" ", pid.ok() && *pid == self.node().Whereis("etsmgr_srv"));
        result->set_value(out);
      })
      .value();
  waiting->get_future().get();
  ASSERT_TRUE(StartManager(*node_).ok());
  EXPECT_EQ(result->get_future().get(), "DEADLINE_EXCEEDED 1");
}

TEST_F(ManagerTest, InfoListsTablesAndCounters) {
  ASSERT_TRUE(StartManager(*node_).ok());
  std::promise<ManagedTableRef> made;
  Pid holder = SpawnHolder(*node_, "held", &made);
  made.get_future().get();
  std::string got = Probe([holder](Process& self, Report report) -> Task<void> {
    Etsmgr mgr;
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    if (!info.ok()) co_return report(info.status().ToString());
    const ManagedTableInfo& t = info->tables.at(0);
    report(absl::StrCat(info->tables.size(), " ", t.name, " client=", t.client == holder,
                        " owner=", t.owner == holder, " heir=", t.heir == info->vault,
                        " size=", t.size, " created=", info->counters.tables_created,
                        " lost=", info->counters.tables_lost));
  });
  EXPECT_EQ(got, "1 held client=1 owner=1 heir=1 size=1 created=1 lost=0");
  Send(holder, Go{});
}

// Embedded: the manager as a child of the application's own supervisor.
TEST_F(ManagerTest, EmbeddedInTheApplicationsSupervisor) {
  std::vector<ChildSpec> children;
  children.push_back(ManagerChildSpec("emb"));
  SupervisorFlags flags;
  Pid sup = StartSupervisor(*node_, flags, std::move(children)).value();
  EXPECT_TRUE(node_->Whereis("etsmgr_srv_emb").valid());
  std::string got = Probe([](Process& self, Report report) -> Task<void> {
    Etsmgr mgr("emb");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.NewTable<int64_t, int64_t>(self, "t");
    report(r.status().ToString());
  });
  EXPECT_EQ(got, "OK");
  // The standalone start of the same instance is refused while the embedded one runs.
  EXPECT_EQ(StartManager(*node_, "emb").code(), absl::StatusCode::kAlreadyExists);
  std::string stopped = Probe([sup](Process& self, Report report) -> Task<void> {
    absl::Status st = co_await StopSupervisor(self, sup);
    report(st.ToString());
  });
  EXPECT_EQ(stopped, "OK");
  EXPECT_FALSE(node_->Whereis("etsmgr_srv_emb").valid());
}

}  // namespace
}  // namespace etsmgr
