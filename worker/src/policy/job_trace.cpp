#include <spdlog/spdlog.h>

#include "dispatch/common/trace.hpp"
#include "dispatch/worker/policy/job_runner.hpp"

namespace dispatch::worker {

JobTrace job_trace_of(std::string_view traceparent) {
  TraceContext context;
  if (auto parsed = parse_traceparent(traceparent)) {
    context = std::move(parsed).value();
  } else {
    // The broker checks every client's traceparent and starts a trace for jobs without one, so
    // only an older broker (no field) or a broken one gets here.
    if (!traceparent.empty()) {
      spdlog::debug("job header traceparent refused ({}): a fresh trace instead",
                    parsed.error().message);
    }
    context = fresh_trace();
  }
  JobTrace trace;
  trace.trace_id = context.trace_id;
  trace.provider_traceparent = format_traceparent(child_of(context, new_span_id()));
  return trace;
}

}  // namespace dispatch::worker
