#include "etsmgr/executor/internal/timer_heap.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/random/random.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class TestTimer final : public executor_internal::TimerNode {
 public:
  explicit TestTimer(int id) : id(id) {}
  void Fire() noexcept override {}
  int id;
};

TEST(TimerHeapTest, PopsInDeadlineThenInsertionOrder) {
  executor_internal::TimerHeap heap;
  std::vector<std::unique_ptr<TestTimer>> timers;
  int64_t deadlines[] = {30, 10, 20, 10, 5, 30};
  for (int i = 0; i < 6; ++i) {
    timers.push_back(std::make_unique<TestTimer>(i));
    heap.Insert(timers.back().get(), deadlines[i]);
  }
  std::vector<int> order;
  while (executor_internal::TimerNode* t = heap.PopTop())
    order.push_back(static_cast<TestTimer*>(t)->id);
  EXPECT_EQ(order, (std::vector<int>{4, 1, 3, 2, 0, 5}));
}

TEST(TimerHeapTest, RandomInsertRemoveKeepsOrder) {
  absl::BitGen gen;
  executor_internal::TimerHeap heap;
  std::vector<std::unique_ptr<TestTimer>> timers;
  for (int i = 0; i < 5000; ++i) {
    timers.push_back(std::make_unique<TestTimer>(i));
    heap.Insert(timers.back().get(), absl::Uniform<int64_t>(gen, 0, 1000));
  }
  // Cancel a random third.
  for (auto& t : timers) {
    if (absl::Bernoulli(gen, 1.0 / 3)) heap.Remove(t.get());
  }
  size_t armed = std::count_if(timers.begin(), timers.end(), [](auto& t) { return t->armed(); });
  EXPECT_EQ(heap.size(), armed);
  int64_t last = -1;
  size_t popped = 0;
  while (executor_internal::TimerNode* t = heap.PopTop()) {
    EXPECT_GE(t->deadline_ns(), last);
    EXPECT_FALSE(t->armed());
    last = t->deadline_ns();
    ++popped;
  }
  EXPECT_EQ(popped, armed);
}

TEST(TimerHeapTest, RemoveIsIdempotentAndClearDisarms) {
  executor_internal::TimerHeap heap;
  TestTimer a(1), b(2);
  heap.Insert(&a, 1);
  heap.Insert(&b, 2);
  heap.Remove(&a);
  heap.Remove(&a);
  EXPECT_EQ(heap.size(), 1u);
  heap.Clear();
  EXPECT_FALSE(b.armed());
  EXPECT_TRUE(heap.empty());
}

}  // namespace
}  // namespace etsmgr
