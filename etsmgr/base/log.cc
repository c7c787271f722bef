#include "etsmgr/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"

namespace etsmgr {
namespace {

class StderrSink final : public LogSink {
 public:
  void Write(const LogRecord& record) override {
    std::string line = FormatLogRecord(record);
    line.push_back('\n');
    const char* data = line.data();
    size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(STDERR_FILENO, data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // Nowhere to report a failing stderr.
      data += n;
      left -= static_cast<size_t>(n);
    }
  }
};

StderrSink& DefaultSink() {
  static StderrSink* sink = new StderrSink();  // Never destroyed: usable during exit.
  return *sink;
}

std::atomic<LogSink*> g_sink{nullptr};

LogLevel LevelFromEnvironment() {
  const char* env = std::getenv("ETSMGR_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  for (int i = 0; i <= static_cast<int>(LogLevel::kError); ++i) {
    auto level = static_cast<LogLevel>(i);
    if (LogLevelName(level) == env) return level;
  }
  return LogLevel::kInfo;
}

std::atomic<int>& MinLevelStorage() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnvironment())};
  return level;
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kNotice:
      return "notice";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "unknown";
}

LogSink& CurrentLogSink() {
  LogSink* sink = g_sink.load(std::memory_order_acquire);
  return sink != nullptr ? *sink : DefaultSink();
}

LogSink* SetLogSink(LogSink* sink) {
  LogSink* previous = g_sink.exchange(sink, std::memory_order_acq_rel);
  return previous != nullptr ? previous : &DefaultSink();
}

LogLevel MinLogLevel() {
  return static_cast<LogLevel>(MinLevelStorage().load(std::memory_order_relaxed));
}

void SetMinLogLevel(LogLevel level) {
  MinLevelStorage().store(static_cast<int>(level), std::memory_order_relaxed);
}

std::string FormatLogRecord(const LogRecord& record) {
  std::string_view level = LogLevelName(record.level);
  return absl::StrCat(absl::FormatTime("%Y-%m-%d %H:%M:%E6S", record.time, absl::LocalTimeZone()),
                      " [", absl::string_view(level.data(), level.size()), "] ",
                      absl::string_view(record.message.data(), record.message.size()));
}

void Log(LogLevel level, std::string_view message) {
  if (!LogEnabled(level)) return;
  CurrentLogSink().Write(LogRecord{absl::Now(), level, message});
}

}  // namespace etsmgr
