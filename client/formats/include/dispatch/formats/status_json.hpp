#pragma once

// The broker's status as JSON: what `dispatch status --json` prints and what the gateway serves
// at GET /status.json (and its status page renders). One function, so the two cannot drift.

#include <nlohmann/json.hpp>

#include "dispatch/protocol/messages.hpp"

namespace dispatch::formats {

// {"broker_id","uptime_ms","queue_depth":{"interactive":N,...},"queue_limit","in_flight",
//  "finished_kept","workers":[{worker_id,host,pid,capacity,in_flight,providers,
//  last_heartbeat_ms_ago,state}],"providers":{NAME:{submitted,succeeded,failed,retried,
//  fell_over,prompt_tokens,completion_tokens}},"payload_bytes","payload_bytes_limit",
//  "rejected":{CODE:N},"broker_errors":{CODE:N},"worker_count","identity","clients":{...},
//  "insecure","quotas":[{key,rpm,tpm,concurrency,...,breaker,breaker_ms}]}
nlohmann::json status_to_json(const protocol::StatusReply& status);

}  // namespace dispatch::formats
