// Small helpers for absl::Status plumbing inside the engine.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BS_CONCAT_INNER(a, b) a##b
#define BS_CONCAT(a, b) BS_CONCAT_INNER(a, b)

// Returns from the current function when `expr` is not OK.
#define BS_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status bs_status_ = (expr);           \
    if (!bs_status_.ok()) return bs_status_;      \
  } while (0)

#define BS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(*tmp)

// `BS_ASSIGN_OR_RETURN(auto x, MakeX());` unwraps a StatusOr or returns its error.
#define BS_ASSIGN_OR_RETURN(lhs, expr) \
  BS_ASSIGN_OR_RETURN_IMPL(BS_CONCAT(bs_statusor_, __LINE__), lhs, expr)
