// Shared tables through the manager, across programs (each program a fork()ed child with its own
// runtime): a table whose program was SIGKILLed comes back to the next program's NewTable with
// its data (created == false, mapped, not copied); two live programs claiming one table:
// AlreadyExists; DelTable removes the segment.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "etsmgr/base/error_atom.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/internal/instance.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/manager/manager.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/shared/internal/layout.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using IntTable = Table<int64_t, int64_t>;

// What NewTableHere got: whether the table was handed out as new, and the counter's value.
struct Claimed {
  bool created = false;
  int64_t value = -1;  // -1: no counter.
};

// Checks what NewTableHere got (SCOPED_TRACE names the caller's line).
#define EXPECT_CLAIMED(got, want_created, want_value) \
  do {                                                \
    SCOPED_TRACE("EXPECT_CLAIMED");                   \
    ExpectClaimed(got, want_created, want_value);     \
  } while (0)

void ExpectClaimed(const absl::StatusOr<Claimed>& got, bool created, int64_t value) {
  ASSERT_TRUE(got.ok()) << "new_table(counter) here: " << got.status();
  EXPECT_EQ(got->created, created) << "created (handed out as a new table)";
  EXPECT_EQ(got->value, value) << "the counter's value (-1: none)";
}

constexpr int64_t kCounter = 1;

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Reads one int64 from `fd`, waiting at most `limit`; nullopt at EOF or past the deadline.
std::optional<int64_t> ReadValue(int fd, std::chrono::milliseconds limit) {
  int64_t v;
  char* p = reinterpret_cast<char*>(&v);
  size_t got = 0;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (got < sizeof(v)) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    ssize_t n = read(fd, p + got, sizeof(v) - got);
    if (n <= 0) return std::nullopt;
    got += static_cast<size_t>(n);
  }
  return v;
}

void WriteValue(int fd, int64_t v) {
  if (write(fd, &v, sizeof(v)) != sizeof(v)) _exit(5);
}

class SharedManagedTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.shared = SharedStorage();
    options_.shared->segment = shared_testing::UniqueSegmentName("etsmgr-mgr-test");
    options_.shared->map.shards = 4;
    options_.shared->map.max_bytes = uint64_t{1} << 26;
    inst_ = shared_testing::UniqueSegmentName("t");  // Its own directory of shared tables.
  }
  void TearDown() override {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
    if (node_ != nullptr) StopManager(*node_, inst_).IgnoreError();
    node_.reset();
    (void)SharedMap<int64_t, int64_t>::Remove(options_.shared->segment);
    (void)SharedMap<int64_t, int64_t>::Remove("etsmgr-directory-" + inst_);
    unlink(ClaimPath().c_str());
  }
  // The test's segment, made as a program that died while filling it leaves it (not initialised).
  absl::StatusOr<SharedMap<int64_t, int64_t>> MakeUninitialisedSegment() {
    SharedMapOptions map = options_.shared->map;
    map.mode = SharedMapOptions::Mode::kCreate;
    map.create_uninitialised = true;
    return SharedMap<int64_t, int64_t>::Open(options_.shared->segment, map);
  }
  std::string SegmentPath() const { return "/dev/shm/" + options_.shared->segment; }
  std::string ClaimPath() const { return "/dev/shm/." + options_.shared->segment + ".owner"; }

  // Forks a program with its own runtime and manager (instance inst_) whose one client process
  // runs `client(self, ack, options, mgr)`: `ack` is the pipe the test reads (ack_), `options`
  // the test's shared table options. The program then waits to be killed.
  using ClientBody =
      std::function<Task<void>(Process& self, int ack, TableOptions options, Etsmgr mgr)>;
  void ForkWithClient(ClientBody client) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    child_ = fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      close(fds[0]);
      const int ack = fds[1];
      std::unique_ptr<Node> node = Node::Create({.schedulers = 1}).value();
      if (!StartManager(*node, inst_).ok()) _exit(3);
      TableOptions options = options_;
      Etsmgr mgr(inst_);
      absl::StatusOr<Pid> pid =
          node->Spawn([client, ack, options, mgr](Process& self) -> Task<void> {
            co_await client(self, ack, options, mgr);
          });
      if (!pid.ok()) _exit(7);
      pause();
      _exit(0);
    }
    close(fds[1]);
    ack_ = fds[0];
  }
  // A client that takes the shared table "counter" (acknowledging -1 for created, -2 for
  // found), then bumps it `writes` times (-1: for ever), acknowledging each returned value, then
  // acknowledges -3 and waits to be killed.
  void ForkProgram(int64_t writes) {
    ForkWithClient(
        [writes](Process& self, int ack, TableOptions options, Etsmgr mgr) -> Task<void> {
          absl::StatusOr<ManagedTableRef> r =
              co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
          if (!r.ok()) _exit(4);
          WriteValue(ack, r->created ? -1 : -2);
          IntTable t = IntTable::Attach(r->table).value();
          for (int64_t i = 0; writes < 0 || i < writes; ++i) {
            absl::StatusOr<int64_t> v = t.UpdateCounter(kCounter, 1, {.default_value = 0});
            if (!v.ok()) _exit(6);
            WriteValue(ack, *v);
          }
          WriteValue(ack, -3);
          co_await self.Receive();  // Until killed.
        });
  }
  // A client that opens "counter" with ManagedTable::Open and an init function that inserts
  // kCounter = 100 and acknowledges -4; then, if `hang_in_init`, it never returns (the program
  // is killed while initialising); otherwise Open returns and the client acknowledges -1
  // (created) or -2 (found) and waits to be killed.
  void ForkOpenProgram(bool hang_in_init) {
    ForkWithClient(
        [hang_in_init](Process& self, int ack, TableOptions options, Etsmgr mgr) -> Task<void> {
          auto init = [ack, hang_in_init](IntTable& fresh) {
            absl::Status st = fresh.Insert(kCounter, 100);
            WriteValue(ack, -4);
            while (hang_in_init) pause();  // Killed here.
            return st;
          };
          absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
              co_await ManagedTable<int64_t, int64_t>::Open(self, mgr, "counter", options, init);
          if (!t.ok()) _exit(4);
          WriteValue(ack, t->created() ? -1 : -2);
          co_await self.Receive();  // Until killed.
        });
  }
  // A client that makes the shared table itself (Table::New with the shared options), puts
  // kCounter = 42 in it, and, if `add`, hands it to the manager with AddTable; acknowledges -6
  // and waits to be killed.
  void ForkFillerProgram(bool add) {
    ForkWithClient([add](Process& self, int ack, TableOptions options, Etsmgr mgr) -> Task<void> {
      absl::StatusOr<IntTable> t = IntTable::New(options);
      if (!t.ok() || !t->Insert(kCounter, 42).ok()) _exit(4);
      if (add) {
        absl::StatusOr<ManagedTableRef> r = co_await mgr.AddTable(self, "counter", t->any());
        if (!r.ok()) _exit(6);
      }
      WriteValue(ack, -6);
      co_await self.Receive();  // Until killed.
    });
  }
  void KillProgram() {
    ASSERT_EQ(kill(child_, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child_, &status, 0), child_);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
    child_ = -1;
    close(ack_);
  }
  // Runs `body` (Process& -> Task<V>) in a fresh process (up to 20 s) and returns what it yields
  // once that process has exited (so a table it took has gone to the instance before the next
  // step asks for it).
  template <typename F>
  auto RunToExit(F body) {
    auto running = std::make_shared<std::pair<std::mutex, Pid>>();
    auto result = node_->Run(
        [body = std::move(body), running](Process& self) {
          {
            std::lock_guard<std::mutex> lock(running->first);
            running->second = self.self();
          }
          return body(self);
        },
        {}, absl::Seconds(20));
    Pid pid;
    {
      std::lock_guard<std::mutex> lock(running->first);
      pid = running->second;
    }
    if (pid.valid()) AwaitDeath(*node_, pid);
    return result;
  }

  // In this program: NewTable of "counter" from a fresh process, which then exits (the instance
  // holds the table).
  absl::StatusOr<Claimed> NewTableHere() {
    if (node_ == nullptr) {
      node_ = Node::Create({.schedulers = 1}).value();
      EXPECT_TRUE(StartManager(*node_, inst_).ok());
    }
    TableOptions options = options_;
    Etsmgr mgr(inst_);
    return RunToExit([options, mgr](Process& self) -> Task<absl::StatusOr<Claimed>> {
      absl::StatusOr<ManagedTableRef> r =
          co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
      if (!r.ok()) co_return r.status();
      IntTable t = IntTable::Attach(r->table).value();
      absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
      if (!info.ok() || info->tables.size() != 1 || info->tables[0].size != t.Size().value()) {
        co_return absl::InternalError("info() disagrees with the table's size");
      }
      co_return Claimed{.created = r->created, .value = t.Get(kCounter).value().value_or(-1)};
    });  // The client exits: the instance holds the table.
  }

  // In this program: the instance's shared tables, as "name:exists:held" (or the error).
  std::string SharedTablesHere() {
    if (node_ == nullptr) {
      node_ = Node::Create({.schedulers = 1}).value();
      EXPECT_TRUE(StartManager(*node_, inst_).ok());
    }
    Etsmgr mgr(inst_);
    const std::string segment = options_.shared->segment;
    absl::StatusOr<std::string> listed =
        RunToExit([mgr, segment](Process& self) -> Task<absl::StatusOr<std::string>> {
          absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
          if (!info.ok()) co_return info.status();
          std::string out;
          for (const SharedTableRecord& r : info->shared_tables) {
            absl::StrAppend(&out, out.empty() ? "" : " ", r.name, ":", r.exists, ":", r.held,
                            r.segment == segment ? "" : ":other-segment",
                            r.key_type == "long" ? "" : ":key-" + r.key_type);
          }
          co_return out.empty() ? "none" : out;
        });
    return listed.ok() ? *listed : listed.status().ToString();
  }
  // Runs `body(self, mgr, mine)` (a Task<void>) in a process of this program, `mine` a shared
  // table of the process's own (Table::New with the test's options), not yet managed; the
  // instance's directory of shared tables is checked empty first.
  template <typename F>
  void WithOwnSharedTable(F body) {
    EXPECT_EQ(SharedTablesHere(), "none");
    TableOptions options = options_;
    Etsmgr mgr(inst_);
    RunInProcess(*node_, [options, mgr, body](Process& self) -> Task<void> {
      absl::StatusOr<IntTable> mine = IntTable::New(options);
      CO_ASSERT_OK(mine.status(), "a shared table of the client's own");
      co_await body(self, mgr, *mine);
    });
  }
  absl::Status DelTableHere() {
    Etsmgr mgr(inst_);
    return RunToExit([mgr](Process& self) -> Task<absl::Status> {
      co_return co_await mgr.DelTable(self, "counter");
    });
  }

  TableOptions options_;
  std::string inst_;
  pid_t child_ = -1;
  int ack_ = -1;
  std::unique_ptr<Node> node_;
};

TEST_F(SharedManagedTableTest, AKilledProgramsTableComesBackWithItsData) {
  ForkProgram(/*writes=*/-1);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -1);  // Created by the first program.
  // Kill it at a moment the acknowledgements choose: after at least 1000 returned writes.
  int64_t acked = 0;
  while (acked < 1000) {
    std::optional<int64_t> v = ReadValue(ack_, std::chrono::seconds(20));
    ASSERT_TRUE(v.has_value());
    acked = *v;
  }
  KillProgram();
  {
    SharedMap<int64_t, int64_t> map =
        SharedMap<int64_t, int64_t>::Open(options_.shared->segment, options_.shared->map).value();
    EXPECT_TRUE(map.Check().ok());
    const int64_t value = map.Get(kCounter).value().value();
    EXPECT_GE(value, acked);  // Every returned write is there.
  }
  const absl::StatusOr<Claimed> got = NewTableHere();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->created) << "found, not created";
  EXPECT_GE(got->value, acked) << "every returned write is in the table handed out";
}

// The segment remembers whether its first client finished initialising it: a program killed
// inside ManagedTable::Open's init function leaves a table the next program is told to
// initialise again (created), not one it would take as filled.
TEST_F(SharedManagedTableTest, AProgramKilledWhileInitialisingLeavesTheTableCreated) {
  ForkOpenProgram(/*hang_in_init=*/true);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -4);  // Inside init.
  KillProgram();
  EXPECT_TRUE(Exists(SegmentPath()));
  EXPECT_CLAIMED(NewTableHere(), true, -1);   // Emptied: what the killed init wrote is gone.
  EXPECT_CLAIMED(NewTableHere(), false, -1);  // This client initialised it (with nothing).
}

TEST_F(SharedManagedTableTest, AnOpenWhoseInitReturnedLeavesAFilledTable) {
  ForkOpenProgram(/*hang_in_init=*/false);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -4);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -1);  // Open returned: created.
  KillProgram();
  EXPECT_CLAIMED(NewTableHere(), false, 100);
}

// A shared table the manager did not create (AddTable of the client's own table, or a table
// made with Table::New and never managed) comes back filled, not "created": only a segment the
// manager made and its client had not yet initialised is handed out as new.
TEST_F(SharedManagedTableTest, AnAddedSharedTableComesBackFilled) {
  ForkFillerProgram(/*add=*/true);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -6);
  KillProgram();
  EXPECT_CLAIMED(NewTableHere(), false, 42);
}

TEST_F(SharedManagedTableTest, ASegmentFilledOutsideTheManagerComesBackFilled) {
  ForkFillerProgram(/*add=*/false);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -6);
  KillProgram();
  EXPECT_CLAIMED(NewTableHere(), false, 42);
}

// Program after program is killed at a seeded point of its stream of update_counter calls: each
// finds the count the last one left (every acknowledged increment, plus any whose
// acknowledgement was still in the pipe), and continues from exactly there.
TEST_F(SharedManagedTableTest, RepeatedProgramKillsLoseNoAcknowledgedWrite) {
  std::mt19937_64 rng(20261130);
  int64_t acked = 0;
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ForkProgram(/*writes=*/-1);
    ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), round == 0 ? -1 : -2);
    // The first increment of this program continues from what the last one left.
    std::optional<int64_t> first = ReadValue(ack_, std::chrono::seconds(20));
    ASSERT_TRUE(first.has_value());
    ASSERT_GT(*first, acked);
    acked = *first;
    const int64_t target = acked + static_cast<int64_t>(rng() % 2000);
    while (acked < target) {
      std::optional<int64_t> v = ReadValue(ack_, std::chrono::seconds(20));
      ASSERT_TRUE(v.has_value());
      ASSERT_EQ(*v, acked + 1);  // One program counts alone: no gap, no repeat.
      acked = *v;
    }
    KillProgram();
    SharedMap<int64_t, int64_t> map =
        SharedMap<int64_t, int64_t>::Open(options_.shared->segment, options_.shared->map).value();
    ASSERT_TRUE(map.Check().ok());
    const int64_t left = map.Get(kCounter).value().value();
    ASSERT_GE(left, acked);
    acked = left;  // Increments acknowledged into the pipe but not read count too.
  }
}

TEST_F(SharedManagedTableTest, TheDirectoryOfSharedTablesOutlivesTheProgram) {
  ForkProgram(/*writes=*/2);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -1);
  for (int64_t i = 1; i <= 2; ++i) ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), i);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -3);
  // Another program's manager of the same instance sees it, held by a live program...
  EXPECT_EQ(SharedTablesHere(), "counter:1:1");
  const absl::Status refused = DelTableHere();
  EXPECT_EQ(refused.code(), absl::StatusCode::kAlreadyExists)
      << "del_table of a table a live program holds: " << refused;
  EXPECT_TRUE(Exists(SegmentPath()));
  KillProgram();
  // ... and, once that program is dead, as a table nobody holds, which DelTable removes
  // although nobody here asked for it.
  EXPECT_EQ(SharedTablesHere(), "counter:1:0");
  EXPECT_TRUE(DelTableHere().ok()) << "del_table of a table nobody holds";
  EXPECT_FALSE(Exists(SegmentPath()));
  EXPECT_FALSE(Exists(ClaimPath()));
  EXPECT_EQ(SharedTablesHere(), "none");
  EXPECT_TRUE(ErrorAtom(DelTableHere()) == Atom::kNoSuchTableEntry)
      << "del_table of a removed table: no_such_table_entry";
}

TEST_F(SharedManagedTableTest, NewTableRecordsItAndDelTableForgetsIt) {
  EXPECT_EQ(SharedTablesHere(), "none");
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    CO_ASSERT_OK(r, "new_table(counter)");
    absl::StatusOr<ManagerInfo> before = co_await mgr.Info(self);
    absl::Status del = co_await mgr.DelTable(self, "counter");
    absl::StatusOr<ManagerInfo> after = co_await mgr.Info(self);
    CO_ASSERT_OK(before, "info before del_table");
    CO_ASSERT_OK(after, "info after del_table");
    CO_ASSERT_TRUE(before->shared_tables.size() == 1, "one shared table recorded by new_table");
    const SharedTableRecord& t = before->shared_tables[0];
    EXPECT_EQ(t.name, "counter") << "the record's name";
    EXPECT_EQ(t.key_type, "long") << "the record's key type";
    EXPECT_EQ(t.value_type, "long") << "the record's value type";
    EXPECT_TRUE(t.held) << "the record: held";
    EXPECT_TRUE(del.ok()) << "del_table(counter): " << del;
    EXPECT_EQ(after->shared_tables.size(), 0u) << "del_table forgets the record";
  });
  EXPECT_FALSE(Exists(SegmentPath()));
}

// A stop that discards the instance's tables deletes the shared ones it holds, and forgets their
// records (they were listed, with no segment, until a del_table of each name).
TEST_F(SharedManagedTableTest, ADiscardForgetsTheRecordsOfTheSharedTablesItDeletes) {
  EXPECT_CLAIMED(NewTableHere(), true, -1);  // The client exits: the instance holds the table.
  EXPECT_EQ(SharedTablesHere(), "counter:1:1");
  ASSERT_TRUE(StopManager(*node_, inst_, {.discard_tables = true}).ok());
  EXPECT_FALSE(Exists(SegmentPath())) << "the discarded table's segment is removed";
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  EXPECT_EQ(SharedTablesHere(), "none");
}

// A record is removed by the del_table of its own table only: another program's (here another
// node's) del_table of the same name, whose table was recorded before, leaves the record of the
// table that replaced it (it removed whatever the name's record was: the live table's segment was
// then missing from Info and could not be deleted by name once its program died).
TEST_F(SharedManagedTableTest, ADelTableRemovesOnlyTheRecordOfItsOwnTable) {
  std::unique_ptr<Node> other = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*other, inst_).ok());
  TableOptions theirs = options_;
  theirs.shared->segment = shared_testing::UniqueSegmentName("etsmgr-mgr-test-other");
  Etsmgr mgr(inst_);
  // The other node's client makes its table, then, told to, deletes it (only its client or
  // owner may).
  struct DeleteNow {};
  std::promise<absl::Status> made, deleted;
  absl::StatusOr<Pid> theirs_client =
      other->Spawn([theirs, mgr, &made, &deleted](Process& self) -> Task<void> {
        made.set_value((co_await mgr.NewTable<int64_t, int64_t>(self, "t", theirs)).status());
        co_await self.Receive<DeleteNow>();
        deleted.set_value(co_await mgr.DelTable(self, "t"));
        co_await self.Receive<DeleteNow>();
      });
  ASSERT_TRUE(theirs_client.ok()) << theirs_client.status();
  ASSERT_TRUE(made.get_future().get().ok());
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions ours = options_;
  RunInProcess(*node_, [ours, mgr](Process& self) -> Task<void> {
    CO_ASSERT_OK((co_await mgr.NewTable<int64_t, int64_t>(self, "t", ours)).status(),
                 "this node's new_table");  // The record names this node's segment now.
  });
  Send(*theirs_client, DeleteNow{});
  absl::Status del = deleted.get_future().get();
  ASSERT_TRUE(del.ok()) << "the other node's del_table: " << del;
  const std::string segment = options_.shared->segment;
  RunInProcess(*node_, [mgr, segment](Process& self) -> Task<void> {
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    CO_ASSERT_OK(info, "info");
    CO_ASSERT_TRUE(info->shared_tables.size() == 1, "this node's table is still recorded");
    EXPECT_EQ(info->shared_tables[0].name, "t");
    EXPECT_EQ(info->shared_tables[0].segment, segment);
    EXPECT_TRUE(info->shared_tables[0].held);
  });
  StopManager(*other, inst_).IgnoreError();
  other.reset();
  (void)SharedMap<int64_t, int64_t>::Remove(theirs.shared->segment);
}

// The warnings of a shared new_table (a segment its program left uninitialised, a table the
// directory cannot record) are logged after the instance's lock: a sink that blocks (a full
// stderr pipe) stalled every caller and exiting client of the instance, and one that reads the
// instance's state deadlocked on it. The sink below cannot take the lock while a line is written
// under it (one scheduler: no other thread holds it).
TEST_F(SharedManagedTableTest, ASharedNewTablesWarningsAreLoggedAfterTheInstanceLock) {
  {
    absl::StatusOr<SharedMap<int64_t, int64_t>> left = MakeUninitialisedSegment();
    ASSERT_TRUE(left.ok()) << left.status();
  }
  {
    // The instance's directory of shared tables is damaged: the table cannot be recorded.
    const std::string directory = "/dev/shm/etsmgr-directory-" + inst_;
    int fd = open(directory.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << directory;
    const std::string garbage(8192, 'g');
    ASSERT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
    close(fd);
  }
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  class LockCheckingSink final : public LogSink {
   public:
    LockCheckingSink(Node& node, std::string inst) : node_(node), inst_(std::move(inst)) {}
    void Write(const LogRecord& record) override {
      std::lock_guard<std::mutex> lock(mu_);
      lines.emplace_back(record.message);
      std::shared_ptr<manager_internal::Instance> st = manager_internal::FindInstance(node_, inst_);
      if (st == nullptr) return;
      if (!st->mu.try_lock()) {
        under_lock.emplace_back(record.message);
        return;
      }
      st->mu.unlock();
    }
    std::vector<std::string> lines;
    std::vector<std::string> under_lock;

   private:
    Node& node_;
    const std::string inst_;
    std::mutex mu_;
  } sink(*node_, inst_);
  LogSink* previous = SetLogSink(&sink);
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    CO_ASSERT_OK(r, "new_table(counter)");
    EXPECT_TRUE(r->created) << "an uninitialised segment is handed out as created";
  });
  SetLogSink(previous);
  bool uninitialised = false, unrecorded = false;
  for (const std::string& line : sink.lines) {
    uninitialised |= line.find("was never initialised") != std::string::npos;
    unrecorded |= line.find("not recorded in") != std::string::npos;
  }
  EXPECT_TRUE(uninitialised) << "the uninitialised segment's warning";
  EXPECT_TRUE(unrecorded) << "the directory's warning";
  EXPECT_TRUE(sink.under_lock.empty())
      << sink.under_lock.size() << " line(s) under the lock, first: " << sink.under_lock.front();
}

// AddTable of a shared table the client made records it in the directory of shared tables, as
// NewTable does (before, only NewTable did: a program restarted after a crash could not list
// such a table nor DelTable it by name), and DelTable forgets the record and removes the segment.
TEST_F(SharedManagedTableTest, AddTableRecordsASharedTableAndDelTableForgetsIt) {
  const std::string segment = options_.shared->segment;
  WithOwnSharedTable([segment](Process& self, Etsmgr mgr, IntTable& mine) -> Task<void> {
    CO_ASSERT_OK(mine.Insert(kCounter, 42), "insert");
    absl::StatusOr<ManagedTableRef> r = co_await mgr.AddTable(self, "added", mine.any());
    CO_ASSERT_OK(r, "add_table(added)");
    absl::StatusOr<ManagerInfo> before = co_await mgr.Info(self);
    CO_ASSERT_OK(before, "info after add_table");
    CO_ASSERT_TRUE(before->shared_tables.size() == 1, "one shared table recorded by add_table");
    const SharedTableRecord& t = before->shared_tables[0];
    EXPECT_EQ(t.name, "added") << "the record's name";
    EXPECT_EQ(t.segment, segment) << "the record's segment";
    EXPECT_EQ(t.key_type, "long") << "the record's key type";
    EXPECT_EQ(t.value_type, "long") << "the record's value type";
    EXPECT_TRUE(t.held) << "the record: held";
    absl::Status del = co_await mgr.DelTable(self, "added");
    EXPECT_TRUE(del.ok()) << "del_table(added): " << del;
    absl::StatusOr<ManagerInfo> after = co_await mgr.Info(self);
    CO_ASSERT_OK(after, "info after del_table");
    EXPECT_EQ(after->shared_tables.size(), 0u) << "del_table forgets the record";
  });
  EXPECT_FALSE(Exists(SegmentPath()));
}

// A shared table whose name the directory cannot hold is refused by add_table, as by new_table
// (before, it was managed and left out of the directory with a warning).
TEST_F(SharedManagedTableTest, AddTableRefusesASharedTableWhoseNameCannotBeRecorded) {
  WithOwnSharedTable([](Process& self, Etsmgr mgr, IntTable& mine) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.AddTable(self, std::string(kMaxSharedTableName + 1, 'n'), mine.any());
    EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kInvalidArgument));
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    CO_ASSERT_OK(info, "info");
    EXPECT_TRUE(info->tables.empty()) << "nothing managed";
    EXPECT_TRUE(mine.Insert(kCounter, 1).ok()) << "the caller keeps its table";
  });
}

TEST_F(SharedManagedTableTest, TwoLiveProgramsCannotBothHoldIt) {
  ForkProgram(/*writes=*/3);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -1);
  for (int64_t i = 1; i <= 3; ++i) ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), i);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -3);  // Alive, holding it.
  const pid_t holder = child_;
  const absl::StatusOr<Claimed> refused = NewTableHere();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists)
      << "new_table of a table a live program holds: " << refused.status();
  EXPECT_NE(refused.status().message().find(absl::StrCat("pid ", holder)), std::string::npos)
      << refused.status();
  KillProgram();
  // The holder is dead: the kernel released its claim, and the table comes back.
  EXPECT_CLAIMED(NewTableHere(), false, 3);
}

TEST_F(SharedManagedTableTest, ANewTableIsCreatedAndDelTableRemovesIt) {
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    CO_ASSERT_OK(r, "new_table(counter)");
    EXPECT_TRUE(r->created) << "a new shared table is created";
    IntTable t = IntTable::Attach(r->table).value();
    (void)t.Insert(kCounter, 5);
    absl::Status del = co_await mgr.DelTable(self, "counter");
    EXPECT_TRUE(del.ok()) << "del_table(counter): " << del;
    EXPECT_FALSE(t.alive()) << "del_table deletes the table";
  });
  EXPECT_FALSE(Exists(SegmentPath()));
  EXPECT_FALSE(Exists(ClaimPath()));
  EXPECT_CLAIMED(NewTableHere(), true, -1);  // A fresh, empty table.
}

// del_table of a shared table another process owns (given away; protected): the owner keeps
// it while it lives, and its segment goes with it, not left for a later new_table to bring back
// what was deleted (before, del_table answered OK, dropped the record and the segment stayed).
TEST_F(SharedManagedTableTest, ADelTableOfATableAnotherProcessOwnsRemovesItsSegmentWithIt) {
  struct Go {};
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  Pid holder =
      node_->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Go>(); }).value();
  RunInProcess(*node_, [options, mgr, holder](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    CO_ASSERT_OK(r, "new_table(counter)");
    IntTable t = IntTable::Attach(r->table).value();
    CO_ASSERT_OK(t.Insert(kCounter, 5), "insert");
    CO_ASSERT_OK(r->table.GiveAway(holder), "give it to another process");
    absl::Status del = co_await mgr.DelTable(self, "counter");
    EXPECT_TRUE(del.ok()) << "del_table(counter): " << del;
    EXPECT_TRUE(t.alive()) << "its owner keeps it while it lives";
  });
  EXPECT_TRUE(Exists(SegmentPath()));
  Send(holder, Go{});
  AwaitDeath(*node_, holder);
  EXPECT_FALSE(Exists(SegmentPath())) << "the segment goes with the table";
  EXPECT_FALSE(Exists(ClaimPath()));
  EXPECT_CLAIMED(NewTableHere(), true, -1);  // A fresh, empty table.
}

// Close of a shared ManagedTable answers OK and the segment goes (del_table deletes a shared
// table with its segment; Close's own delete then answered NotFound for the deleted table).
TEST_F(SharedManagedTableTest, CloseOfASharedManagedTableIsOk) {
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTable<int64_t, int64_t>> t =
        co_await ManagedTable<int64_t, int64_t>::Open(
            self, mgr, "counter", options,
            [](IntTable& fresh) { return fresh.Insert(kCounter, 1); });
    CO_ASSERT_OK(t, "open");
    absl::Status closed = co_await t->Close(self);
    EXPECT_TRUE(closed.ok()) << closed;
    EXPECT_FALSE(t->table().alive());
  });
  EXPECT_FALSE(Exists(SegmentPath())) << "the segment goes with the table";
}

// del_table of a shared table another process owns releases it, then deletes it after the
// instance's lock. If the owner registers it anew in between (its add_table answered OK), the
// table is managed again and stays: del_table deleted it (segment and all) under its new keeper.
std::function<void()>* g_between_release_and_delete = nullptr;
// In a process of `node` (spawned with `spawn`): new_table "counter" of `inst` with `options`,
// kCounter = 5 in it, the table given to `owner`, then del_table of it, with `between` run inside
// del_table after its release and before its delete. *table: the table.
void DelTableOfAGivenAwayTable(Node& node, const std::string& inst, const TableOptions& options,
                               const Pid& owner, AnyTable* table, std::function<void()> between,
                               SpawnOptions spawn = {}) {
  g_between_release_and_delete = &between;
  manager_internal::g_del_table_hook.store(
      +[](const std::string&) { (*g_between_release_and_delete)(); });
  Etsmgr mgr(inst);
  RunInProcess(
      node,
      [options, mgr, owner, table](Process& self) -> Task<void> {
        absl::StatusOr<ManagedTableRef> r =
            co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
        CO_ASSERT_OK(r, "new_table(counter)");
        *table = r->table;
        CO_ASSERT_OK(IntTable::Attach(*table)->Insert(kCounter, 5), "insert");
        CO_ASSERT_OK(table->GiveAway(owner), "give it to another process");
        absl::Status del = co_await mgr.DelTable(self, "counter");
        EXPECT_TRUE(del.ok()) << "del_table(counter): " << del;
      },
      spawn);
  manager_internal::g_del_table_hook.store(nullptr);
}
TEST_F(SharedManagedTableTest, ATableRegisteredAgainBeforeDelTableDeletesItStays) {
  struct Take {
    AnyTable table;
  };
  struct Never {};
  node_ = Node::Create({.schedulers = 2}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  options.access = Access::kPublic;  // del_table's caller may delete it (not only its owner).
  Etsmgr mgr(inst_);
  auto added = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> added_result = added->get_future();
  SpawnOptions on_one;
  on_one.scheduler = 1;
  on_one.pin = true;
  Pid owner = node_
                  ->Spawn(
                      [mgr, added](Process& self) -> Task<void> {
                        Take take = co_await self.Receive<Take>();
                        absl::StatusOr<ManagedTableRef> r =
                            co_await mgr.AddTable(self, "counter", take.table);
                        added->set_value(r.status());
                        co_await self.Receive<Never>();
                      },
                      on_one)
                  .value();
  AnyTable table;
  // In del_table, between the release and the delete (on scheduler 0, blocked meanwhile): the
  // owner, on scheduler 1, registers the table again.
  std::function<void()> between = [&] {
    Send(owner, Take{table});
    EXPECT_EQ(added_result.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  };
  SpawnOptions on_zero;
  on_zero.scheduler = 0;
  on_zero.pin = true;
  DelTableOfAGivenAwayTable(*node_, inst_, options, owner, &table, between, on_zero);
  ASSERT_EQ(added_result.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  absl::Status add = added_result.get();
  EXPECT_TRUE(add.ok()) << "the owner's add_table: " << add;
  EXPECT_TRUE(table.alive()) << "a table whose add_table was answered OK was deleted";
  EXPECT_TRUE(Exists(SegmentPath()));
  RunInProcess(*node_, [mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagerInfo> info = co_await mgr.Info(self);
    CO_ASSERT_OK(info, "info");
    EXPECT_EQ(info->counters.tables_lost, 0u);
    EXPECT_EQ(info->tables.size(), 1u) << "the table is managed again";
    if (info->tables.size() == 1) {
      EXPECT_EQ(info->tables[0].name, "counter");
    }
  });
  EXPECT_EQ(IntTable::Attach(table)->Get(kCounter).value(), std::optional<int64_t>(5));
  Send(owner, Never{});
  AwaitDeath(*node_, owner);
}

// The same window, but the table's new registration has already ended when del_table goes on
// (its instance discarded it, releasing it to its live owner): the table was registered anew
// since del_table's release, so del_table's late delete leaves it alone. Before, it deleted it
// unmarked, keeping the segment for a restarted program to bring the deleted data back.
TEST_F(SharedManagedTableTest, ATableKeptAndReleasedAgainBeforeDelTableDeletesItStays) {
  struct Never {};
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  options.access = Access::kPublic;
  Pid owner =
      node_->Spawn([](Process& self) -> Task<void> { co_await self.Receive<Never>(); }).value();
  AnyTable table;
  std::function<void()> between = [&] {
    // Another keeper (another instance's, say) takes the table and lets it go to its owner.
    auto keeper = std::make_shared<TableKeeper>();
    EXPECT_TRUE(keeper->Keep(table, nullptr).ok());
    absl::StatusOr<bool> released = keeper->Release(table);
    EXPECT_TRUE(released.ok() && !*released) << "released to its live owner";
  };
  DelTableOfAGivenAwayTable(*node_, inst_, options, owner, &table, between);
  EXPECT_TRUE(table.alive()) << "a table registered anew since the release was deleted";
  EXPECT_EQ(IntTable::Attach(table)->Get(kCounter).value(), std::optional<int64_t>(5));
  Send(owner, Never{});
  AwaitDeath(*node_, owner);
}

// del_table of a shared table another process owns leaves it to that process (it goes, with its
// segment, when that process exits). A program killed before then leaves the segment: the next
// program's new_table hands it out as a new, empty table, not with the deleted table's data.
TEST_F(SharedManagedTableTest, ADeletedTableIsNotBroughtBackByAProgramKilledBeforeItWent) {
  ForkWithClient([](Process& self, int ack, TableOptions options, Etsmgr mgr) -> Task<void> {
    struct Never {};  // (Not the table's transfer message: the holder must not exit.)
    absl::StatusOr<Pid> holder =
        self.node().Spawn([](Process& p) -> Task<void> { co_await p.Receive<Never>(); });
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    if (!holder.ok() || !r.ok() || !IntTable::Attach(r->table)->Insert(kCounter, 5).ok()) {
      _exit(4);
    }
    if (!r->table.GiveAway(*holder).ok()) _exit(6);
    if (!(co_await mgr.DelTable(self, "counter")).ok()) _exit(8);
    WriteValue(ack, -6);
    co_await self.Receive();  // Until killed.
  });
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -6);
  KillProgram();
  EXPECT_TRUE(Exists(SegmentPath())) << "its owner was alive: the table had not gone yet";
  EXPECT_CLAIMED(NewTableHere(), true, -1);  // New and empty.
}

// A table whose segment is still marked not initialised (its client, which was to initialise it,
// had not yet said so) and that its client then hands to the manager with add_table counts as
// filled: a program killed afterwards leaves it for the next new_table with its data.
TEST_F(SharedManagedTableTest, AddTableOfATableNotYetInitialisedMarksItsSegmentFilled) {
  ForkWithClient([](Process& self, int ack, TableOptions options, Etsmgr mgr) -> Task<void> {
    manager_internal::TableFactory factory = manager_internal::FactoryFor<int64_t, int64_t>();
    factory.caller_marks_initialised = true;  // As ManagedTable::Open, whose init never said so.
    absl::StatusOr<ManagedTableRef> r = co_await manager_internal::EtsmgrAccess::NewTableErased(
        mgr, self, "counter", options, std::move(factory), absl::Seconds(10));
    if (!r.ok() || !r->created) _exit(4);
    absl::StatusOr<ManagedTableRef> added = co_await mgr.AddTable(self, "counter", r->table);
    if (!added.ok() || !IntTable::Attach(r->table)->Insert(kCounter, 7).ok()) _exit(6);
    WriteValue(ack, -6);
    co_await self.Receive();  // Until killed.
  });
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -6);
  KillProgram();
  EXPECT_CLAIMED(NewTableHere(), false, 7);
}

// A segment a dead program left uninitialised is emptied before its table is published under its
// name: a write through the name (FindTable) once the table is found is never wiped by the
// emptying. (It was emptied after Table::New had published it: the write, acknowledged, went.)
// The factory here writes through the name right after the table was made, as another process
// could in that moment.
Node* g_write_through_name_node = nullptr;
absl::StatusOr<AnyTable> CreateThenWriteThroughTheName(TableOptions options) {
  const std::string name = options.name;
  absl::StatusOr<AnyTable> made =
      manager_internal::CreateTable<int64_t, int64_t>(std::move(options));
  if (!made.ok()) return made;
  absl::StatusOr<IntTable> found = IntTable::Find(*g_write_through_name_node, name);
  if (!found.ok() || !found->Insert(kCounter, 42).ok()) {
    return absl::InternalError("the write through the table's name failed");
  }
  return made;
}

TEST_F(SharedManagedTableTest, AnUninitialisedSegmentIsEmptiedBeforeItsTableCanBeFoundByName) {
  {
    absl::StatusOr<SharedMap<int64_t, int64_t>> left = MakeUninitialisedSegment();
    ASSERT_TRUE(left.ok()) << left.status();
    ASSERT_TRUE(left->Insert(kCounter, 99).ok());
    ASSERT_TRUE(left->Insert(kCounter + 1, 99).ok());
  }
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  g_write_through_name_node = node_.get();
  TableOptions options = options_;
  options.name = "named-counter";
  options.access = Access::kPublic;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    manager_internal::TableFactory factory = manager_internal::FactoryFor<int64_t, int64_t>();
    factory.create = &CreateThenWriteThroughTheName;
    absl::StatusOr<ManagedTableRef> r = co_await manager_internal::EtsmgrAccess::NewTableErased(
        mgr, self, "counter", options, std::move(factory), absl::Seconds(10));
    CO_ASSERT_OK(r.status(), "new_table counter");
    EXPECT_TRUE(r->created) << "an uninitialised segment is handed out as created";
    IntTable t = IntTable::Attach(r->table).value();
    EXPECT_EQ(t.Get(kCounter).value(), std::optional<int64_t>(42))
        << "the write through the name stays";
    EXPECT_EQ(t.Get(kCounter + 1).value(), std::nullopt) << "the dead program's half-fill went";
    EXPECT_EQ(t.Size().value(), 1u);
  });
}

// A segment left uninitialised that cannot even be emptied (a shard's region word points past the
// file) is removed with its claim: the new_table that found it fails, the next one starts fresh
// (it failed the same way for ever when the emptying moved into Table::New without this).
TEST_F(SharedManagedTableTest,
       AnUninitialisedSegmentThatCannotBeEmptiedGoesAndTheNextNewTableStartsFresh) {
  {
    absl::StatusOr<SharedMap<int64_t, int64_t>> left = MakeUninitialisedSegment();
    ASSERT_TRUE(left.ok()) << left.status();
    for (int64_t k = 0; k < 100; ++k) ASSERT_TRUE(left->Insert(k, k).ok());
  }
  {
    using shared_internal::ImmutableHeader;
    using shared_internal::ShardHeader;
    int fd = open(SegmentPath().c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ImmutableHeader fixed;
    ASSERT_EQ(pread(fd, &fixed, sizeof fixed, 0), static_cast<ssize_t>(sizeof fixed));
    const uint64_t far = (uint64_t{1} << 27) | 20;  // a region far beyond the file
    const off_t at = static_cast<off_t>(shared_internal::kShardsOffset + fixed.shard_stride +
                                        offsetof(ShardHeader, region));
    ASSERT_EQ(pwrite(fd, &far, sizeof far, at), static_cast<ssize_t>(sizeof far));
    close(fd);
  }
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  RunInProcess(*node_, [options, mgr](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> first =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    EXPECT_FALSE(first.ok());
    EXPECT_NE(first.status().message().find("could not be emptied"), std::string::npos)
        << first.status();
  });
  EXPECT_FALSE(Exists(SegmentPath())) << "the segment that could not be emptied went";
  EXPECT_FALSE(Exists(ClaimPath()));
  EXPECT_CLAIMED(NewTableHere(), true, -1);
}

// The mark del_table leaves on a table another process keeps goes when that process manages it
// again (add_table): from then on it is a managed table like any other. Here a discard then
// leaves it to its owner, whose exit loses it inside the program: the segment stays (what
// happens to any table lost with its owner inside a program), not removed by a stale mark.
TEST_F(SharedManagedTableTest, AddTableAfterDelTableClearsItsDeleteMark) {
  struct Add {};
  struct Quit {};
  node_ = Node::Create({.schedulers = 1}).value();
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  TableOptions options = options_;
  Etsmgr mgr(inst_);
  auto table = std::make_shared<AnyTable>();
  auto added = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> added_done = added->get_future();
  Pid holder = node_
                   ->Spawn(
                       [mgr, table, added](Process& self) -> Task<void> {
                         co_await self.Receive<Add>();
                         absl::StatusOr<ManagedTableRef> r =
                             co_await mgr.AddTable(self, "counter", *table);
                         added->set_value(r.status());
                         co_await self.Receive<Quit>();
                       },
                       {.trap_exit = true})  // Outlives the manager's stop.
                   .value();
  RunInProcess(*node_, [options, mgr, holder, table](Process& self) -> Task<void> {
    absl::StatusOr<ManagedTableRef> r =
        co_await mgr.NewTable<int64_t, int64_t>(self, "counter", options);
    CO_ASSERT_OK(r, "new_table(counter)");
    CO_ASSERT_OK(IntTable::Attach(r->table)->Insert(kCounter, 5), "insert");
    CO_ASSERT_OK(r->table.GiveAway(holder), "give it to another process");
    absl::Status del = co_await mgr.DelTable(self, "counter");
    CO_ASSERT_OK(del, "del_table(counter)");
    *table = r->table;
  });
  Send(holder, Add{});
  ASSERT_EQ(added_done.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  ASSERT_TRUE(added_done.get().ok()) << "add_table by its owner";
  ASSERT_TRUE(StopManager(*node_, inst_, {.discard_tables = true}).ok());
  Send(holder, Quit{});
  AwaitDeath(*node_, holder);
  EXPECT_TRUE(Exists(SegmentPath())) << "lost with its owner inside the program: it stays";
  // With its data: add_table made it initialised again (del_table had marked it not).
  ASSERT_TRUE(StartManager(*node_, inst_).ok());
  EXPECT_CLAIMED(NewTableHere(), false, 5);
}

TEST_F(SharedManagedTableTest, ADiscardRemovesTheSegmentsOfHeldTables) {
  EXPECT_CLAIMED(NewTableHere(), true, -1);  // The client exits: the instance holds it.
  EXPECT_TRUE(Exists(SegmentPath()));
  ASSERT_TRUE(StopManager(*node_, inst_, {.discard_tables = true}).ok());
  EXPECT_FALSE(Exists(SegmentPath()));
  EXPECT_FALSE(Exists(ClaimPath()));
}

TEST_F(SharedManagedTableTest, AStopWithoutDiscardKeepsTheSegment) {
  EXPECT_CLAIMED(NewTableHere(), true, -1);
  ASSERT_TRUE(StopManager(*node_, inst_).ok());
  node_.reset();  // The whole runtime goes, as at a normal exit of the program.
  EXPECT_TRUE(Exists(SegmentPath()));
  EXPECT_CLAIMED(NewTableHere(), false, -1);
}

TEST_F(SharedManagedTableTest, AClientCrashInsideTheProgramIsTheUsualHandBack) {
  ForkProgram(/*writes=*/0);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -1);
  ASSERT_EQ(ReadValue(ack_, std::chrono::seconds(20)), -3);
  KillProgram();
  // In this program: a client takes it, is killed, and the next client gets it from the
  // instance (the in-process heir), with no second claim.
  EXPECT_CLAIMED(NewTableHere(), false, -1);
  const absl::StatusOr<Claimed> again = NewTableHere();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created) << "the next client gets it from the instance, not created";
}

}  // namespace
}  // namespace etsmgr
