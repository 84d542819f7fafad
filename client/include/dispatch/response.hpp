#pragma once

// What a dispatched job answers with, and the events of a streamed answer.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch {

using Usage = protocol::Usage;      // prompt, completion, total and cached tokens
using Attempt = protocol::Attempt;  // one try of one target: outcome, status, duration
using ToolCallDelta = protocol::ToolCallDelta;

struct DispatchResponse {
  std::string content;
  std::string thinking;
  std::vector<protocol::ToolCall> tool_calls;
  std::string provider;  // the target that actually answered (after any fallback)
  std::string model;
  Usage usage;
  std::string finish_reason;       // stop | length | tool_calls | content_filter
  std::string raw_finish_reason;   // as the provider said it
  std::string request_id;          // the provider's id of the answer
  int64_t created_at = 0;          // Unix seconds
  uint64_t total_duration_ns = 0;  // worker took the job -> answer complete
  std::vector<Attempt> attempts;   // every try, so a caller can see why a fallback happened
  // What the answer cost in US dollars by the worker's price table, unrounded; absent when the
  // table has no price for the provider type and model.
  std::optional<double> cost_usd;

  // Client-side facts about this job.
  std::string job_id;
  uint32_t stream_resets = 0;   // the answer was restarted this many times while streaming
  bool stream_gap = false;      // chunks were missed (the broker drops some for a slow
                                // client); `content` is still the complete answer
  uint32_t skipped_events = 0;  // malformed provider stream events the worker skipped

  std::chrono::nanoseconds total_duration() const {
    return std::chrono::nanoseconds(static_cast<int64_t>(total_duration_ns));
  }

  static DispatchResponse from_wire(protocol::Response response, std::string job_id);
};

// One event of a streamed answer, delivered in order to the caller's callback.
struct StreamEvent {
  enum class Type {
    chunk,  // more of the answer: append content / thinking / tool-call fragments
    reset,  // the answer so far is void (failover mid-stream, redelivery to another worker,
            // resubmission to a restarted broker); what follows restarts it
    gap,    // chunks between expected_seq and seq were lost; the final response is complete
  };
  Type type = Type::chunk;
  uint64_t seq = 0;  // chunk: its seq; gap: the seq that arrived
  std::string content;
  std::string thinking;
  std::vector<ToolCallDelta> tool_calls;
  uint64_t next_seq = 0;      // reset: the seq the restarted answer begins at
  uint64_t expected_seq = 0;  // gap: the seq that should have arrived
  std::string reason;         // reset: why (e.g. "fallback to claude/...: stream_interrupted")
};

}  // namespace dispatch
