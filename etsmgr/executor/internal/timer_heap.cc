#include "etsmgr/executor/internal/timer_heap.h"

#include <cassert>

namespace etsmgr::executor_internal {

void TimerHeap::Insert(TimerNode* node, int64_t deadline_ns) {
  assert(!node->armed());
  node->deadline_ns_ = deadline_ns;
  heap_.push_back(Entry{deadline_ns, next_sequence_++, node});
  node->index_ = heap_.size() - 1;
  SiftUp(node->index_);
}

void TimerHeap::Remove(TimerNode* node) {
  if (!node->armed()) return;
  size_t index = node->index_;
  assert(index < heap_.size() && heap_[index].node == node);
  node->index_ = TimerNode::kNotInHeap;
  Entry last = heap_.back();
  heap_.pop_back();
  if (index == heap_.size()) return;  // It was the last element.
  Place(index, last);
  if (index > 0 && Less(last, heap_[(index - 1) / 2])) {
    SiftUp(index);
  } else {
    SiftDown(index);
  }
}

TimerNode* TimerHeap::PopTop() {
  if (heap_.empty()) return nullptr;
  TimerNode* top = heap_.front().node;
  Remove(top);
  return top;
}

void TimerHeap::Clear() {
  for (const Entry& entry : heap_) entry.node->index_ = TimerNode::kNotInHeap;
  heap_.clear();
}

void TimerHeap::SiftUp(size_t index) {
  Entry node = heap_[index];
  while (index > 0) {
    size_t parent = (index - 1) / 2;
    if (!Less(node, heap_[parent])) break;
    Place(index, heap_[parent]);
    index = parent;
  }
  Place(index, node);
}

void TimerHeap::SiftDown(size_t index) {
  Entry node = heap_[index];
  const size_t n = heap_.size();
  while (true) {
    size_t child = 2 * index + 1;
    if (child >= n) break;
    if (child + 1 < n && Less(heap_[child + 1], heap_[child])) ++child;
    if (!Less(heap_[child], node)) break;
    Place(index, heap_[child]);
    index = child;
  }
  Place(index, node);
}

}  // namespace etsmgr::executor_internal
