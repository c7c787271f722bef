// The text of the exception being handled, for logs and exit reasons.
//
//   try { ... } catch (...) { Log(LogLevel::kError, CurrentExceptionText()); }
//
// Call only inside a catch handler (or from unhandled_exception()). Returns what() for a
// std::exception and "non-standard exception" for anything else. Thread-safe.
#ifndef ETSMGR_BASE_EXCEPTION_TEXT_H_
#define ETSMGR_BASE_EXCEPTION_TEXT_H_

#include <string>

namespace etsmgr {

std::string CurrentExceptionText();

}  // namespace etsmgr

#endif  // ETSMGR_BASE_EXCEPTION_TEXT_H_
