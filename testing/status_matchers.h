// gmock matchers on absl::Status and absl::StatusOr<T>, deciding by the code and the error's atom
// (etsmgr/base/error_atom.h), never by the message text.
//
//   EXPECT_THAT(co_await mgr.DelTable(self, "t"),
//               StatusIs(absl::StatusCode::kNotFound, Atom::kNoSuchTableEntry));
//   EXPECT_THAT(taken, StatusIs(absl::StatusCode::kAlreadyExists));  // any atom, or none
//
// StatusIs(code, Atom::kNone) requires a status without an atom. A failure prints the value's
// code, atom and message.
#ifndef ETSMGR_TESTING_STATUS_MATCHERS_H_
#define ETSMGR_TESTING_STATUS_MATCHERS_H_

#include <optional>
#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "etsmgr/base/error_atom.h"
#include "gmock/gmock.h"

namespace etsmgr {
namespace status_matchers_internal {

// The status of an absl::Status or absl::StatusOr<T> (also for CO_ASSERT_OK, test_util.h).
inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

class StatusIsMatcher {
 public:
  StatusIsMatcher(absl::StatusCode code, std::optional<Atom> atom) : code_(code), atom_(atom) {}

  template <typename S>
  bool MatchAndExplain(const S& value, ::testing::MatchResultListener* listener) const {
    const absl::Status& status = StatusOf(value);
    const Atom atom = ErrorAtom(status);
    *listener << "whose code is " << absl::StatusCodeToString(status.code()) << ", atom " << atom
              << ", message: " << status.message();
    return status.code() == code_ && (!atom_ || atom == *atom_);
  }

  void DescribeTo(std::ostream* os) const {
    *os << "has code " << absl::StatusCodeToString(code_);
    if (atom_) *os << " and atom " << *atom_;
  }

  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have code " << absl::StatusCodeToString(code_);
    if (atom_) *os << " with atom " << *atom_;
  }

 private:
  absl::StatusCode code_;
  std::optional<Atom> atom_;  // Unset: any atom.
};

}  // namespace status_matchers_internal

// Matches a status (or a StatusOr's status) with `code`, whatever its atom.
inline ::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher> StatusIs(
    absl::StatusCode code) {
  return ::testing::MakePolymorphicMatcher(
      status_matchers_internal::StatusIsMatcher(code, std::nullopt));
}

// Matches a status (or a StatusOr's status) with `code` carrying `atom` (kNone: no atom).
inline ::testing::PolymorphicMatcher<status_matchers_internal::StatusIsMatcher> StatusIs(
    absl::StatusCode code, Atom atom) {
  return ::testing::MakePolymorphicMatcher(status_matchers_internal::StatusIsMatcher(code, atom));
}

}  // namespace etsmgr

#endif  // ETSMGR_TESTING_STATUS_MATCHERS_H_
