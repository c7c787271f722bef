#include "etsmgr/base/exception_text.h"

#include <exception>

namespace etsmgr {

std::string CurrentExceptionText() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "non-standard exception";
  }
}

}  // namespace etsmgr
