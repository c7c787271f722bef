// Run queues of intrusive Runnables.
//
// RunQueue: FIFO used only by the scheduler's own thread (no synchronisation).
// RemoteRunQueue: multi-producer, single-consumer. Producers push with one CAS (a Treiber stack);
// the consumer takes everything at once with one exchange and reverses it, which restores FIFO
// order per producer. Push and IsEmpty are sequentially consistent because the scheduler's
// park protocol (see scheduler.cc) is a Dekker handshake: "push, then read parked" against
// "write parked, then read the queue".
#ifndef ETSMGR_EXECUTOR_INTERNAL_RUN_QUEUE_H_
#define ETSMGR_EXECUTOR_INTERNAL_RUN_QUEUE_H_

#include <atomic>
#include <cstddef>

#include "etsmgr/executor/runnable.h"

namespace etsmgr::executor_internal {

class RunQueue {
 public:
  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }

  void PushBack(Runnable* r) {
    r->next_ = nullptr;
    if (tail_ == nullptr) {
      head_ = tail_ = r;
    } else {
      tail_->next_ = r;
      tail_ = r;
    }
    ++size_;
  }

  // Appends a chain linked through next_ (in order), of `count` nodes ending at `last`.
  void Append(Runnable* first, Runnable* last, size_t count) {
    if (first == nullptr) return;
    last->next_ = nullptr;
    if (tail_ == nullptr) {
      head_ = first;
    } else {
      tail_->next_ = first;
    }
    tail_ = last;
    size_ += count;
  }

  Runnable* PopFront() {
    Runnable* r = head_;
    if (r == nullptr) return nullptr;
    head_ = r->next_;
    if (head_ == nullptr) tail_ = nullptr;
    r->next_ = nullptr;
    --size_;
    return r;
  }

 private:
  Runnable* head_ = nullptr;
  Runnable* tail_ = nullptr;
  size_t size_ = 0;
};

class RemoteRunQueue {
 public:
  // Any thread.
  void Push(Runnable* r) {
    Runnable* head = head_.load(std::memory_order_relaxed);
    do {
      r->next_ = head;
    } while (!head_.compare_exchange_weak(head, r, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
  }

  // Any thread; a hint, exact only for the consumer.
  bool IsEmpty() const { return head_.load(std::memory_order_seq_cst) == nullptr; }

  // Consumer only: moves everything pushed so far, oldest first, to the back of `out`.
  size_t DrainInto(RunQueue& out) {
    if (head_.load(std::memory_order_relaxed) == nullptr) return 0;
    Runnable* r = head_.exchange(nullptr, std::memory_order_acquire);
    Runnable* reversed = nullptr;
    Runnable* last = r;
    size_t count = 0;
    while (r != nullptr) {
      Runnable* next = r->next_;
      r->next_ = reversed;
      reversed = r;
      r = next;
      ++count;
    }
    out.Append(reversed, last, count);
    return count;
  }

 private:
  std::atomic<Runnable*> head_{nullptr};
};

}  // namespace etsmgr::executor_internal

#endif  // ETSMGR_EXECUTOR_INTERNAL_RUN_QUEUE_H_
