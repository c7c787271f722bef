// The instantiations table.h declares `extern` in unoptimised builds (see there).
#include <cstdint>
#include <string>

#include "etsmgr/table/table.h"

namespace etsmgr {

template class Table<int64_t, int64_t>;
template class Table<std::string, int64_t>;
#if !defined(__clang__)
template class Table<int64_t, std::string>;
template class Table<std::string, std::string>;
#endif

}  // namespace etsmgr
