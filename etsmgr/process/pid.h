// Pid: a reference to a process, unique for the life of the runtime.
//
// A Pid is a small value (one pointer) that keeps the process's control block alive, never the
// process itself: a Pid outliving its process refers to a dead process forever, so a stale Pid
// can never reach a new process. Sending to a dead Pid drops the message (as in Erlang).
// Pids compare and hash by their serial number and print like Erlang's: <0.42>.
//
// Copying a Pid is an atomic increment; pass `const Pid&` on hot paths.
// Thread safety: a Pid may be copied, compared and used from any thread.
#ifndef ETSMGR_PROCESS_PID_H_
#define ETSMGR_PROCESS_PID_H_

#include <atomic>
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>

namespace etsmgr {

class Node;
class Process;

namespace process_internal {

class ProcessControl;
class ProcessAccess;

// What a Pid touches without the rest of the process: the reference count of the process's
// control block and its serial (ProcessControl derives from it). Inline, so copying and
// dropping a Pid is one atomic instruction, not a call.
class PidTarget {
 public:
  uint64_t serial() const { return serial_; }
  void AddRef() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void AddRefs(uint32_t n) { refs_.fetch_add(n, std::memory_order_relaxed); }
  uint32_t refs() const { return refs_.load(std::memory_order_relaxed); }  // For tests.
  // True when that was the last reference (the caller destroys the process's control block).
  bool DropRef() { return refs_.fetch_sub(1, std::memory_order_acq_rel) == 1; }

 protected:
  explicit PidTarget(uint64_t serial) : serial_(serial) {}
  ~PidTarget() = default;

 private:
  std::atomic<uint32_t> refs_{1};
  const uint64_t serial_;
};

void DestroyProcessControl(PidTarget* target);  // The last Pid went.

}  // namespace process_internal

class Pid {
 public:
  Pid() = default;  // The null Pid: refers to no process.
  Pid(const Pid& other) : target_(other.target_) {
    if (target_ != nullptr) target_->AddRef();
  }
  Pid(Pid&& other) noexcept : target_(std::exchange(other.target_, nullptr)) {}
  Pid& operator=(Pid other) noexcept {
    std::swap(target_, other.target_);
    return *this;
  }
  ~Pid() {
    if (target_ != nullptr && target_->DropRef()) process_internal::DestroyProcessControl(target_);
  }

  bool valid() const { return target_ != nullptr; }
  explicit operator bool() const { return valid(); }
  uint64_t serial() const { return target_ != nullptr ? target_->serial() : 0; }
  // Whether the process is still alive (a snapshot: it may die right after).
  bool alive() const;
  std::string ToString() const;

  friend bool operator==(const Pid& a, const Pid& b) { return a.serial() == b.serial(); }
  friend bool operator<(const Pid& a, const Pid& b) { return a.serial() < b.serial(); }
  template <typename H>
  friend H AbslHashValue(H h, const Pid& pid) {
    return H::combine(std::move(h), pid.serial());
  }
  friend std::ostream& operator<<(std::ostream& os, const Pid& pid) { return os << pid.ToString(); }

 private:
  // The process's control block: for the process package only (internal/process_control.h
  // defines it; other packages go through process_internal::ProcessAccess).
  friend class process_internal::ProcessAccess;
  friend class process_internal::ProcessControl;
  friend class Node;
  friend class Process;
  process_internal::ProcessControl* control() const;
  friend class PidCopier;
  // Adopts one new reference (the node, when it spawns; PidCopier).
  explicit Pid(process_internal::PidTarget* target) : target_(target) {}
  process_internal::PidTarget* target_ = nullptr;
};

// Copies many Pids naming few processes with one reference-count update per process rather than
// one per copy (info() copies 300k Pids of ~1,000 processes; each atomic increment costs more
// than the rest of the copy). The first copy of a process is counted at once and keeps its
// control block alive; the later ones are counted by Flush() or the destructor.
// Rule: every copy made must outlive the Flush (they are built into a result, not dropped on
// the way). Not thread-safe (one copier per thread); the copies are ordinary Pids.
class PidCopier {
 public:
  PidCopier() = default;
  PidCopier(const PidCopier&) = delete;
  PidCopier& operator=(const PidCopier&) = delete;
  ~PidCopier() { Flush(); }

  Pid Copy(const Pid& pid) {
    process_internal::PidTarget* target = pid.target_;
    if (target == nullptr) return Pid();
    Slot& slot = slots_[SlotOf(target)];
    if (slot.target == target) {
      ++slot.owed;
    } else {
      Settle(slot);
      target->AddRef();
      slot.target = target;
    }
    return Pid(target);
  }

  // Adds every count owed so far.
  void Flush() {
    for (Slot& slot : slots_) Settle(slot);
  }

 private:
  static constexpr int kSlotBits = 10;  // Direct-mapped: a clash only costs an early Settle.
  struct Slot {
    process_internal::PidTarget* target = nullptr;
    uint32_t owed = 0;
  };
  static size_t SlotOf(const process_internal::PidTarget* target) {
    return static_cast<size_t>((reinterpret_cast<uintptr_t>(target) * 0x9E3779B97F4A7C15u) >>
                               (64 - kSlotBits));
  }
  static void Settle(Slot& slot) {
    if (slot.owed != 0) slot.target->AddRefs(slot.owed);
    slot.owed = 0;
  }
  Slot slots_[size_t{1} << kSlotBits];
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_PID_H_
