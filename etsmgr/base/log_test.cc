#include "etsmgr/base/log.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class CapturingSink final : public LogSink {
 public:
  void Write(const LogRecord& record) override {
    lines.push_back(FormatLogRecord(record));
    levels.push_back(record.level);
  }
  std::vector<std::string> lines;
  std::vector<LogLevel> levels;
};

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_sink_ = SetLogSink(&sink_);
    previous_level_ = MinLogLevel();
  }
  void TearDown() override {
    SetLogSink(previous_sink_);
    SetMinLogLevel(previous_level_);
  }
  CapturingSink sink_;
  LogSink* previous_sink_ = nullptr;
  LogLevel previous_level_ = LogLevel::kInfo;
};

TEST_F(LogTest, RecordsCarryLevelAndTimestamp) {
  SetMinLogLevel(LogLevel::kDebug);
  Logf(LogLevel::kNotice, "table %s held for %s", "counter", "<0.7>");
  ASSERT_EQ(sink_.lines.size(), 1u);
  EXPECT_EQ(sink_.levels[0], LogLevel::kNotice);
  const std::string& line = sink_.lines[0];
  // "YYYY-MM-DD HH:MM:SS.uuuuuu [notice] table counter held for <0.7>"
  EXPECT_EQ(line.substr(26), " [notice] table counter held for <0.7>") << line;
  EXPECT_EQ(line[4], '-');
  EXPECT_EQ(line[19], '.');
}

TEST_F(LogTest, BelowMinimumLevelIsDropped) {
  SetMinLogLevel(LogLevel::kWarning);
  Log(LogLevel::kInfo, "dropped");
  Log(LogLevel::kNotice, "dropped too");
  Log(LogLevel::kError, "kept");
  ASSERT_EQ(sink_.lines.size(), 1u);
  EXPECT_EQ(sink_.levels[0], LogLevel::kError);
}

TEST_F(LogTest, LevelNamesFollowOtpLogger) {
  EXPECT_EQ(LogLevelName(LogLevel::kDebug), "debug");
  EXPECT_EQ(LogLevelName(LogLevel::kInfo), "info");
  EXPECT_EQ(LogLevelName(LogLevel::kNotice), "notice");
  EXPECT_EQ(LogLevelName(LogLevel::kWarning), "warning");
  EXPECT_EQ(LogLevelName(LogLevel::kError), "error");
}

TEST_F(LogTest, NullSinkRestoresDefault) {
  LogSink* mine = SetLogSink(nullptr);
  EXPECT_EQ(mine, &sink_);
  EXPECT_NE(&CurrentLogSink(), &sink_);
  SetLogSink(&sink_);
  EXPECT_EQ(&CurrentLogSink(), &sink_);
}

}  // namespace
}  // namespace etsmgr
