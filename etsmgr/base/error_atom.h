// An error's identity: the Erlang atom a manager or table call reports (table_exists, not_owner,
// ...), carried in an absl::Status as a payload, so code and tests decide by it and not by the
// message text. The message keeps the atom's name too, for whoever reads the log.
//
//   absl::Status st = co_await mgr.DelTable(self, "counter");
//   if (ErrorAtom(st) == Atom::kNotOwner) ...           // not st.message().find("not_owner")
//
//   // Making one: `del_table "counter": not_owner: caller <0.7> is neither ...`
//   return Annotate(WithAtom(absl::PermissionDeniedError(detail), Atom::kNotOwner), "del_table",
//                   name);
//
// Every error the manager returns for one of these conditions carries its atom; one without an
// atom answers Atom::kNone. The payload (type URL kAtomTypeUrl, value the atom's name) survives
// copies and StatusOr, and Annotate keeps it; a status re-created from code and message
// (absl::Status(st.code(), ...)) loses every payload: annotate it with Annotate instead. A status
// printed with ToString() or operator<< shows the payload after the message.
//
// All functions are pure and thread-safe.
#ifndef ETSMGR_BASE_ERROR_ATOM_H_
#define ETSMGR_BASE_ERROR_ATOM_H_

#include <ostream>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace etsmgr {

// The atoms the manager's API reports, as in Erlang's etsmgr and OTP.
enum class Atom {
  kNone,              // No atom: the status is OK, or its error has no Erlang name here.
  kTableExists,       // etsmgr new_table/add_table: {error, table_exists}, the name is held.
  kNotOwner,          // etsmgr add_table/del_table: {error, not_owner}, the caller may not.
  kNoSuchTableEntry,  // etsmgr del_table: {error, no_such_table_entry}, an unknown name.
  kAlreadyStarted,    // OTP start: {error, {already_started, Pid}}, the instance runs.
  kNotStarted,        // OTP stop: {error, {not_started, Name}}, the instance never ran.
};

// The payload's type URL; its value is the atom's name.
inline constexpr char kAtomTypeUrl[] = "etsmgr.dev/atom";

// The Erlang name ("table_exists"); "" for kNone.
absl::string_view AtomName(Atom atom);

// Prints the name, or "(none)" for kNone (gtest prints atoms with it).
std::ostream& operator<<(std::ostream& os, Atom atom);

// The atom `status` carries; kNone for OK, for a status without one, or for an unknown name.
Atom ErrorAtom(const absl::Status& status);

// `status` carrying `atom`, its message prefixed with the atom's name ("table_exists: " + the
// message; the name alone for an empty message). Unchanged when OK, when `atom` is kNone, or when
// it carries `atom` already (the prefix is not repeated). Other payloads are kept.
absl::Status WithAtom(absl::Status status, Atom atom);

// The one prefix of the manager's errors: `operation "subject": ` + the message, with the code
// and every payload (the atom included) kept. OK stays OK.
//   Annotate(absl::NotFoundError("no_such_table_entry"), "del_table", "t")
//     -> NotFound `del_table "t": no_such_table_entry`
absl::Status Annotate(const absl::Status& status, absl::string_view operation,
                      absl::string_view subject);

// `status` with another message, its code and every payload kept: for a prefix of a layer below
// the manager (a supervisor's, a table's), where Annotate's `operation "subject": ` does not fit.
absl::Status WithMessage(const absl::Status& status, absl::string_view message);

// A copy of `status`, payloads included, that shares no reference-counted memory with it: for a
// status handed to another thread whose reference counting a sanitizer cannot see (Debian's
// Abseil).
absl::Status UnsharedCopy(const absl::Status& status);

}  // namespace etsmgr

#endif  // ETSMGR_BASE_ERROR_ATOM_H_
