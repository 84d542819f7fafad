#include "dispatch/common/trace.hpp"

#include <algorithm>

#include "dispatch/common/random.hpp"

namespace dispatch {
namespace {

constexpr std::size_t kVersion00Length = 55;  // 2 + 1 + 32 + 1 + 16 + 1 + 2

bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool all_zero(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c == '0'; });
}

// A random id of `bytes` bytes that is not all zero (the spec forbids all-zero ids).
std::string nonzero_hex_id(std::size_t bytes) {
  for (;;) {
    std::string id = random_hex_id(bytes);
    if (!all_zero(id)) return id;
  }
}

Result<void, TraceparentError> check_field(std::string_view value, std::size_t length,
                                           std::string_view name, bool nonzero) {
  if (value.size() != length || !is_lower_hex(value)) {
    return TraceparentError{std::string(name) + " is not " + std::to_string(length) +
                            " lowercase hex digits"};
  }
  if (nonzero && all_zero(value)) return TraceparentError{std::string(name) + " is all zeros"};
  return {};
}

}  // namespace

Result<TraceContext, TraceparentError> parse_traceparent(std::string_view text) {
  if (text.size() < kVersion00Length) return TraceparentError{"too short"};
  if (text[2] != '-' || text[35] != '-' || text[52] != '-') {
    return TraceparentError{"not version-traceid-parentid-flags"};
  }
  const std::string_view version = text.substr(0, 2);
  if (auto ok = check_field(version, 2, "version", false); !ok) return ok.error();
  if (version == "ff") return TraceparentError{"version ff is invalid"};
  // Version 00 is exactly 55 characters; a later version may append "-..." fields.
  if (text.size() > kVersion00Length && (version == "00" || text[kVersion00Length] != '-')) {
    return TraceparentError{"too long"};
  }
  TraceContext context{std::string(text.substr(3, 32)), std::string(text.substr(36, 16)),
                       std::string(text.substr(53, 2))};
  if (auto ok = check_field(context.trace_id, 32, "trace id", true); !ok) return ok.error();
  if (auto ok = check_field(context.parent_id, 16, "parent id", true); !ok) return ok.error();
  if (auto ok = check_field(context.flags, 2, "flags", false); !ok) return ok.error();
  return context;
}

std::string format_traceparent(const TraceContext& context) {
  return "00-" + context.trace_id + "-" + context.parent_id + "-" + context.flags;
}

TraceContext fresh_trace() {
  return TraceContext{nonzero_hex_id(16), nonzero_hex_id(8), "01"};
}

TraceContext child_of(const TraceContext& context, std::string span_id) {
  return TraceContext{context.trace_id, std::move(span_id), context.flags};
}

std::string trace_id_of(std::string_view traceparent) {
  auto parsed = parse_traceparent(traceparent);
  return parsed ? std::move(parsed).value().trace_id : std::string("-");
}

std::string new_span_id() {
  return nonzero_hex_id(8);
}

}  // namespace dispatch
