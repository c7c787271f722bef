#include "etscounter/counter.h"

#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etsmgr/base/log.h"
#include "etsmgr/manager/managed_table.h"
#include "etsmgr/process/call.h"
#include "etsmgr/process/supervisor.h"

namespace etscounter {
namespace {

using etsmgr::Call;
using etsmgr::CallRequest;
using etsmgr::ExitReason;
using etsmgr::Logf;
using etsmgr::LogLevel;
using etsmgr::Message;
using etsmgr::Pid;
using etsmgr::Process;
using etsmgr::Task;
using Contents = std::vector<std::pair<std::string, int64_t>>;
using CounterTable = etsmgr::ManagedTable<CounterKey, int64_t>;

struct CountRequest {};
struct CheckRequest {};
struct DieRequest {};

absl::StatusOr<Contents> ReadAll(CounterTable& t) {
  absl::StatusOr<std::vector<std::pair<CounterKey, int64_t>>> all = t.table().ToList();
  if (!all.ok()) return all.status();
  Contents out;
  for (const auto& [key, value] : *all) out.emplace_back(key.str(), value);
  return out;
}

Task<void> CounterServer(Process& self, StorageOptions storage) {
  etsmgr::TableOptions options;
  if (!storage.shared_segment.empty()) {
    options.shared = etsmgr::SharedStorage{.segment = storage.shared_segment};
    options.shared->map.directory = storage.shared_directory;
    options.shared->map.shards = 1;  // One key.
    options.shared->map.max_bytes = uint64_t{1} << 20;
  }
  absl::StatusOr<CounterTable> opened = co_await CounterTable::Open(
      self, etsmgr::Etsmgr(storage.instance), kTableName, options,
      [](etsmgr::Table<CounterKey, int64_t>& fresh) { return fresh.Insert("count", 0); });
  if (!opened.ok()) {
    Logf(LogLevel::kError, "%s: no table: %s", kServerName, opened.status().ToString().c_str());
    ExitReason reason = ExitReason::Custom(std::string(opened.status().message()));
    co_await self.Exit(std::move(reason));
  }
  CounterTable& t = *opened;
  absl::StatusOr<Contents> contents = ReadAll(t);
  absl::StatusOr<etsmgr::TableInfo> info = t.table().Info();
  Logf(LogLevel::kNotice, "%s: got %s from the manager %s (%s), data %s, storage %s", kServerName,
       t.table().any().ToString().c_str(), t.manager().ToString().c_str(),
       t.created() ? "new" : "not new: its data kept",
       contents.ok() ? FormatContents(*contents).c_str() : "?",
       info.ok() ? info->storage.c_str() : "?");
  while (true) {
    Message m = co_await self.Receive();
    absl::StatusOr<bool> handled = co_await t.Handle(self, m);
    if (!handled.ok()) {
      // The manager did not come back in time: crash, and let the supervisor retry.
      Logf(LogLevel::kError, "%s: %s", kServerName, handled.status().ToString().c_str());
      throw std::runtime_error(std::string(handled.status().message()));
    }
    if (*handled) continue;
    if (const auto* r = m.As<CallRequest<CountRequest>>()) {
      // With a default: a shared table whose first program died between creating the segment
      // and initialising it comes back (created == false) without the key.
      absl::StatusOr<int64_t> n = t.table().UpdateCounter("count", 1, {.default_value = 0});
      if (n.ok()) Logf(LogLevel::kNotice, "%s: Counter %d.", kServerName, *n);
      etsmgr::ReplyTo(*r, n);
    } else if (const auto* c = m.As<CallRequest<CheckRequest>>()) {
      absl::StatusOr<Contents> all = ReadAll(t);
      if (all.ok()) {
        Logf(LogLevel::kNotice, "%s: Table: %s, Data %s.", kServerName,
             t.table().any().ToString().c_str(), FormatContents(*all).c_str());
      }
      etsmgr::ReplyTo(*c, all);
    } else if (m.Is<DieRequest>()) {
      Logf(LogLevel::kNotice, "%s: dying as asked (exit kill)", kServerName);
      co_await self.Exit(ExitReason::Kill());
    } else if (const auto* x = m.As<etsmgr::ExitSignal>()) {
      // Besides the manager (handled above) only the supervisor is linked to us: its exit
      // signal (shutdown) ends the server, as a gen_server's parent's does.
      Logf(LogLevel::kNotice, "%s: exit signal from %s (%s); stopping", kServerName,
           x->from.ToString().c_str(), x->reason.ToString().c_str());
      ExitReason reason = x->reason;
      co_await self.Exit(std::move(reason));
    } else {
      Logf(LogLevel::kWarning, "%s: unexpected %s message ignored", kServerName, m.type_name());
    }
  }
}

// Runs `body` in a fresh process and waits for the status it yields. The body bounds itself by
// `limit`; twice that is the backstop if the node stops running it (DeadlineExceeded).
template <typename T>
absl::StatusOr<T> InProcess(etsmgr::Node& node, absl::Duration limit,
                            std::function<Task<absl::StatusOr<T>>(Process&)> body) {
  return node.Run(std::move(body), {}, limit * 2);
}

template <typename Reply, typename Request>
absl::StatusOr<Reply> CallCounter(etsmgr::Node& node, absl::Duration timeout, const char* what) {
  return InProcess<Reply>(
      node, timeout, [timeout, what](Process& self) -> Task<absl::StatusOr<Reply>> {
        Pid server = self.node().Whereis(kServerName);
        if (!server.valid()) {
          co_return absl::UnavailableError(
              absl::StrCat(what, ": ", kServerName, " is not running"));
        }
        absl::StatusOr<absl::StatusOr<Reply>> r =
            co_await Call<absl::StatusOr<Reply>>(self, server, Request{}, timeout);
        if (!r.ok()) co_return r.status();
        co_return std::move(*r);
      });
}

}  // namespace

std::string FormatContents(const Contents& contents) {
  std::vector<std::string> items;
  for (const auto& [key, value] : contents)
    items.push_back(absl::StrCat("{", key, ",", value, "}"));
  return absl::StrCat("[", absl::StrJoin(items, ","), "]");
}

absl::Status StartCounter(etsmgr::Node& node, const StorageOptions& storage) {
  std::vector<etsmgr::ChildSpec> children;
  children.push_back(etsmgr::ChildSpec{
      .id = kServerName, .start = [storage](Process& sup) -> Task<absl::StatusOr<Pid>> {
        etsmgr::SpawnOptions options;
        options.name = kServerName;
        options.trap_exit = true;
        co_return sup.SpawnLink([storage](Process& self) { return CounterServer(self, storage); },
                                options);
      }});
  etsmgr::SupervisorFlags flags;
  flags.strategy = etsmgr::RestartStrategy::kOneForOne;
  flags.intensity = 10;
  flags.period = absl::Seconds(10);
  etsmgr::SpawnOptions options;
  options.name = kSupervisorName;
  absl::StatusOr<Pid> sup = etsmgr::StartSupervisor(node, flags, std::move(children), options);
  return sup.status();
}

absl::StatusOr<int64_t> CounterClient::Count() {
  return CallCounter<int64_t, CountRequest>(node_, timeout_, "count");
}

absl::StatusOr<Contents> CounterClient::Check() {
  return CallCounter<Contents, CheckRequest>(node_, timeout_, "check");
}

absl::Status CounterClient::Die() { return KillAndAwaitRestart(kServerName, Ending::kAskToDie); }
absl::Status CounterClient::Kill() { return KillAndAwaitRestart(kServerName, Ending::kKill); }
absl::Status CounterClient::KillManager() {
  return KillAndAwaitRestart(etsmgr::Etsmgr(instance_).server_name(), Ending::kKill);
}

absl::Status CounterClient::KillAndAwaitRestart(const std::string& name, Ending ending) {
  absl::Duration timeout = timeout_;
  absl::StatusOr<bool> done = InProcess<bool>(
      node_, timeout, [name, ending, timeout](Process& self) -> Task<absl::StatusOr<bool>> {
        Pid victim = self.node().Whereis(name);
        if (!victim.valid()) co_return absl::UnavailableError(name + " is not running");
        uint64_t ref = self.Monitor(victim);
        if (ending == Ending::kAskToDie) {
          etsmgr::Send(victim, DieRequest{});
        } else {
          etsmgr::SendExit(victim, ExitReason::Kill());
        }
        // Gone: its links fired before this Down, so every exit signal it caused is queued.
        std::optional<Message> down = co_await self.ReceiveIf(
            [ref](const etsmgr::Envelope& e) {
              const etsmgr::Down* d = e.As<etsmgr::Down>();
              return d != nullptr && d->ref == ref;
            },
            etsmgr::Deadline(timeout));
        if (!down) co_return absl::DeadlineExceededError(name + " did not exit");
        std::optional<Pid> back = co_await self.WaitForRegistered(name, etsmgr::Deadline(timeout));
        if (!back) co_return absl::DeadlineExceededError(name + " was not restarted");
        co_return true;
      });
  return done.status();
}

absl::StatusOr<etsmgr::ManagerInfo> CounterClient::Info() {
  absl::Duration timeout = timeout_;
  std::string instance = instance_;
  return InProcess<etsmgr::ManagerInfo>(
      node_, timeout,
      [timeout, instance](Process& self) -> Task<absl::StatusOr<etsmgr::ManagerInfo>> {
        etsmgr::Etsmgr mgr(instance);
        absl::StatusOr<etsmgr::ManagerInfo> info = co_await mgr.Info(self, timeout);
        co_return info;
      });
}

}  // namespace etscounter
