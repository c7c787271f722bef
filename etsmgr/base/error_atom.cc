#include "etsmgr/base/error_atom.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace etsmgr {
namespace {

constexpr Atom kAllAtoms[] = {Atom::kTableExists, Atom::kNotOwner, Atom::kNoSuchTableEntry,
                              Atom::kAlreadyStarted, Atom::kNotStarted};

// `status`'s code and payloads with another message. Each payload is copied into a Cord of its
// own, so the result shares no reference-counted memory with `status`.
absl::Status Remessage(const absl::Status& status, absl::string_view message) {
  absl::Status out(status.code(), message);
  status.ForEachPayload([&out](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, absl::Cord(std::string(payload)));
  });
  return out;
}

}  // namespace

absl::string_view AtomName(Atom atom) {
  switch (atom) {
    case Atom::kNone:
      return "";
    case Atom::kTableExists:
      return "table_exists";
    case Atom::kNotOwner:
      return "not_owner";
    case Atom::kNoSuchTableEntry:
      return "no_such_table_entry";
    case Atom::kAlreadyStarted:
      return "already_started";
    case Atom::kNotStarted:
      return "not_started";
  }
  return "";
}

std::ostream& operator<<(std::ostream& os, Atom atom) {
  return os << (atom == Atom::kNone ? absl::string_view("(none)") : AtomName(atom));
}

Atom ErrorAtom(const absl::Status& status) {
  if (status.ok()) return Atom::kNone;
  absl::optional<absl::Cord> payload = status.GetPayload(kAtomTypeUrl);
  if (!payload) return Atom::kNone;
  for (Atom atom : kAllAtoms) {
    if (*payload == AtomName(atom)) return atom;
  }
  return Atom::kNone;
}

absl::Status WithAtom(absl::Status status, Atom atom) {
  if (status.ok() || atom == Atom::kNone || ErrorAtom(status) == atom) return status;
  const absl::string_view name = AtomName(atom);
  absl::Status out =
      Remessage(status, status.message().empty() ? std::string(name)
                                                 : absl::StrCat(name, ": ", status.message()));
  out.SetPayload(kAtomTypeUrl, absl::Cord(name));
  return out;
}

absl::Status Annotate(const absl::Status& status, absl::string_view operation,
                      absl::string_view subject) {
  if (status.ok()) return status;
  return Remessage(status, absl::StrCat(operation, " \"", subject, "\": ", status.message()));
}

absl::Status WithMessage(const absl::Status& status, absl::string_view message) {
  if (status.ok()) return status;
  return Remessage(status, message);
}

absl::Status UnsharedCopy(const absl::Status& status) {
  return Remessage(status, status.message());
}

}  // namespace etsmgr
