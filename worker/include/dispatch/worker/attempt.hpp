#pragma once

// The seam between the policy (which decides) and the transport + adapters (which act).
// The policy asks for one attempt of one target and hears back in unified terms only.

#include <cstdint>
#include <string>
#include <vector>

#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/failure.hpp"

namespace dispatch::worker {

struct ProviderConfig;

struct AttemptSpec {
  const protocol::Request* request = nullptr;  // the ORIGINAL request (never a partial prefill)
  protocol::Target target;
  const ProviderConfig* provider = nullptr;
  bool stream_upstream = true;  // ask the provider for a stream (policy timers need it)
  uint32_t connect_timeout_ms = 5000;
  std::string traceparent;  // sent as the `traceparent` header when not empty
};

// What a finished attempt produced (the policy turns it into a Response or a failure).
struct AttemptOutput {
  std::string content;
  std::string thinking;
  std::vector<protocol::ToolCall> tool_calls;  // assembled by index
  protocol::Usage usage;                       // total = prompt + completion
  std::string finish_reason;                   // normalised, "" if none arrived
  std::string raw_finish_reason;
  std::string request_id;
  std::string model;  // as the provider reported it ("" = not reported)
  int64_t created_at = 0;
  uint32_t skipped_events = 0;
  bool saw_terminator = false;     // [DONE] / message_stop / done:true / final DashScope event
  std::vector<std::string> notes;  // from the adapter (e.g. temperature clamped)
  RateLimitHeaders limits;         // the answer's remaining-quota headers, when it had any
};

class AttemptListener {
 public:
  virtual ~AttemptListener() = default;
  // Any bytes of the response body arrived (keeps the idle timer honest for pings).
  virtual void on_activity() = 0;
  // An incremental piece of the answer (content / thinking / tool-call delta). job_id and seq
  // are left empty: the policy numbers chunks.
  virtual void on_delta(const protocol::Chunk& delta) = 0;
  // Ended at the HTTP level with no error status and no error event.
  virtual void on_complete(AttemptOutput output) = 0;
  // Ended with a classified failure (HTTP error, transport error, in-stream error event).
  virtual void on_failed(Failure failure, std::vector<std::string> notes) = 0;
};

using AttemptHandle = uint64_t;

class AttemptLauncher {
 public:
  virtual ~AttemptLauncher() = default;
  // Events arrive later on the loop thread, never from inside start(). A request that cannot be
  // built is reported through on_failed asynchronously as well.
  virtual AttemptHandle start(const AttemptSpec& spec, AttemptListener& listener) = 0;
  // Stops the attempt at once; no event follows. Unknown handles are ignored.
  virtual void abort(AttemptHandle handle) = 0;
};

}  // namespace dispatch::worker
