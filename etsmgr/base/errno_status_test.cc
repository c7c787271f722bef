#include "etsmgr/base/errno_status.h"

#include <cerrno>
#include <string>

#include "gtest/gtest.h"

namespace etsmgr {
namespace {

TEST(ErrnoToStatusTest, ZeroIsOk) { EXPECT_TRUE(ErrnoToStatus(0, "anything").ok()); }

TEST(ErrnoToStatusTest, MessageNamesOperationTextAndErrno) {
  absl::Status s = ErrnoToStatus(EPERM, "io_uring_queue_init");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(std::string(s.message()), "io_uring_queue_init: Operation not permitted (EPERM)");
}

TEST(ErrnoToStatusTest, CodesByErrno) {
  EXPECT_EQ(ErrnoToStatus(ENOSYS, "x").code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ErrnoToStatus(ETIME, "x").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ErrnoToStatus(ECANCELED, "x").code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ErrnoToStatus(ENOMEM, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoToStatus(EINVAL, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrnoToStatus(EIO, "x").code(), absl::StatusCode::kInternal);
}

TEST(ErrnoToStatusTest, UnknownErrnoStillNamed) {
  absl::Status s = ErrnoToStatus(4095, "op");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(std::string(s.message()).find("op: "), std::string::npos);
  EXPECT_NE(std::string(s.message()).find("4095"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace etsmgr
