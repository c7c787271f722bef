#include "testing/status_matchers.h"

#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace etsmgr {
namespace {

using ::testing::Not;

absl::Status Taken() {
  return Annotate(WithAtom(absl::AlreadyExistsError("held by <0.9>"), Atom::kTableExists),
                  "new_table", "t");
}

template <typename M, typename T>
std::string Explain(const M& matcher, const T& value) {
  ::testing::StringMatchResultListener listener;
  ::testing::ExplainMatchResult(matcher, value, &listener);
  return listener.str();
}

TEST(StatusIsTest, MatchesCodeAndAtom) {
  EXPECT_THAT(Taken(), StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  EXPECT_THAT(Taken(), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(Taken(), Not(StatusIs(absl::StatusCode::kAlreadyExists, Atom::kNotOwner)));
  EXPECT_THAT(Taken(), Not(StatusIs(absl::StatusCode::kAlreadyExists, Atom::kNone)));
  EXPECT_THAT(Taken(), Not(StatusIs(absl::StatusCode::kNotFound, Atom::kTableExists)));
  EXPECT_THAT(absl::OkStatus(), StatusIs(absl::StatusCode::kOk, Atom::kNone));
  EXPECT_THAT(absl::InternalError("x"), StatusIs(absl::StatusCode::kInternal, Atom::kNone));
}

TEST(StatusIsTest, MatchesStatusOr) {
  absl::StatusOr<std::string> failed = Taken();
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists));
  absl::StatusOr<int> fine = 3;
  EXPECT_THAT(fine, StatusIs(absl::StatusCode::kOk));
}

// The atom is decided by the payload: the same text without it does not match.
TEST(StatusIsTest, TextAloneIsNoAtom) {
  const absl::Status taken = Taken();
  const absl::Status rebuilt(taken.code(), taken.message());
  EXPECT_NE(rebuilt.message().find("table_exists"), absl::string_view::npos);
  EXPECT_THAT(rebuilt, Not(StatusIs(absl::StatusCode::kAlreadyExists, Atom::kTableExists)));
}

TEST(StatusIsTest, DescribesCodeAtomAndMessage) {
  const auto matcher = StatusIs(absl::StatusCode::kNotFound, Atom::kNoSuchTableEntry);
  EXPECT_EQ(::testing::DescribeMatcher<absl::Status>(matcher),
            "has code NOT_FOUND and atom no_such_table_entry");
  EXPECT_EQ(::testing::DescribeMatcher<absl::Status>(matcher, /*negation=*/true),
            "does not have code NOT_FOUND with atom no_such_table_entry");
  EXPECT_EQ(Explain(matcher, Taken()),
            "whose code is ALREADY_EXISTS, atom table_exists, message: new_table \"t\": "
            "table_exists: held by <0.9>");
  EXPECT_EQ(Explain(matcher, absl::InternalError("boom")),
            "whose code is INTERNAL, atom (none), message: boom");
}

}  // namespace
}  // namespace etsmgr
