#include "etsmgr/executor/task.h"

#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "etsmgr/base/sanitizers.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

// Drives a Task<T> to completion on the calling thread. Only for tasks that complete
// synchronously (no executor involved).
template <typename T>
struct Driver {
  struct promise_type {
    Driver get_return_object() {
      return Driver{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { exception = std::current_exception(); }
    std::exception_ptr exception;
  };
  std::coroutine_handle<promise_type> handle;
  ~Driver() { handle.destroy(); }
};

template <typename T>
Driver<T> Drive(Task<T> task, std::optional<T>* out) {
  out->emplace(co_await std::move(task));
}
inline Driver<void> DriveVoid(Task<void> task, bool* done) {
  co_await std::move(task);
  *done = true;
}

template <typename T>
T SyncRun(Task<T> task) {
  std::optional<T> out;
  Driver<T> d = Drive(std::move(task), &out);
  EXPECT_TRUE(d.handle.done()) << "task did not complete synchronously";
  if (d.handle.promise().exception) std::rethrow_exception(d.handle.promise().exception);
  return std::move(*out);
}

Task<int> Answer() { co_return 42; }
Task<int> Twice() { co_return 2 * co_await Answer(); }

TEST(TaskTest, ReturnsValue) { EXPECT_EQ(SyncRun(Twice()), 84); }

Task<std::unique_ptr<std::string>> MoveOnly() { co_return std::make_unique<std::string>("hi"); }

TEST(TaskTest, ReturnsMoveOnlyValue) { EXPECT_EQ(*SyncRun(MoveOnly()), "hi"); }

int g_storage = 5;
Task<int&> Reference() { co_return g_storage; }
Task<int*> AddressOfReference() {
  int& r = co_await Reference();
  co_return &r;
}

TEST(TaskTest, ReturnsReference) { EXPECT_EQ(SyncRun(AddressOfReference()), &g_storage); }

Task<void> SetFlag(bool* flag) {
  *flag = true;
  co_return;
}

TEST(TaskTest, VoidTask) {
  bool flag = false;
  bool done = false;
  Driver<void> d = DriveVoid(SetFlag(&flag), &done);
  EXPECT_TRUE(flag);
  EXPECT_TRUE(done);
}

TEST(TaskTest, IsLazy) {
  bool flag = false;
  {
    Task<void> t = SetFlag(&flag);
    EXPECT_TRUE(t.valid());
    EXPECT_FALSE(t.done());
    EXPECT_FALSE(flag);
  }  // Destroyed without ever running.
  EXPECT_FALSE(flag);
}

Task<int> Throws() {
  throw std::runtime_error("boom");
  co_return 0;
}
Task<std::string> CatchesFromChild() {
  try {
    co_await Throws();
  } catch (const std::runtime_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not thrown";
}

TEST(TaskTest, ExceptionPropagatesToAwaiter) {
  EXPECT_EQ(SyncRun(CatchesFromChild()), "caught boom");
  EXPECT_THROW(SyncRun(Throws()), std::runtime_error);
}

Task<void> ThrowsVoid() {
  throw std::logic_error("void boom");
  co_return;
}
Task<int> AwaitThrowsVoid() {
  try {
    co_await ThrowsVoid();
  } catch (const std::logic_error&) {
    co_return 1;
  }
  co_return 0;
}

TEST(TaskTest, VoidTaskExceptionPropagates) { EXPECT_EQ(SyncRun(AwaitThrowsVoid()), 1); }

// Records how deep the stack is inside the awaited child.
Task<int> One(uintptr_t* depth) {
  int marker = 0;
  *depth = reinterpret_cast<uintptr_t>(&marker);
  co_return 1;
}
Task<long> MillionSynchronousAwaits(uintptr_t* first_depth, uintptr_t* last_depth) {
  long sum = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    sum += co_await One(i == 0 ? first_depth : last_depth);
  }
  co_return sum;
}

#if ETSMGR_ASAN || ETSMGR_TSAN
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// Without symmetric transfer each completion would nest a resume() call on the stack: the child
// of the millionth await would run ~100 MB deeper than the first one.
TEST(TaskTest, MillionSynchronousAwaitsUseConstantStack) {
  if (kSanitized) {
    GTEST_SKIP() << "gcc's asan/tsan instrumentation prevents the tail call that symmetric "
                    "transfer compiles to; the default and opt builds check this";
  }
  uintptr_t first = 0;
  uintptr_t last = 0;
  EXPECT_EQ(SyncRun(MillionSynchronousAwaits(&first, &last)), 1'000'000);
  EXPECT_EQ(first, last) << "stack grew by " << (first - last) << " bytes";
}

struct Tracker {
  int* destroyed;
  ~Tracker() { ++*destroyed; }
};

Task<int> HoldsTracker(int* destroyed) {
  Tracker t{destroyed};
  co_return 7;
}

TEST(TaskTest, FrameDestroyedExactlyOnce) {
  int destroyed = 0;
  {
    Task<int> t = HoldsTracker(&destroyed);
    Task<int> moved = std::move(t);
    EXPECT_FALSE(t.valid());
    EXPECT_TRUE(moved.valid());
    EXPECT_EQ(SyncRun(std::move(moved)), 7);
  }
  EXPECT_EQ(destroyed, 1);
}

TEST(TaskTest, MoveAssignmentDestroysPreviousFrame) {
  bool a = false;
  bool b = false;
  Task<void> t = SetFlag(&a);
  t = SetFlag(&b);
  bool done = false;
  Driver<void> d = DriveVoid(std::move(t), &done);
  EXPECT_FALSE(a);
  EXPECT_TRUE(b);
}

}  // namespace
}  // namespace etsmgr
