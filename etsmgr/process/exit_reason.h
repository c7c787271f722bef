// ExitReason: why a process exited, with Erlang's meanings.
//
//   normal    the body returned, or exit(self, normal); linked processes are not affected.
//   shutdown  a supervisor (or anyone) asked the process to stop; kills non-trapping links.
//   kill      sent with Exit(pid, Kill()): untrappable; the victim exits with `killed`.
//   killed    what others see when a process was killed.
//   noproc    the process did not exist (link/monitor to a dead Pid).
//   exception an exception escaped the body; text() is its what().
//   custom    any other reason, with a text.
//
// Value type; thread-compatible. Prints like Erlang: normal, shutdown, killed, noproc,
// {exception,"text"}, or the custom text.
#ifndef ETSMGR_PROCESS_EXIT_REASON_H_
#define ETSMGR_PROCESS_EXIT_REASON_H_

#include <string>
#include <string_view>
#include <utility>

namespace etsmgr {

class ExitReason {
 public:
  enum class Kind { kNormal, kShutdown, kKill, kKilled, kNoProc, kException, kCustom };

  ExitReason() = default;  // normal
  static ExitReason Normal() { return ExitReason(Kind::kNormal, ""); }
  static ExitReason Shutdown() { return ExitReason(Kind::kShutdown, ""); }
  static ExitReason Kill() { return ExitReason(Kind::kKill, ""); }
  static ExitReason Killed() { return ExitReason(Kind::kKilled, ""); }
  static ExitReason NoProc() { return ExitReason(Kind::kNoProc, ""); }
  static ExitReason Exception(std::string what) {
    return ExitReason(Kind::kException, std::move(what));
  }
  static ExitReason Custom(std::string text) { return ExitReason(Kind::kCustom, std::move(text)); }

  Kind kind() const { return kind_; }
  const std::string& text() const { return text_; }
  bool is_normal() const { return kind_ == Kind::kNormal; }
  bool is_kill() const { return kind_ == Kind::kKill; }

  std::string ToString() const;
  friend bool operator==(const ExitReason& a, const ExitReason& b) {
    return a.kind_ == b.kind_ && a.text_ == b.text_;
  }

 private:
  ExitReason(Kind kind, std::string text) : kind_(kind), text_(std::move(text)) {}
  Kind kind_ = Kind::kNormal;
  std::string text_;
};

}  // namespace etsmgr

#endif  // ETSMGR_PROCESS_EXIT_REASON_H_
