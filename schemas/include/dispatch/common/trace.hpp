#pragma once

// W3C Trace Context, the `traceparent` header: the one a client gives travels with its job; a
// job without one gets a fresh trace.
//
//   traceparent = version "-" trace-id "-" parent-id "-" trace-flags
//                 2 hex      32 hex        16 hex         2 hex      (lowercase only)
//
// Parsing is strict, as the spec asks of a vendor that starts traces: lowercase hex, exact
// lengths, an all-zero trace id or parent id is invalid, version "ff" is invalid. A version
// above 00 is accepted when its first four fields have the version-00 shape and anything after
// them starts with "-" (the spec's forward-compatibility rule); what follows is dropped, and
// format() always writes version 00.

#include <string>
#include <string_view>

#include "dispatch/common/result.hpp"

namespace dispatch {

struct TraceContext {
  std::string trace_id;   // 32 lowercase hex digits, not all zero
  std::string parent_id;  // 16 lowercase hex digits, not all zero: the caller's span
  std::string flags;      // 2 lowercase hex digits ("01": sampled)

  bool operator==(const TraceContext&) const = default;
};

// Why a traceparent was refused (a short phrase for a log line or an error message).
struct TraceparentError {
  std::string message;
};

Result<TraceContext, TraceparentError> parse_traceparent(std::string_view text);

// "00-<trace_id>-<parent_id>-<flags>".
std::string format_traceparent(const TraceContext& context);

// A new trace: random trace id and parent id (random_hex_id), flags "01" (sampled).
TraceContext fresh_trace();

// The same trace with `span_id` (16 hex digits) as the parent: what this process sends on as
// the caller of the next hop.
TraceContext child_of(const TraceContext& context, std::string span_id);

// The trace id of `traceparent` for a log line, or "-" when it is not a valid traceparent.
std::string trace_id_of(std::string_view traceparent);

// A random span id (16 lowercase hex digits, never all zero).
std::string new_span_id();

}  // namespace dispatch
