// The demo as a test (the counter at every step, after kill-manager too), a kill during a manager
// restart, the shell fed bad and empty input, and shared mode: the count survives a restart of
// the app and a kill -9 of the whole program (the demo's last step, with the real binary).
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "etscounter/shell.h"
#include "etsmgr/process/supervisor.h"
#include "etsmgr/process/testing/test_util.h"
#include "etsmgr/table/shared/shared_claim.h"
#include "etsmgr/table/shared/shared_map.h"
#include "etsmgr/table/shared/test_names.h"
#include "gtest/gtest.h"

namespace etscounter {
namespace {

TEST(EtscounterTest, DemoKeepsTheCountThroughEveryCrash) {
  std::ostringstream out;
  auto app = App::Start(out).value();
  absl::StatusOr<int64_t> count = RunDemo(*app);
  ASSERT_TRUE(count.ok()) << count.status() << "\n" << out.str();
  EXPECT_EQ(*count, 8);
  std::string log = out.str();
  for (const char* line :
       {"Counter 1.", "Counter 2.", "Data [{count,2}]", "Counter 4.", "Data [{count,4}]",
        "Data [{count,6}]", "Counter 8.", "waiting for its restart", "re-added to manager",
        "final count 8, tables lost = 0"}) {
    EXPECT_NE(log.find(line), std::string::npos) << line << "\n" << log;
  }
  // Log lines carry an ISO timestamp and a level, as in the seed transcript.
  EXPECT_NE(log.find("+00:00 notice: etscounter_srv: Counter 1."), std::string::npos)
      << log.substr(0, 400);
}

// Forwards log records to the sink it replaced and lets a test wait (with a deadline) for a line
// containing `needle`: the only sign that a process reached a point where it logs and then waits.
// Declare it before the App: the App's destructor, which stops every logging thread, restores the
// sink from before App::Start.
class LineWatch final : public etsmgr::LogSink {
 public:
  explicit LineWatch(std::string needle) : needle_(std::move(needle)) {}
  void Install(etsmgr::LogSink* next) {
    next_ = next;
    etsmgr::SetLogSink(this);
  }
  void Write(const etsmgr::LogRecord& record) override {
    next_->Write(record);
    if (record.message.find(needle_) == std::string_view::npos) return;
    std::lock_guard<std::mutex> lock(mu_);
    seen_ = true;
    cv_.notify_all();
  }
  bool Await(std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [this] { return seen_; });
  }

 private:
  etsmgr::LogSink* next_ = nullptr;
  const std::string needle_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool seen_ = false;
};

// Runs a supervisor call from a fresh process (up to 20 s) and returns its status.
absl::Status SupervisorCall(
    etsmgr::Node& node,
    std::function<etsmgr::Task<absl::Status>(etsmgr::Process&, etsmgr::Pid)> call) {
  etsmgr::Pid sup = node.Whereis("etsmgr_sup");
  return node.Run(
      [sup, call](etsmgr::Process& self) -> etsmgr::Task<absl::Status> {
        co_return co_await call(self, sup);
      },
      {}, absl::Seconds(20));
}

// The counter dies while the manager is down and it is inside ManagedTable::Handle waiting for
// the manager's restart: its table must go to the vault and come back, count intact, to its
// replacement. The manager's supervisor holds the manager down (terminate_child) until the
// replacement runs, and the counter's own log line says it is waiting.
TEST(EtscounterTest, CounterKilledWhileTheManagerRestarts) {
  std::ostringstream out;
  LineWatch waiting("waiting for its restart");
  auto app = App::Start(out).value();
  CounterClient& c = app->client();
  ASSERT_EQ(c.Count().value(), 1);
  ASSERT_EQ(c.Count().value(), 2);
  waiting.Install(&app->sink());
  etsmgr::Pid manager = app->node().Whereis("etsmgr_srv");
  absl::Status terminated = SupervisorCall(app->node(), [](etsmgr::Process& self, etsmgr::Pid sup) {
    return etsmgr::TerminateChild(self, sup, "manager");
  });
  ASSERT_TRUE(terminated.ok()) << "terminate_child(manager): " << terminated;
  ASSERT_TRUE(waiting.Await(std::chrono::seconds(10))) << "the counter never waited";
  ASSERT_TRUE(c.Kill().ok());
  absl::Status restarted = SupervisorCall(
      app->node(), [](etsmgr::Process& self, etsmgr::Pid sup) -> etsmgr::Task<absl::Status> {
        absl::StatusOr<etsmgr::Pid> pid = co_await etsmgr::RestartChild(self, sup, "manager");
        co_return pid.status();
      });
  ASSERT_TRUE(restarted.ok()) << "restart_child(manager): " << restarted;
  absl::StatusOr<int64_t> next = c.Count();
  ASSERT_TRUE(next.ok()) << next.status() << "\n" << out.str();
  EXPECT_EQ(*next, 3) << out.str();
  absl::StatusOr<etsmgr::ManagerInfo> info = c.Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->counters.tables_lost, 0u);
  EXPECT_NE(info->manager, manager);
}

// The supervisor's shutdown stops the server (it traps exits, so it must act on its parent's
// signal rather than be killed after the shutdown timeout).
TEST(EtscounterTest, StopsOnItsSupervisorsShutdown) {
  std::ostringstream out;
  auto app = App::Start(out).value();
  ASSERT_EQ(app->client().Count().value(), 1);
  etsmgr::RunInProcess(app->node(), [](etsmgr::Process& self) -> etsmgr::Task<void> {
    etsmgr::Pid server = self.node().Whereis(kServerName);
    etsmgr::Pid sup = self.node().Whereis(kSupervisorName);
    self.Monitor(server);
    absl::Status stopped = co_await etsmgr::StopSupervisor(self, sup);
    EXPECT_TRUE(stopped.ok()) << "stop the supervisor: " << stopped;
    etsmgr::Down down = co_await self.Receive<etsmgr::Down>();
    EXPECT_EQ(down.reason.ToString(), "shutdown") << "the server's exit reason";
  });
}

TEST(EtscounterTest, ShellReportsBadInputAndGoesOn) {
  std::ostringstream out;
  auto app = App::Start(out).value();
  std::istringstream in("bogus\n\n   \ncount\nhelp\ncheck\ninfo\n");
  EXPECT_EQ(RunShell(*app, in, /*interactive=*/false), 0);
  std::string log = out.str();
  EXPECT_NE(log.find("error: unknown command \"bogus\""), std::string::npos) << log;
  EXPECT_NE(log.find("Counter 1."), std::string::npos) << log;
  EXPECT_NE(log.find("commands: count | check"), std::string::npos) << log;
  EXPECT_NE(log.find("Data [{count,1}]"), std::string::npos) << log;
  EXPECT_NE(log.find("tables lost 0"), std::string::npos) << log;
}

TEST(EtscounterTest, ShellEndsCleanlyOnEmptyInputAndQuit) {
  std::ostringstream out;
  auto app = App::Start(out).value();
  std::istringstream empty("");
  EXPECT_EQ(RunShell(*app, empty, false), 0);
  std::istringstream quit("count\nquit\ncount\n");
  EXPECT_EQ(RunShell(*app, quit, false), 0);
  EXPECT_EQ(out.str().find("Counter 2."), std::string::npos) << "nothing runs after quit";
}

// A shared segment name for one test, removed at the end.
class Segment {
 public:
  Segment() : name_(etsmgr::shared_testing::UniqueSegmentName("etscounter-test")) {}
  ~Segment() {
    (void)etsmgr::SharedMap<CounterKey, int64_t>::Remove(name_);
    (void)etsmgr::SharedClaim::RemoveFile(name_, {});
    (void)etsmgr::shared_internal::MapCore::Remove("etsmgr-directory-" + name_, {});
  }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

TEST(EtscounterSharedTest, TheCountSurvivesARestartOfTheWholeApp) {
  Segment segment;
  std::ostringstream out;
  {
    auto app =
        App::Start(out, {.shared_segment = segment.name(), .instance = segment.name()}).value();
    ASSERT_EQ(app->client().Count().value(), 1);
    ASSERT_EQ(app->client().Count().value(), 2);
    ASSERT_TRUE(app->client().Die().ok());  // The in-program hand-back still works.
    ASSERT_EQ(app->client().Count().value(), 3);
  }  // The runtime, the manager and the counter all stop.
  auto app =
      App::Start(out, {.shared_segment = segment.name(), .instance = segment.name()}).value();
  absl::StatusOr<etsmgr::ManagerInfo> info = app->client().Info();
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->shared_tables.size(), 1u);  // Known before the counter asked (it may have).
  EXPECT_EQ(info->shared_tables[0].name, "etscounter");
  EXPECT_EQ(info->shared_tables[0].segment, segment.name());
  auto contents = app->client().Check();
  ASSERT_TRUE(contents.ok()) << contents.status() << "\n" << out.str();
  EXPECT_EQ(FormatContents(*contents), "[{count,3}]");
  EXPECT_NE(out.str().find("(not new: its data kept), data [{count,3}], storage shared segment"),
            std::string::npos)
      << out.str();
}

// A program killed after the manager made its segment but before the counter initialised it
// (the segment still says "not initialised", as the manager creates it): the next one is told
// the table is new, initialises it, and counts from zero.
TEST(EtscounterSharedTest, ASegmentLeftUninitialisedIsInitialisedAgain) {
  Segment segment;
  using Map = etsmgr::SharedMap<CounterKey, int64_t>;
  etsmgr::SharedMapOptions made_by_the_manager;
  made_by_the_manager.create_uninitialised = true;
  ASSERT_TRUE(Map::Open(segment.name(), made_by_the_manager).ok());
  std::ostringstream out;
  auto app =
      App::Start(out, {.shared_segment = segment.name(), .instance = segment.name()}).value();
  absl::StatusOr<int64_t> n = app->client().Count();
  ASSERT_TRUE(n.ok()) << n.status() << "\n" << out.str();
  EXPECT_EQ(*n, 1);
  EXPECT_NE(out.str().find("(new), data [{count,0}]"), std::string::npos) << out.str();
}

TEST(EtscounterSharedTest, AKillNineOfTheWholeProgramKeepsTheCount) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  ASSERT_TRUE(srcdir != nullptr && workspace != nullptr);
  const std::string shell = absl::StrCat(srcdir, "/", workspace, "/etscounter/shell");
  Segment segment;
  std::ostringstream log;
  StreamLogSink out(log);
  absl::StatusOr<ProgramKillResult> r = RunProgramKill(out, shell, segment.name(), 3);
  ASSERT_TRUE(r.ok()) << r.status() << "\n" << log.str();
  EXPECT_EQ(r->before, 3);
  EXPECT_EQ(r->after, 3);
  EXPECT_NE(log.str().find("program 2 | "), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("Data [{count,3}]"), std::string::npos) << log.str();
  std::cout << "kill -9 -> restarted -> count back: " << absl::FormatDuration(r->kill_to_check)
            << "\n";
}

}  // namespace
}  // namespace etscounter
