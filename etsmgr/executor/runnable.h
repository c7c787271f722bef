// Runnable: the unit a scheduler runs, an intrusive node so queueing never allocates.
//
// Whatever wants to run on a scheduler (a coroutine to resume, a posted function, a process)
// embeds or derives from Runnable and is linked into the scheduler's run queue through `next_`.
// Awaiters keep their Runnable inside the suspended coroutine frame, so resuming a coroutine on
// another thread costs no allocation.
//
// Contract
// - A Runnable is in at most one queue at a time; whoever posts it must keep it alive until Run()
//   or Discard() is called on it.
// - Run() is called on the thread driving the scheduler it was posted to.
// - Discard() is called instead of Run() when the scheduler shuts down with the node still
//   queued; it must free what the node owns without running user code (default: nothing).
#ifndef ETSMGR_EXECUTOR_RUNNABLE_H_
#define ETSMGR_EXECUTOR_RUNNABLE_H_

#include <coroutine>

namespace etsmgr {

class Scheduler;
namespace executor_internal {
class RunQueue;
class RemoteRunQueue;
}  // namespace executor_internal

class Runnable {
 public:
  virtual void Run() noexcept = 0;
  virtual void Discard() noexcept {}
  // Work stealing: called on the thread of the scheduler whose ready queue holds this node (it is
  // not running). A node that can move makes `to` its scheduler, posts itself there and returns
  // true; false (the default) leaves it where it is.
  virtual bool MigrateTo(Scheduler* /*to*/) noexcept { return false; }

 protected:
  Runnable() = default;
  Runnable(const Runnable&) = delete;
  Runnable& operator=(const Runnable&) = delete;
  ~Runnable() = default;

 private:
  friend class executor_internal::RunQueue;
  friend class executor_internal::RemoteRunQueue;
  Runnable* next_ = nullptr;
};

// Resumes one coroutine. Lives in an awaiter, i.e. in the suspended frame it resumes.
class ResumeRunnable final : public Runnable {
 public:
  ResumeRunnable() = default;
  explicit ResumeRunnable(std::coroutine_handle<> handle) : handle_(handle) {}
  void set_handle(std::coroutine_handle<> handle) { handle_ = handle; }
  void Run() noexcept override { handle_.resume(); }

 private:
  std::coroutine_handle<> handle_;
};

}  // namespace etsmgr

#endif  // ETSMGR_EXECUTOR_RUNNABLE_H_
