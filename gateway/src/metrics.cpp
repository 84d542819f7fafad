#include "dispatch/gateway/metrics.hpp"

#include <fmt/format.h>

namespace dispatch::gateway {

void GatewayMetrics::count_status(int status) {
  if (status >= 500) {
    ++responses_5xx;
  } else if (status >= 400) {
    ++responses_4xx;
  } else {
    ++responses_2xx;
  }
}

std::string GatewayMetrics::render() const {
  std::string out;
  const auto line = [&out](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
  };
  line("dispatch_gateway_connections_accepted_total", "counter", "TCP connections accepted",
       connections_accepted.load());
  line("dispatch_gateway_connections_refused_total", "counter",
       "connections refused with 503 at the connection limit", connections_refused.load());
  line("dispatch_gateway_connections_open", "gauge", "open connections", connections_open.load());
  line("dispatch_gateway_requests_total", "counter", "HTTP requests read", requests.load());
  out += fmt::format(
      "# HELP dispatch_gateway_responses_total HTTP responses by status class\n"
      "# TYPE dispatch_gateway_responses_total counter\n"
      "dispatch_gateway_responses_total{{class=\"2xx\"}} {}\n"
      "dispatch_gateway_responses_total{{class=\"4xx\"}} {}\n"
      "dispatch_gateway_responses_total{{class=\"5xx\"}} {}\n",
      responses_2xx.load(), responses_4xx.load(), responses_5xx.load());
  line("dispatch_gateway_hostile_requests_total", "counter",
       "malformed, oversized or too slow requests", hostile_requests.load());
  line("dispatch_gateway_jobs_open", "gauge", "jobs in flight at the broker", jobs_open.load());
  line("dispatch_gateway_streams_open", "gauge", "streamed responses in progress",
       streams_open.load());
  line("dispatch_gateway_stream_splices_total", "counter",
       "restarted answers continued seamlessly after bytes were sent", stream_splices.load());
  line("dispatch_gateway_stream_divergences_total", "counter",
       "restarted answers that differed from what was sent (stream ended with an error)",
       stream_divergences.load());
  line("dispatch_gateway_stream_failures_total", "counter",
       "streams ended with an error event after bytes were sent", stream_failures.load());
  line("dispatch_gateway_client_disconnects_total", "counter",
       "jobs cancelled because their HTTP client went away", client_disconnects.load());
  return out;
}

}  // namespace dispatch::gateway
