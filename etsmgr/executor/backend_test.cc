#include "etsmgr/executor/backend.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* env = std::getenv("ETSMGR_BACKEND")) saved_ = env;
    unsetenv("ETSMGR_BACKEND");
  }
  void TearDown() override {
    if (saved_.empty()) {
      unsetenv("ETSMGR_BACKEND");
    } else {
      setenv("ETSMGR_BACKEND", saved_.c_str(), 1);
    }
  }
  std::string saved_;
};

TEST_F(BackendTest, ParsesPreferences) {
  EXPECT_EQ(*ParseBackendPreference("auto"), BackendPreference::kAuto);
  EXPECT_EQ(*ParseBackendPreference("io_uring"), BackendPreference::kIoUring);
  EXPECT_EQ(*ParseBackendPreference("epoll"), BackendPreference::kEpoll);
  absl::StatusOr<BackendPreference> bad = ParseBackendPreference("kqueue");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("\"kqueue\""), std::string::npos);
}

TEST_F(BackendTest, EpollIsAlwaysAvailable) {
  EXPECT_EQ(*ChooseBackend(BackendPreference::kEpoll), Backend::kEpoll);
}

TEST_F(BackendTest, AutoFollowsTheProbe) {
  absl::StatusOr<Backend> chosen = ChooseBackend(BackendPreference::kAuto);
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_EQ(*chosen, ProbeIoUring().ok() ? Backend::kIoUring : Backend::kEpoll);
}

TEST_F(BackendTest, ForcedIoUringFailsLoudlyWhenBlocked) {
  absl::StatusOr<Backend> chosen = ChooseBackend(BackendPreference::kIoUring);
  if (ProbeIoUring().ok()) {
    EXPECT_EQ(*chosen, Backend::kIoUring);
  } else {
    ASSERT_FALSE(chosen.ok());
    EXPECT_NE(std::string(chosen.status().message()).find("io_uring backend requested"),
              std::string::npos);
  }
}

TEST_F(BackendTest, EnvironmentOverridesAuto) {
  setenv("ETSMGR_BACKEND", "epoll", 1);
  EXPECT_EQ(*ChooseBackend(BackendPreference::kAuto), Backend::kEpoll);
  setenv("ETSMGR_BACKEND", "nonsense", 1);
  absl::StatusOr<Backend> bad = ChooseBackend(BackendPreference::kAuto);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("ETSMGR_BACKEND"), std::string::npos);
  // An explicit preference is not overridden.
  EXPECT_EQ(*ChooseBackend(BackendPreference::kEpoll), Backend::kEpoll);
}

}  // namespace
}  // namespace etsmgr
