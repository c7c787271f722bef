#include "etsmgr/base/error_atom.h"

#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "testing/status_matchers.h"

namespace etsmgr {
namespace {

using ::testing::Not;

TEST(ErrorAtomTest, NamesAreErlangs) {
  EXPECT_EQ(AtomName(Atom::kTableExists), "table_exists");
  EXPECT_EQ(AtomName(Atom::kNotOwner), "not_owner");
  EXPECT_EQ(AtomName(Atom::kNoSuchTableEntry), "no_such_table_entry");
  EXPECT_EQ(AtomName(Atom::kAlreadyStarted), "already_started");
  EXPECT_EQ(AtomName(Atom::kNotStarted), "not_started");
  EXPECT_EQ(AtomName(Atom::kNone), "");
  std::ostringstream printed;
  printed << Atom::kNotOwner << " " << Atom::kNone;
  EXPECT_EQ(printed.str(), "not_owner (none)");
}

TEST(ErrorAtomTest, WithAtomSetsThePayloadAndThePrefixOnce) {
  absl::Status st = WithAtom(absl::AlreadyExistsError("held by <0.9>"), Atom::kTableExists);
  EXPECT_EQ(ErrorAtom(st), Atom::kTableExists);
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(st.message(), "table_exists: held by <0.9>");
  EXPECT_EQ(std::string(*st.GetPayload(kAtomTypeUrl)), "table_exists");
  EXPECT_EQ(WithAtom(st, Atom::kTableExists), st);  // Not prefixed twice.
  EXPECT_EQ(WithAtom(absl::NotFoundError(""), Atom::kNoSuchTableEntry).message(),
            "no_such_table_entry");
}

TEST(ErrorAtomTest, NoAtom) {
  EXPECT_EQ(ErrorAtom(absl::OkStatus()), Atom::kNone);
  EXPECT_EQ(ErrorAtom(absl::NotFoundError("no_such_table_entry")), Atom::kNone);  // Text only.
  EXPECT_TRUE(WithAtom(absl::OkStatus(), Atom::kNotOwner).ok());
  EXPECT_EQ(WithAtom(absl::InternalError("x"), Atom::kNone), absl::InternalError("x"));
  absl::Status unknown = absl::InternalError("x");
  unknown.SetPayload(kAtomTypeUrl, absl::Cord("badarg"));
  EXPECT_EQ(ErrorAtom(unknown), Atom::kNone);
}

TEST(ErrorAtomTest, AnnotateKeepsCodeAndPayloads) {
  absl::Status st = WithAtom(absl::PermissionDeniedError("caller <0.7>"), Atom::kNotOwner);
  st.SetPayload("example.com/other", absl::Cord("kept"));
  absl::Status annotated = Annotate(st, "del_table", "counter");
  EXPECT_EQ(annotated.message(), "del_table \"counter\": not_owner: caller <0.7>");
  EXPECT_THAT(annotated, StatusIs(absl::StatusCode::kPermissionDenied, Atom::kNotOwner));
  EXPECT_EQ(std::string(*annotated.GetPayload("example.com/other")), "kept");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "del_table", "counter").ok());
  // What Annotate replaces: re-creating a status from its code and message drops the atom.
  EXPECT_THAT(absl::Status(st.code(), st.message()), Not(StatusIs(st.code(), Atom::kNotOwner)));
}

TEST(ErrorAtomTest, CopiesAndStatusOrKeepTheAtom) {
  absl::Status st = WithAtom(absl::AlreadyExistsError("x"), Atom::kAlreadyStarted);
  absl::Status copy = st;
  absl::StatusOr<int> or_status = copy;
  EXPECT_EQ(ErrorAtom(or_status.status()), Atom::kAlreadyStarted);
  absl::Status unshared = UnsharedCopy(st);
  EXPECT_EQ(unshared, st);
  EXPECT_EQ(ErrorAtom(unshared), Atom::kAlreadyStarted);
}

}  // namespace
}  // namespace etsmgr
