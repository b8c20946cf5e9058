// Early-return helpers for absl::Status / absl::StatusOr.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DSV3_STATUS_CONCAT_INNER(a, b) a##b
#define DSV3_STATUS_CONCAT(a, b) DSV3_STATUS_CONCAT_INNER(a, b)

// Returns the status of `expr` (an absl::Status) from the enclosing function if it is not OK.
#define DSV3_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::absl::Status _dsv3_status = (expr);           \
    if (!_dsv3_status.ok()) return _dsv3_status;    \
  } while (0)

// Evaluates `expr` (an absl::StatusOr<T>); returns its status if not OK, else moves the value
// into `lhs` (which may be a declaration: `DSV3_ASSIGN_OR_RETURN(auto x, F());`).
#define DSV3_ASSIGN_OR_RETURN(lhs, expr) \
  DSV3_ASSIGN_OR_RETURN_IMPL(DSV3_STATUS_CONCAT(_dsv3_statusor_, __LINE__), lhs, expr)
#define DSV3_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = *std::move(tmp)
