// Test helpers for process tests: run a test body as a process, with its assertions in place.
//
//   TEST(Foo, Bar) {
//     auto node = Node::Create({}).value();
//     RunInProcess(*node, [&](Process& self) -> Task<void> {
//       Pid p = self.Spawn(Worker).value();
//       ExitReason why = co_await AwaitDown(self, p);
//       EXPECT_EQ(why, ExitReason::Normal()) << "the worker's exit reason";
//     });
//   }
//
// gtest's EXPECT_* and ADD_FAILURE are thread-safe and work in the body. ASSERT_* cannot be used
// in a coroutine (it `return`s): use CO_ASSERT_TRUE / CO_ASSERT_OK, which `co_return`. Nor can
// SCOPED_TRACE: gtest keeps its traces per thread, and a process may resume on another thread
// (put the context in the message instead).
#ifndef ETSMGR_PROCESS_TESTING_TEST_UTIL_H_
#define ETSMGR_PROCESS_TESTING_TEST_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/time/time.h"
#include "etsmgr/process/internal/process_control.h"
#include "etsmgr/process/node.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

// In a Task<void> body: like ASSERT_TRUE, but `co_return`s. `what` names the fact checked.
#define CO_ASSERT_TRUE(cond, what)                                           \
  do {                                                                       \
    if (!(cond)) {                                                           \
      ADD_FAILURE() << (what) << ": expected " #cond " to hold; it did not"; \
      co_return;                                                             \
    }                                                                        \
  } while (0)

// In a Task<void> body: like ASSERT_TRUE(s.ok()) << s for an absl::Status or absl::StatusOr.
#define CO_ASSERT_OK(expr, what)                                                          \
  do {                                                                                    \
    const auto& etsmgr_co_assert_ok = (expr);                                             \
    if (!etsmgr_co_assert_ok.ok()) {                                                      \
      ADD_FAILURE() << (what) << ": " #expr " is not OK: "                                \
                    << ::etsmgr::status_matchers_internal::StatusOf(etsmgr_co_assert_ok); \
      co_return;                                                                          \
    }                                                                                     \
  } while (0)

namespace etsmgr {

// Runs `body` as a fresh process and blocks until it returns. `body` is `Process& -> Task<void>`
// (asserts in place, may suspend) or `Process& -> void` (synchronous code that must run as a
// process). Fails the test, naming the reason, when the body does not finish within `limit`
// (Node::Run's timeout: the calling thread waits on the body's completion with a deadline, never
// sleeps; the process is then killed, so it stops at its next suspension point in the process
// API), or when the process exits before the body returns (killed, an exception). From a plain
// thread (the TEST body), never from a process.
template <typename F>
void RunInProcess(Node& node, F body, SpawnOptions options = {},
                  absl::Duration limit = absl::Seconds(20)) {
  struct Running {
    std::mutex mu;
    Pid pid;                 // Set when the body starts.
    bool abandoned = false;  // Set at the limit: a body not yet started never starts.
  };
  auto running = std::make_shared<Running>();
  auto wrapped = [running, body = std::move(body)](Process& self) mutable -> Task<void> {
    {
      std::lock_guard<std::mutex> lock(running->mu);
      if (running->abandoned) co_return;
      running->pid = self.self();
    }
    if constexpr (std::is_void_v<std::invoke_result_t<F&, Process&>>) {
      body(self);
    } else {
      co_await body(self);
    }
  };
  absl::Status done = node.Run(std::move(wrapped), std::move(options), limit);
  if (absl::IsDeadlineExceeded(done)) {
    ADD_FAILURE() << "RunInProcess: the body did not finish within " << limit << " (" << done
                  << ")";
    Pid pid;
    {
      std::lock_guard<std::mutex> lock(running->mu);
      running->abandoned = true;
      pid = running->pid;
    }
    if (!pid.valid()) return;
    // The body may refer to the caller's frame: it must be gone before this returns.
    SendExit(pid, ExitReason::Kill());
    absl::Status gone =
        node.Run([pid](Process& self) -> Task<void> { co_await AwaitDown(self, pid); }, {},
                 absl::Seconds(10));
    if (!gone.ok()) {
      std::fprintf(stderr,
                   "RunInProcess: the body ignored a kill for 10 s (it never suspends), and it may "
                   "refer to the test's frame: aborting (%s)\n",
                   gone.ToString().c_str());
      std::abort();
    }
    return;
  }
  EXPECT_TRUE(done.ok()) << "RunInProcess: the body did not return: " << done;
}

// From a plain thread: waits until `pid` has exited.
inline void AwaitDeath(Node& node, const Pid& pid) {
  RunInProcess(node, [pid](Process& self) -> Task<void> { co_await AwaitDown(self, pid); });
}

// Holds a process's exit in one of its exit hooks until the test opens the gate: the test acts
// while the process is exiting (its exit procedure begun, its exit hooks not all run).
//
//   ExitGate gate;
//   ... in the process (capturing gate.handle() by value): handle.Install(self.self()); co_return;
//   ASSERT_TRUE(gate.WaitEntered());  ... act while it exits ...  gate.Open();
//
// The hook blocks the scheduler thread it runs on: the node needs another scheduler, and the
// held process and whatever the test runs meanwhile should be pinned to different schedulers
// (SpawnOptions::scheduler and pin; a process queued on the blocked one waits for the gate). The
// gate opens when it is destroyed (a test that failed half-way lets the exit go on); a process
// holds only a handle, never the gate, so nothing it does outlives the gate's frame.
class ExitGate {
  struct State;

 public:
  class Handle {
   public:
    // From the process whose exit is to be held.
    void Install(const Pid& self) const {
      process_internal::ProcessAccess::AddExitHook(
          self,
          [state = state_](const Pid&, const ExitReason&) {
            state->Entered();
            state->go_future.wait();
          },
          nullptr);
    }
    // The process gives up before exiting (a failed step): WaitEntered returns at once.
    void GiveUp() const { state_->Entered(); }

   private:
    friend class ExitGate;
    explicit Handle(std::shared_ptr<State> state) : state_(std::move(state)) {}
    std::shared_ptr<State> state_;
  };

  ExitGate() : state_(std::make_shared<State>()) {}
  ~ExitGate() { Open(); }
  ExitGate(const ExitGate&) = delete;
  ExitGate& operator=(const ExitGate&) = delete;

  Handle handle() const { return Handle(state_); }
  // Whether the process entered its exit hook (or gave up) within `limit`.
  bool WaitEntered(absl::Duration limit = absl::Seconds(30)) const {
    return state_->entered_future.wait_for(absl::ToChronoSeconds(limit)) ==
           std::future_status::ready;
  }
  // Lets the exit go on (idempotent).
  void Open() { state_->Open(); }

 private:
  struct State {
    std::mutex mu;
    bool entered = false;
    bool opened = false;
    std::promise<void> entered_promise;
    std::shared_future<void> entered_future = entered_promise.get_future().share();
    std::promise<void> go;
    std::shared_future<void> go_future = go.get_future().share();
    void Entered() {
      std::lock_guard<std::mutex> lock(mu);
      if (!std::exchange(entered, true)) entered_promise.set_value();
    }
    void Open() {
      std::lock_guard<std::mutex> lock(mu);
      if (!std::exchange(opened, true)) go.set_value();
    }
  };
  std::shared_ptr<State> state_;
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_TESTING_TEST_UTIL_H_
