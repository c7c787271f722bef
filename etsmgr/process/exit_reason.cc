#include "etsmgr/process/exit_reason.h"

namespace etsmgr {

std::string ExitReason::ToString() const {
  switch (kind_) {
    case Kind::kNormal:
      return "normal";
    case Kind::kShutdown:
      return "shutdown";
    case Kind::kKill:
      return "kill";
    case Kind::kKilled:
      return "killed";
    case Kind::kNoProc:
      return "noproc";
    case Kind::kException:
      return "{exception,\"" + text_ + "\"}";
    case Kind::kCustom:
      return text_;
  }
  return "unknown";
}

}  // namespace etsmgr
