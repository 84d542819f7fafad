#include "dispatch/response.hpp"

#include <utility>

namespace dispatch {

DispatchResponse DispatchResponse::from_wire(protocol::Response response, std::string job_id) {
  DispatchResponse out;
  out.content = std::move(response.content);
  out.thinking = std::move(response.thinking);
  out.tool_calls = std::move(response.tool_calls);
  out.provider = std::move(response.provider);
  out.model = std::move(response.model);
  out.usage = response.usage;
  out.finish_reason = std::move(response.finish_reason);
  out.raw_finish_reason = std::move(response.raw_finish_reason);
  out.request_id = std::move(response.request_id);
  out.created_at = response.created_at;
  out.total_duration_ns = response.total_duration_ns;
  out.attempts = std::move(response.attempts);
  out.cost_usd = response.cost_usd;
  out.skipped_events = response.skipped_events;
  out.job_id = std::move(job_id);
  return out;
}

}  // namespace dispatch
