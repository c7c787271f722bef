#include "etscounter/shell.h"

#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "etsmgr/manager/manager.h"

namespace etscounter {
namespace {

constexpr char kHelp[] = "commands: count | check | die | kill | kill-manager | info | help | quit";

std::string DescribeInfo(const etsmgr::ManagerInfo& info) {
  std::string out = absl::StrCat("manager ", info.manager.ToString(), ", vault ",
                                 info.vault.ToString(), ", ", info.tables.size(), " table(s)");
  for (const etsmgr::ManagedTableInfo& t : info.tables) {
    absl::StrAppend(&out, "; ", t.name, ": client ",
                    t.client.valid() ? t.client.ToString() : std::string("none"), ", owner ",
                    t.owner.ToString(), ", heir ", t.heir.ToString(), ", size ", t.size);
  }
  for (const etsmgr::SharedTableRecord& t : info.shared_tables) {
    absl::StrAppend(&out, "; shared table ", t.name, ": ", t.path, t.exists ? "" : " (missing)",
                    t.held ? ", held by a live program" : ", held by none");
  }
  const etsmgr::ManagerCounters& c = info.counters;
  absl::StrAppend(&out, "; created ", c.tables_created, ", transfers to the manager ",
                  c.transfers_to_manager, ", hand-backs ", c.hand_backs,
                  ", manager restarts survived ", c.manager_restarts, ", tables lost ",
                  c.tables_lost);
  return out;
}

// Runs one command; returns false for quit. Problems are printed, never fatal.
bool Execute(App& app, const std::string& command) {
  CounterClient& client = app.client();
  auto fail = [&](const absl::Status& st) { app.sink().Print("error: " + st.ToString()); };
  if (command == "count") {
    absl::StatusOr<int64_t> n = client.Count();
    if (!n.ok()) fail(n.status());
  } else if (command == "check") {
    auto contents = client.Check();
    if (!contents.ok()) fail(contents.status());
  } else if (command == "die") {
    absl::Status st = client.Die();
    if (!st.ok()) fail(st);
  } else if (command == "kill") {
    absl::Status st = client.Kill();
    if (!st.ok()) fail(st);
  } else if (command == "kill-manager") {
    absl::Status st = client.KillManager();
    if (!st.ok()) fail(st);
  } else if (command == "info") {
    absl::StatusOr<etsmgr::ManagerInfo> info = client.Info();
    if (info.ok()) {
      app.sink().Print(DescribeInfo(*info));
    } else {
      fail(info.status());
    }
  } else if (command == "help") {
    app.sink().Print(kHelp);
  } else if (command == "quit" || command == "exit") {
    return false;
  } else {
    app.sink().Print(absl::StrCat("error: unknown command \"", command, "\" (", kHelp, ")"));
  }
  return true;
}

}  // namespace

void StreamLogSink::Write(const etsmgr::LogRecord& record) {
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E6S%Ez", record.time, absl::LocalTimeZone()),
                   " ", std::string(etsmgr::LogLevelName(record.level)), ": ",
                   std::string(record.message.data(), record.message.size()), "\n");
  std::lock_guard<std::mutex> lock(mu_);
  out_ << line << std::flush;
}

void StreamLogSink::Print(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  out_ << line << "\n" << std::flush;
}

void StreamLogSink::Prompt(const std::string& prompt) {
  std::lock_guard<std::mutex> lock(mu_);
  out_ << prompt << std::flush;
}

absl::StatusOr<std::unique_ptr<App>> App::Start(std::ostream& out, const StorageOptions& storage) {
  std::unique_ptr<App> app(new App(out));
  app->previous_sink_ = etsmgr::SetLogSink(&app->sink_);
  absl::StatusOr<std::unique_ptr<etsmgr::Node>> node = etsmgr::Node::Create({});
  if (!node.ok()) return node.status();
  app->node_ = std::move(*node);
  if (absl::Status st = etsmgr::StartManager(*app->node_, storage.instance); !st.ok()) return st;
  if (absl::Status st = StartCounter(*app->node_, storage); !st.ok()) return st;
  app->client_ = std::make_unique<CounterClient>(*app->node_, storage.instance);
  return app;
}

App::~App() {
  client_.reset();
  node_.reset();  // Shuts the runtime down before the sink goes.
  etsmgr::SetLogSink(previous_sink_);
}

int RunShell(App& app, std::istream& in, bool interactive) {
  if (interactive) app.sink().Print(std::string("etscounter shell; ") + kHelp);
  std::string line;
  while (true) {
    if (interactive) app.sink().Prompt("etscounter> ");
    if (!std::getline(in, line)) break;  // End of input: a clean shutdown.
    std::string command(absl::StripAsciiWhitespace(line));
    if (command.empty()) continue;
    if (!Execute(app, command)) break;
  }
  return 0;
}

absl::StatusOr<int64_t> RunDemo(App& app) {
  CounterClient& c = app.client();
  StreamLogSink& out = app.sink();
  int64_t count = -1;
  struct Expect {
    const char* step;
    int64_t value;  // Expected count after the step (-1: not checked here).
  };
  // The seed's run: count x2, check (2), die, check (2), count x2, kill, check (4), count x2,
  // kill-manager, check (6), count x2 (8).
  const std::vector<Expect> script = {
      {"count", 1}, {"count", 2},         {"check", 2}, {"die", -1},  {"check", 2},
      {"count", 3}, {"count", 4},         {"kill", -1}, {"check", 4}, {"count", 5},
      {"count", 6}, {"kill-manager", -1}, {"check", 6}, {"count", 7}, {"count", 8},
  };
  int n = 0;
  for (const Expect& e : script) {
    std::string step = e.step;
    out.Print(absl::StrCat("--- step ", ++n, ": ", step));
    if (step == "count") {
      absl::StatusOr<int64_t> v = c.Count();
      if (!v.ok()) return absl::Status(v.status().code(), "count: " + v.status().ToString());
      count = *v;
    } else if (step == "check") {
      auto contents = c.Check();
      if (!contents.ok())
        return absl::Status(contents.status().code(), "check: " + contents.status().ToString());
      count = contents->empty() ? -1 : contents->front().second;
    } else {
      etsmgr::Pid before = step == "kill-manager" ? c.Info()->manager : c.server();
      absl::Status st = step == "die" ? c.Die() : step == "kill" ? c.Kill() : c.KillManager();
      if (!st.ok()) return absl::Status(st.code(), step + ": " + st.ToString());
      etsmgr::Pid after = step == "kill-manager" ? c.Info()->manager : c.server();
      out.Print(absl::StrCat(
          "    crashed: ", step == "kill-manager" ? "the manager " : "the counter ",
          before.ToString(), " (", step == "die" ? "exit kill by itself" : "exit kill from outside",
          "); recovered: restarted as ", after.ToString()));
    }
    if (e.value >= 0 && count != e.value) {
      return absl::InternalError(
          absl::StrCat("step ", n, " (", step, "): count is ", count, ", expected ", e.value));
    }
  }
  absl::StatusOr<etsmgr::ManagerInfo> info = c.Info();
  if (!info.ok()) return info.status();
  out.Print(absl::StrCat("=== demo done: final count ", count, ", tables lost = ",
                         info->counters.tables_lost, " (hand-backs ", info->counters.hand_backs,
                         ", manager restarts survived ", info->counters.manager_restarts, ")"));
  if (info->counters.tables_lost != 0) return absl::InternalError("a table was lost");
  return count;
}

}  // namespace etscounter
