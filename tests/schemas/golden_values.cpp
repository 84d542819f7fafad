#include "golden_values.hpp"

#include <stdexcept>

namespace dispatch::protocol::testing {
namespace {

constexpr const char* kJobId = "job-0001";
constexpr const char* kWorkerId = "host-a:4242:9c1e";

template <class T>
GoldenCase make_case(std::string name, std::string type, std::string command, std::string frame,
                     const T& value) {
  GoldenCase c;
  c.name = std::move(name);
  c.type = std::move(type);
  c.command = std::move(command);
  c.frame = std::move(frame);
  c.bytes = encode(value);
  c.check_decode = [value](std::string_view bytes) -> std::string {
    auto decoded = decode<T>(bytes);
    if (!decoded) return "decode failed: " + decoded.error().message;
    if (!(decoded.value() == value)) return "decoded value differs";
    return "";
  };
  return c;
}

Attempt attempt(std::string provider, std::string model, std::string outcome, uint16_t status,
                std::string code, std::string message, uint64_t start, uint64_t duration,
                std::string note) {
  Attempt a;
  a.provider = std::move(provider);
  a.model = std::move(model);
  a.outcome = std::move(outcome);
  a.status = status;
  a.code = std::move(code);
  a.message = std::move(message);
  a.start_offset_ms = start;
  a.duration_ms = duration;
  a.note = std::move(note);
  return a;
}

}  // namespace

Submit golden_submit_minimal() {
  Submit s;
  s.job_id = kJobId;
  s.provider = "ollama";
  return s;
}

Request golden_request_full() {
  Request r;
  r.provider = "openai";
  r.model = "gpt-4o-mini";

  Message system;
  system.role = "system";
  system.content = "You are terse.";
  Message user;
  user.role = "user";
  user.content = "What is in this picture? Then check the weather in Paris.";
  user.images = {"iVBORw0KGgoAAAANSUhEUg=="};
  Message assistant;
  assistant.role = "assistant";
  assistant.thinking = "The user wants the weather.";
  assistant.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  Message tool;
  tool.role = "tool";
  tool.content = R"({"temp_c":18})";
  tool.tool_call_id = "call_1";
  tool.tool_name = "get_weather";
  r.messages = {system, user, assistant, tool};

  r.stream = true;
  r.temperature = 0.25;
  r.max_tokens = 256;
  r.top_p = 0.5;
  r.stop = {"\n\n", "END"};
  r.timeout_ms = 20000;
  r.retry_count = 2;
  r.fallbacks = std::vector<Target>{{"claude", "claude-3-5-haiku-latest"}, {"ollama", "llama3.2"}};
  r.tools = {{"get_weather", "Current weather for a city",
              R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"}};
  r.tool_choice = "function";
  r.tool_choice_function = "get_weather";
  r.response_format = "json_schema";
  r.response_schema = R"({"type":"object"})";
  r.think = true;
  r.thinking_budget = 1024;
  r.metadata = {{"custom_id", "request-7"}, {"team", "search"}};
  return r;
}

Response golden_response() {
  Response r;
  r.content =
      "It is 18 \xC2\xB0"
      "C in Paris.";
  r.provider = "claude";
  r.model = "claude-3-5-haiku-latest";
  r.usage = {41, 9, 50};
  r.finish_reason = "stop";
  r.raw_finish_reason = "end_turn";
  r.request_id = "msg_01XYZ";
  r.created_at = 1700000000;
  r.total_duration_ns = 812000000;
  r.attempts = {
      attempt("openai", "gpt-4o-mini", "rate_limited", 429, "rate_limit_exceeded",
              "Rate limit reached", 0, 120, "retry-after 100 ms honoured"),
      attempt("openai", "gpt-4o-mini", "rate_limited", 429, "rate_limit_exceeded",
              "Rate limit reached", 230, 95, ""),
      attempt("claude", "claude-3-5-haiku-latest", "ok", 200, "", "", 330, 480,
              "temperature clamped to 1.0"),
  };
  return r;
}

Error golden_error() {
  Error e;
  e.kind = ErrorKind::rate_limited;
  e.message = "all targets failed; last: Rate limit reached";
  e.status = 429;
  e.code = "rate_limit_exceeded";
  e.provider = "openai";
  e.model = "gpt-4o-mini";
  e.attempts = {
      attempt("openai", "gpt-4o-mini", "rate_limited", 429, "rate_limit_exceeded",
              "Rate limit reached", 0, 120, ""),
      attempt("claude", "claude-3-5-haiku-latest", "circuit_open", 0, "", "", 121, 0, ""),
  };
  return e;
}

ChunkHeader golden_chunk_tool_call() {
  ChunkHeader h;
  h.chunk.job_id = kJobId;
  h.chunk.seq = 3;
  h.chunk.tool_calls = {{0, "call_1", "get_weather", R"({"ci)"}};
  h.delivery = 1;
  return h;
}

ResetHeader golden_reset() {
  ResetHeader h;
  h.reset.job_id = kJobId;
  h.reset.next_seq = 4;
  h.reset.reason = "fallback to claude/claude-3-5-haiku-latest: stream_interrupted";
  h.delivery = 1;
  return h;
}

Ready golden_ready() {
  Ready r;
  r.worker_id = kWorkerId;
  r.host = "host-a";
  r.pid = 4242;
  r.capacity = 256;
  r.providers = {"ali", "claude", "ollama", "openai"};
  r.version = "0.1.0";
  return r;
}

// What a client identity that is not an admin gets from a CURVE broker: the number of workers
// and its own counts only (here a gateway with two tenants).
StatusReply golden_status_reply_scoped() {
  StatusReply s;
  s.broker_id = "broker-7f3a";
  s.uptime_ms = 3600000;
  s.queue_limit = 10000;
  s.payload_bytes_limit = 536870912;
  s.worker_count = 2;
  s.identity = "gateway-1";
  s.clients["gateway-1/team-a"] = ClientCounters{3, 2, 120, 110, 5, 0};
  s.clients["gateway-1/team-b"] = ClientCounters{0, 1, 9, 8, 0, 1};
  return s;
}

StatusReply golden_status_reply() {
  StatusReply s;
  s.broker_id = "broker-7f3a";
  s.uptime_ms = 3600000;
  s.queue_depth = {2, 15, 1200};
  s.queue_limit = 10000;
  s.in_flight = 300;
  s.finished_kept = 5000;
  WorkerStatus a;
  a.worker_id = kWorkerId;
  a.host = "host-a";
  a.pid = 4242;
  a.capacity = 256;
  a.in_flight = 250;
  a.providers = {"claude", "openai"};
  a.last_heartbeat_ms_ago = 420;
  a.state = "ready";
  WorkerStatus b;
  b.worker_id = "host-b:77:01ab";
  b.host = "host-b";
  b.pid = 77;
  b.capacity = 64;
  b.in_flight = 50;
  b.providers = {"ollama"};
  b.last_heartbeat_ms_ago = 1310;
  b.state = "draining";
  s.workers = {a, b};
  s.providers["claude"] = {900, 880, 20, 31, 12, 410000, 95000};
  s.providers["openai"] = {1500, 1490, 10, 44, 0, 700000, 120000};
  QuotaStatus openai;
  openai.key = "openai";
  openai.rpm = 600;
  openai.tpm = 150000;
  openai.concurrency = 64;
  openai.requests_last_minute = 596;
  openai.tokens_last_minute = 141200;
  openai.running = 40;
  openai.waiting = 1100;
  QuotaStatus model;
  model.key = "openai/gpt-4o-mini";
  model.paused_ms = 1800;
  model.paused_reason = "rate_limited from host-a:4242:9c1e";
  model.breaker = "open";
  model.breaker_ms = 25000;
  s.quotas = {openai, model};
  return s;
}

ProviderHealth golden_provider_health() {
  ProviderHealth h;
  h.provider = "openai";
  h.model = "gpt-4o-mini";
  h.kind = "rate_limited";
  h.retry_after_ms = 2000;
  h.limit_requests = 600;
  h.remaining_requests = 0;
  h.reset_requests_ms = 1500;
  return h;
}

std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> cases;

  cases.push_back(
      make_case("submit_minimal", "Submit", "submit", "header", golden_submit_minimal()));
  Submit submit_full;
  submit_full.job_id = "batch-42";
  submit_full.provider = "openai";
  submit_full.model = "gpt-4o-mini";
  submit_full.priority = Priority::batch;
  submit_full.queue_timeout_ms = 600000;
  submit_full.stream = true;
  cases.push_back(make_case("submit_full", "Submit", "submit", "header", submit_full));
  Submit submit_tenant = golden_submit_minimal();
  submit_tenant.tenant = "team-a";  // only a gateway identity may set it
  cases.push_back(make_case("submit_tenant", "Submit", "submit", "header", submit_tenant));
  Submit submit_traced = golden_submit_minimal();
  submit_traced.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  cases.push_back(make_case("submit_traceparent", "Submit", "submit", "header", submit_traced));

  Request minimal;
  minimal.provider = "ollama";
  minimal.model = "llama3.2";
  minimal.messages = {Message{"user", "Hello", "", {}, {}, "", ""}};
  cases.push_back(make_case("request_minimal", "Request", "submit", "payload", minimal));
  cases.push_back(make_case("request_full", "Request", "submit", "payload", golden_request_full()));
  Request no_fallback = minimal;
  no_fallback.fallbacks = std::vector<Target>{};  // present and empty: no fallback at all
  cases.push_back(make_case("request_no_fallback", "Request", "submit", "payload", no_fallback));

  Accepted accepted{kJobId, "broker-7f3a", false};
  cases.push_back(make_case("accepted", "Accepted", "accepted", "header", accepted));
  Accepted duplicate{kJobId, "broker-7f3a", true};
  cases.push_back(make_case("accepted_duplicate", "Accepted", "accepted", "header", duplicate));

  Rejected queue_full{kJobId, ErrorKind::queue_full, "queue_full", "queue is full (10000 jobs)"};
  cases.push_back(make_case("rejected_queue_full", "Rejected", "rejected", "header", queue_full));
  Rejected version{"", ErrorKind::invalid_request, "version_mismatch",
                   "peer speaks LLMD2, this peer speaks LLMD1"};
  cases.push_back(make_case("rejected_version", "Rejected", "rejected", "header", version));

  cases.push_back(make_case("cancel", "Cancel", "cancel", "header", Cancel{kJobId}));
  cases.push_back(
      make_case("job_header", "JobHeader", "job", "header", JobHeader{kJobId, 1, true, {}}));
  cases.push_back(make_case("job_header_open_targets", "JobHeader", "job", "header",
                            JobHeader{kJobId, 1, false, {"openai/gpt-4o-mini"}}));
  cases.push_back(make_case(
      "job_header_traceparent", "JobHeader", "job", "header",
      JobHeader{kJobId, 1, false, {}, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}));

  Chunk content_chunk;
  content_chunk.job_id = kJobId;
  content_chunk.seq = 0;
  content_chunk.content = "It is";
  cases.push_back(make_case("chunk_content", "Chunk", "chunk", "header", content_chunk));
  cases.push_back(make_case("chunk_tool_call_delta", "ChunkHeader", "chunk", "header",
                            golden_chunk_tool_call()));
  cases.push_back(make_case("reset", "ResetHeader", "reset", "header", golden_reset()));

  cases.push_back(make_case("job_end", "JobEnd", "result", "header", JobEnd{kJobId, 1}));
  cases.push_back(make_case("response", "Response", "result", "payload", golden_response()));
  Response tool_response;
  tool_response.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
  tool_response.provider = "openai";
  tool_response.model = "gpt-4o-mini";
  tool_response.usage = {60, 18, 78};
  tool_response.finish_reason = "tool_calls";
  tool_response.raw_finish_reason = "tool_calls";
  tool_response.request_id = "chatcmpl-9";
  tool_response.created_at = 1700000100;
  tool_response.total_duration_ns = 300000000;
  tool_response.attempts = {attempt("openai", "gpt-4o-mini", "ok", 200, "", "", 0, 290, "")};
  cases.push_back(make_case("response_tool_calls", "Response", "result", "payload", tool_response));
  // gpt-4o-mini at 0.15 / 0.60 / 0.075 USD per million input / output / cached input tokens:
  // (1200 - 1024) x 0.15 + 1024 x 0.075 + 80 x 0.60 = 150.0 per million = 0.00015 USD.
  Response costed = tool_response;
  costed.tool_calls.clear();
  costed.content = "Paris.";
  costed.usage = {1200, 80, 1280, 1024};
  costed.finish_reason = "stop";
  costed.raw_finish_reason = "stop";
  costed.cost_usd = 0.00015;
  cases.push_back(make_case("response_cost", "Response", "result", "payload", costed));
  cases.push_back(make_case("error", "Error", "error", "payload", golden_error()));
  Error deadline;
  deadline.kind = ErrorKind::timeout;
  deadline.code = "queue_deadline";
  deadline.message = "no worker took the job within 30000 ms";
  cases.push_back(make_case("error_queue_deadline", "Error", "error", "payload", deadline));

  cases.push_back(make_case("ready", "Ready", "ready", "header", golden_ready()));
  Ready reconnect = golden_ready();
  reconnect.jobs = {HeldJob{kJobId, 1}, HeldJob{"job-0002", 2}};
  cases.push_back(make_case("ready_held_jobs", "Ready", "ready", "header", reconnect));
  cases.push_back(make_case("credit", "Credit", "credit", "header", Credit{128}));
  cases.push_back(make_case("credit_drain", "Credit", "credit", "header", Credit{0}));
  cases.push_back(
      make_case("heartbeat", "Heartbeat", "heartbeat", "header", Heartbeat{kWorkerId, 17}));
  cases.push_back(make_case("heartbeat_client", "Heartbeat", "heartbeat", "header", Heartbeat{}));
  cases.push_back(
      make_case("disconnect", "Disconnect", "disconnect", "header", Disconnect{"shutting down"}));
  cases.push_back(make_case("provider_health_rate_limited", "ProviderHealth", "provider_health",
                            "header", golden_provider_health()));
  cases.push_back(
      make_case("status_reply", "StatusReply", "status", "header", golden_status_reply()));
  cases.push_back(make_case("status_reply_scoped", "StatusReply", "status", "header",
                            golden_status_reply_scoped()));

  GoldenCase status_request;
  status_request.name = "status_request";
  status_request.type = "(empty map)";
  status_request.command = "status";
  status_request.frame = "header";
  status_request.bytes = std::string(kEmptyMap);
  status_request.check_decode = [](std::string_view bytes) -> std::string {
    return bytes == kEmptyMap ? "" : "not the empty map";
  };
  cases.push_back(status_request);
  return cases;
}

std::string from_hex(std::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw std::invalid_argument("not a hex digit");
  };
  if (hex.size() % 2 != 0) throw std::invalid_argument("odd hex length");
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    out.push_back(static_cast<char>(digit(hex[i]) * 16 + digit(hex[i + 1])));
  }
  return out;
}

}  // namespace dispatch::protocol::testing
