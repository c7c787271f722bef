#include "etsmgr/base/status_macros.h"

#include <string>

#include "etsmgr/executor/runtime.h"
#include "etsmgr/executor/task.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

Task<absl::StatusOr<int>> Parse(std::string text) {
  if (text.empty()) co_return absl::InvalidArgumentError("empty");
  co_return static_cast<int>(text.size());
}

absl::Status Positive(int n) {
  return n > 1 ? absl::OkStatus() : absl::OutOfRangeError("too small");
}

Task<absl::StatusOr<int>> Twice(std::string text) {
  ETSMGR_CO_ASSIGN_OR_RETURN(int n, co_await Parse(std::move(text)));
  ETSMGR_CO_RETURN_IF_ERROR(Positive(n));
  co_return n * 2;
}

Task<absl::Status> Chain(std::string text) {
  ETSMGR_CO_ASSIGN_OR_RETURN(int n, co_await Twice(std::move(text)));
  int copy = 0;
  ETSMGR_CO_ASSIGN_OR_RETURN(copy, co_await Parse(std::string(static_cast<size_t>(n), 'x')));
  ETSMGR_CO_RETURN_IF_ERROR(copy == n ? absl::OkStatus() : absl::InternalError("mismatch"));
  co_return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateFromCoroutines) {
  auto runtime = Runtime::Create({.schedulers = 1}).value();
  EXPECT_EQ(runtime->BlockOn(Twice("abc")).value(), 6);
  EXPECT_EQ(runtime->BlockOn(Twice("")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runtime->BlockOn(Twice("a")).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(runtime->BlockOn(Chain("abcd")).ok());
  EXPECT_EQ(runtime->BlockOn(Chain("")).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace etsmgr
