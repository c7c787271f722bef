// Test helpers for process tests: run a probe process and wait for what it reports.
#ifndef ETSMGR_PROCESS_INTERNAL_TEST_UTIL_H_
#define ETSMGR_PROCESS_INTERNAL_TEST_UTIL_H_

#include <chrono>
#include <future>
#include <memory>
#include <string>

#include "etsmgr/process/node.h"
#include "gtest/gtest.h"

namespace etsmgr {

// Spawns `body` as a process and waits (up to `limit`) for the value it passes to `report`.
// Returns "<timeout>" if the probe never reported.
using ProbeBody = std::function<Task<void>(Process&, std::function<void(std::string)> report)>;

inline std::string RunProbe(Node& node, ProbeBody body, SpawnOptions options = {},
                            std::chrono::seconds limit = std::chrono::seconds(20)) {
  using T = std::string;
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> future = promise->get_future();
  auto reported = std::make_shared<std::atomic<bool>>(false);
  std::function<void(T)> report = [promise, reported](T value) {
    if (!reported->exchange(true)) promise->set_value(std::move(value));
  };
  absl::StatusOr<Pid> pid = node.Spawn(
      [body = std::move(body), report](Process& self) -> Task<void> { return body(self, report); },
      options);
  EXPECT_TRUE(pid.ok()) << pid.status();
  if (future.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "probe did not report within the limit";
    return T();
  }
  return future.get();
}

// In a process: waits until `pid` has exited (a monitor and its Down; at once for a dead pid) and
// yields the reason. Other messages stay queued.
inline Task<ExitReason> AwaitDown(Process& self, Pid pid) {
  const uint64_t ref = self.Monitor(pid);
  std::optional<Message> m = co_await self.ReceiveIf([ref](const Envelope& e) {
    const Down* d = e.As<Down>();
    return d != nullptr && d->ref == ref;
  });
  co_return m->As<Down>()->reason;
}

// From a plain thread: waits until `pid` has exited.
inline void AwaitDeath(Node& node, const Pid& pid) {
  std::string got =
      RunProbe(node, [pid](Process& self, std::function<void(std::string)> report) -> Task<void> {
        co_await AwaitDown(self, pid);
        report("dead");
      });
  ASSERT_EQ(got, "dead");
}

// Runs the synchronous `fn` inside a fresh process and waits for it to finish (gtest assertions
// inside are fine: they are thread-safe). Use it for code that must run as a process but does not
// need to suspend.
inline void RunInProcess(Node& node, std::function<void(Process&)> fn, SpawnOptions options = {}) {
  std::string got = RunProbe(
      node,
      [fn = std::move(fn)](Process& self, std::function<void(std::string)> report) -> Task<void> {
        fn(self);
        report("done");
        co_return;
      },
      std::move(options));
  EXPECT_EQ(got, "done");
}

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_INTERNAL_TEST_UTIL_H_
