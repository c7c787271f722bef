// Status propagation inside coroutines, where the usual RETURN_IF_ERROR macros (which `return`)
// do not compile: a coroutine must `co_return`.
//
//   Task<absl::StatusOr<int>> Sum(Process& self) {
//     ETSMGR_CO_ASSIGN_OR_RETURN(int a, co_await Fetch(self, "a"));
//     ETSMGR_CO_RETURN_IF_ERROR(Check(a));
//     co_return a + 1;
//   }
//
// The enclosing coroutine's result must be constructible from an absl::Status (absl::Status,
// absl::StatusOr<T>). The expression is evaluated once. GCC12-WORKAROUND: keep braced aggregate
// temporaries out of an awaited expression passed here (see etsmgr/executor/task.h).
#ifndef ETSMGR_BASE_STATUS_MACROS_H_
#define ETSMGR_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ETSMGR_STATUS_MACROS_CONCAT_INNER(a, b) a##b
#define ETSMGR_STATUS_MACROS_CONCAT(a, b) ETSMGR_STATUS_MACROS_CONCAT_INNER(a, b)

// co_returns the status of `expr` (an absl::Status) when it is not OK.
#define ETSMGR_CO_RETURN_IF_ERROR(expr)                  \
  do {                                                   \
    ::absl::Status etsmgr_status_macros_status = (expr); \
    if (!etsmgr_status_macros_status.ok()) {             \
      co_return etsmgr_status_macros_status;             \
    }                                                    \
  } while (false)

// Declares/assigns `lhs` from the value of `rexpr` (an absl::StatusOr<T>), or co_returns its
// status when it is not OK.
#define ETSMGR_CO_ASSIGN_OR_RETURN(lhs, rexpr)                                                     \
  ETSMGR_CO_ASSIGN_OR_RETURN_IMPL(ETSMGR_STATUS_MACROS_CONCAT(etsmgr_status_macros_or_, __LINE__), \
                                  lhs, rexpr)
#define ETSMGR_CO_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) co_return std::move(statusor).status(); \
  lhs = std::move(*statusor)

#endif  // ETSMGR_BASE_STATUS_MACROS_H_
