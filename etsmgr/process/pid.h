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

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>

namespace etsmgr {

class ProcessControl;

class Pid {
 public:
  Pid() = default;                        // The null Pid: refers to no process.
  explicit Pid(ProcessControl* control);  // Adopts one new reference.
  Pid(const Pid& other);
  Pid(Pid&& other) noexcept : control_(std::exchange(other.control_, nullptr)) {}
  Pid& operator=(Pid other) noexcept {
    std::swap(control_, other.control_);
    return *this;
  }
  ~Pid();

  bool valid() const { return control_ != nullptr; }
  explicit operator bool() const { return valid(); }
  uint64_t serial() const;
  // Whether the process is still alive (a snapshot: it may die right after).
  bool alive() const;
  std::string ToString() const;

  ProcessControl* control() const { return control_; }

  friend bool operator==(const Pid& a, const Pid& b) { return a.serial() == b.serial(); }
  friend bool operator<(const Pid& a, const Pid& b) { return a.serial() < b.serial(); }
  template <typename H>
  friend H AbslHashValue(H h, const Pid& pid) {
    return H::combine(std::move(h), pid.serial());
  }
  friend std::ostream& operator<<(std::ostream& os, const Pid& pid) { return os << pid.ToString(); }

 private:
  ProcessControl* control_ = nullptr;
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_PID_H_
