// Logging through a small, replaceable sink.
//
// Debian's Abseil 20220623 has no absl/log, so etsmgr logs through this interface. Levels follow
// OTP's logger (debug < info < notice < warning < error). The default sink writes one line per
// record to stderr:
//
//   2026-11-21 12:00:00.123456 [notice] etsmgr_srv: table "counter" held for <0.7>
//
// Usage:
//   etsmgr::Log(etsmgr::LogLevel::kNotice, "table transferred");
//   etsmgr::Logf(etsmgr::LogLevel::kWarning, "table %s lost its owner %s", name, pid);
//   etsmgr::SetMinLogLevel(etsmgr::LogLevel::kError);   // e.g. silent benchmarks
//
// Thread safety: every function here may be called from any thread at any time. A sink installed
// with SetLogSink must be thread-safe itself and must outlive every call that can reach it; the
// default sink emits each record with a single write(2), so lines from threads never interleave.
#ifndef ETSMGR_BASE_LOG_H_
#define ETSMGR_BASE_LOG_H_

#include <string_view>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace etsmgr {

enum class LogLevel { kDebug = 0, kInfo = 1, kNotice = 2, kWarning = 3, kError = 4 };

// "debug", "info", "notice", "warning" or "error".
std::string_view LogLevelName(LogLevel level);

struct LogRecord {
  absl::Time time;
  LogLevel level;
  std::string_view message;
};

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void Write(const LogRecord& record) = 0;
};

// The sink in use; never null. The default is a stderr sink.
LogSink& CurrentLogSink();
// Installs `sink` (nullptr restores the default) and returns the previous one.
LogSink* SetLogSink(LogSink* sink);

// Records below the minimum level are dropped before formatting. Default: kInfo, or the value of
// the environment variable ETSMGR_LOG_LEVEL (a level name) when it is set at first use.
LogLevel MinLogLevel();
void SetMinLogLevel(LogLevel level);
inline bool LogEnabled(LogLevel level) { return level >= MinLogLevel(); }

// Formats a record the way the default sink prints it (without the trailing newline).
std::string FormatLogRecord(const LogRecord& record);

void Log(LogLevel level, std::string_view message);

template <typename... Args>
void Logf(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) Log(level, absl::StrFormat(format, args...));
}

}  // namespace etsmgr

#endif  // ETSMGR_BASE_LOG_H_
