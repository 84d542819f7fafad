#pragma once

// JSON shapes the CLI prints (chat --json, chat --stream --json, status --json).

#include <nlohmann/json.hpp>
#include <string>

#include "dispatch/errors.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/formats/status_json.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/response.hpp"

namespace dispatch::cli {

// {"content","provider","model","usage":{prompt_tokens,completion_tokens,total_tokens},
//  "finish_reason","raw_finish_reason","attempts":[...],"request_id","job_id","created_at",
//  "total_duration_ns", "tool_calls"? , "thinking"?, "stream_resets"?, "stream_gap"?}
nlohmann::json response_to_json(const DispatchResponse& response);
// {"error":{"kind","message","status"?,"code"?,"provider"?,"model"?,"attempts"?}}
nlohmann::json error_to_json(const DispatchError& error);
// {"event":"chunk","seq",content,...} | {"event":"reset","next_seq","reason"} |
// {"event":"gap","expected_seq","seq"}
nlohmann::json event_to_json(const StreamEvent& event);
nlohmann::json attempt_to_json(const Attempt& attempt);

// Shared with the HTTP formats (client/formats): usage and tool-call objects, the status object
// (the gateway serves it at GET /status.json), and dump_line — one line of text, compact,
// invalid UTF-8 replaced (never throws on odd provider output).
using formats::dump_line;
using formats::status_to_json;
using formats::tool_calls_to_openai;
using formats::usage_to_json;

// The human table `dispatch status` prints.
std::string format_status_table(const protocol::StatusReply& status);
std::string format_duration_ms(uint64_t milliseconds);

}  // namespace dispatch::cli
