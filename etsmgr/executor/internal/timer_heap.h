// An indexed binary min-heap of intrusive timers, ordered by (deadline, insertion order).
//
// Each TimerNode records its index in the heap, so cancelling is O(log n) and needs no search;
// nodes live in awaiters (in coroutine frames), so arming a timer never allocates beyond the
// heap's vector. The heap's entries carry the sort key next to the node pointer, so sifting
// compares without touching the (scattered) nodes. Used only by the owning scheduler's thread.
#ifndef ETSMGR_EXECUTOR_INTERNAL_TIMER_HEAP_H_
#define ETSMGR_EXECUTOR_INTERNAL_TIMER_HEAP_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace etsmgr {
class Scheduler;
}  // namespace etsmgr

namespace etsmgr::executor_internal {

class TimerHeap;

class TimerNode {
 public:
  static constexpr size_t kNotInHeap = static_cast<size_t>(-1);

  bool armed() const { return index_ != kNotInHeap; }
  int64_t deadline_ns() const { return deadline_ns_; }

  // Called by the scheduler when the deadline passes (the node is already out of the heap).
  virtual void Fire() noexcept = 0;

 protected:
  TimerNode() = default;
  TimerNode(const TimerNode&) = delete;
  TimerNode& operator=(const TimerNode&) = delete;
  ~TimerNode() = default;

  // On `scheduler`'s driving thread only: arms this timer there (Fire() runs on that thread once
  // the deadline passes), or takes it out (a no-op when not armed).
  void ArmOn(Scheduler* scheduler, int64_t deadline_ns);
  void DisarmOn(Scheduler* scheduler);

 private:
  friend class TimerHeap;
  int64_t deadline_ns_ = 0;
  size_t index_ = kNotInHeap;
};

class TimerHeap {
 public:
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  TimerNode* top() const { return heap_.empty() ? nullptr : heap_.front().node; }

  void Insert(TimerNode* node, int64_t deadline_ns);
  // No-op when the node is not armed.
  void Remove(TimerNode* node);
  TimerNode* PopTop();
  // Unlinks every node without firing it (shutdown).
  void Clear();

 private:
  struct Entry {
    int64_t deadline_ns;
    uint64_t sequence;
    TimerNode* node;
  };
  static bool Less(const Entry& a, const Entry& b) {
    return a.deadline_ns != b.deadline_ns ? a.deadline_ns < b.deadline_ns : a.sequence < b.sequence;
  }
  void Place(size_t index, const Entry& entry) {
    heap_[index] = entry;
    entry.node->index_ = index;
  }
  void SiftUp(size_t index);
  void SiftDown(size_t index);

  std::vector<Entry> heap_;
  uint64_t next_sequence_ = 0;
};

}  // namespace etsmgr::executor_internal

#endif  // ETSMGR_EXECUTOR_INTERNAL_TIMER_HEAP_H_
