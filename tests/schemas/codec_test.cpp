// Encoding rules, round trips, required fields, wrong types and invalid values.

#include "dispatch/protocol/codec.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "golden_values.hpp"
#include "test_util.hpp"

namespace dispatch::protocol {
namespace {

using nlohmann::json;
using testing::as_json;
using testing::mp;
using Code = DecodeError::Code;

template <class T>
void expect_round_trip(const T& value) {
  const std::string bytes = encode(value);
  auto decoded = decode<T>(bytes);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_TRUE(decoded.value() == value) << as_json(bytes).dump();
  EXPECT_EQ(encode(decoded.value()), bytes) << "encoding is not deterministic";
}

template <class T>
DecodeError expect_error(const json& input, Code code, std::string_view message_prefix) {
  auto decoded = decode<T>(mp(input));
  EXPECT_FALSE(decoded) << input.dump();
  if (decoded) return {};
  EXPECT_EQ(to_string(decoded.error().code), to_string(code)) << decoded.error().message;
  EXPECT_EQ(decoded.error().message.substr(0, message_prefix.size()), message_prefix)
      << decoded.error().message;
  return decoded.error();
}

json keys_of(std::string_view bytes) {
  json keys = json::array();
  const auto wire = as_json(bytes);  // kept alive: items() only refers to it
  for (const auto& [key, value] : wire.items()) keys.push_back(key);
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Names

TEST(Names, ErrorKindsRoundTripByIdentifierName) {
  const std::vector<std::pair<ErrorKind, std::string_view>> kinds = {
      {ErrorKind::unknown, "unknown"},
      {ErrorKind::unsupported_provider, "unsupported_provider"},
      {ErrorKind::model_not_available, "model_not_available"},
      {ErrorKind::invalid_request, "invalid_request"},
      {ErrorKind::authentication, "authentication"},
      {ErrorKind::rate_limited, "rate_limited"},
      {ErrorKind::overloaded, "overloaded"},
      {ErrorKind::server_error, "server_error"},
      {ErrorKind::timeout, "timeout"},
      {ErrorKind::network, "network"},
      {ErrorKind::context_length_exceeded, "context_length_exceeded"},
      {ErrorKind::content_filtered, "content_filtered"},
      {ErrorKind::stream_interrupted, "stream_interrupted"},
      {ErrorKind::queue_full, "queue_full"},
      {ErrorKind::cancelled, "cancelled"},
      {ErrorKind::internal, "internal"},
  };
  for (const auto& [kind, name] : kinds) {
    EXPECT_EQ(to_string(kind), name);
    EXPECT_EQ(error_kind_from_string(name), kind) << name;
  }
  EXPECT_EQ(error_kind_from_string("quantum_decoherence"), ErrorKind::unknown);
  EXPECT_EQ(error_kind_from_string(""), ErrorKind::unknown);
  EXPECT_EQ(error_kind_from_string("Timeout"), ErrorKind::unknown);  // case-sensitive
  EXPECT_EQ(to_string(static_cast<ErrorKind>(200)), "unknown");
}

TEST(Names, CommandsRoundTripAndPayloadFlag) {
  const std::vector<std::tuple<Command, std::string_view, bool>> commands = {
      {Command::submit, "submit", true},
      {Command::accepted, "accepted", false},
      {Command::rejected, "rejected", false},
      {Command::cancel, "cancel", false},
      {Command::job, "job", true},
      {Command::chunk, "chunk", false},
      {Command::reset, "reset", false},
      {Command::result, "result", true},
      {Command::error, "error", true},
      {Command::ready, "ready", false},
      {Command::credit, "credit", false},
      {Command::heartbeat, "heartbeat", false},
      {Command::disconnect, "disconnect", false},
      {Command::status, "status", false},
      {Command::provider_health, "provider_health", false},
  };
  for (const auto& [command, name, payload] : commands) {
    EXPECT_EQ(to_string(command), name);
    EXPECT_EQ(command_from_string(name), command);
    EXPECT_EQ(command_has_payload(command), payload) << name;
  }
  EXPECT_FALSE(command_from_string("SUBMIT"));
  EXPECT_FALSE(command_from_string(""));
  EXPECT_FALSE(command_from_string("submit "));
}

TEST(Names, DecodeErrorCodes) {
  const std::vector<std::pair<Code, std::string_view>> codes = {
      {Code::malformed, "malformed"},
      {Code::wrong_type, "wrong_type"},
      {Code::missing_field, "missing_field"},
      {Code::invalid_value, "invalid_value"},
      {Code::bad_tag, "bad_tag"},
      {Code::version_mismatch, "version_mismatch"},
      {Code::unknown_command, "unknown_command"},
      {Code::bad_frame_count, "bad_frame_count"},
  };
  for (const auto& [code, name] : codes) {
    EXPECT_EQ(to_string(code), name);
    EXPECT_EQ(decode_error_code_from_string(name), code);
  }
  EXPECT_FALSE(decode_error_code_from_string("nope"));
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(RoundTrip, AllFilled) {
  expect_round_trip(testing::golden_request_full());
  expect_round_trip(testing::golden_response());
  expect_round_trip(testing::golden_error());
  expect_round_trip(testing::golden_chunk_tool_call());
  expect_round_trip(testing::golden_reset());
  expect_round_trip(testing::golden_ready());
  expect_round_trip(testing::golden_status_reply());
  expect_round_trip(Submit{"j", "openai", Priority::normal, 5000, true, ""});
  expect_round_trip(Accepted{"j", "b", true});
  expect_round_trip(Rejected{"j", ErrorKind::queue_full, "queue_full", "full"});
  expect_round_trip(Cancel{"j"});
  expect_round_trip(JobHeader{"j", 7, true, {}});
  expect_round_trip(JobEnd{"j", 7});
  expect_round_trip(Chunk{"j", 9, "text", "why", {{1, "c", "f", "{}"}}});
  expect_round_trip(StreamReset{"j", 10, "reason"});
  expect_round_trip(Credit{4000000000u});
  expect_round_trip(Heartbeat{"w", 3});
  expect_round_trip(Disconnect{"bye"});
  expect_round_trip(ToolCall{"id", "name", "{\"a\":1}"});
  expect_round_trip(Tool{"t", "d", "{}"});
  expect_round_trip(Target{"p", "m/with/slashes"});
  expect_round_trip(Usage{1, 2, 3});
  expect_round_trip(ToolCallDelta{2, "i", "n", "a"});
  expect_round_trip(ProviderCounters{1, 2, 3, 4, 5, 6, 7});
  expect_round_trip(Attempt{"p", "m", "ok", 200, "c", "m", 1, 2, "n"});
}

TEST(RoundTrip, AllEmptyExceptRequired) {
  Request request;
  request.provider = "p";
  request.model = "m";
  request.messages = {Message{"user", "", "", {}, {}, "", ""}};
  expect_round_trip(request);
  expect_round_trip(Response{});
  expect_round_trip(Error{});
  expect_round_trip(Submit{"j", "p", Priority::interactive, 0, false, ""});
  expect_round_trip(Accepted{"j", "", false});
  expect_round_trip(Rejected{});
  expect_round_trip(Cancel{"j"});
  expect_round_trip(JobHeader{"j", 1, false, {}});
  expect_round_trip(JobEnd{"j", 0});
  expect_round_trip(Chunk{"j", 0, "", "", {}});
  expect_round_trip(ChunkHeader{Chunk{"j", 0, "", "", {}}, 0});
  expect_round_trip(StreamReset{"j", 0, ""});
  expect_round_trip(ResetHeader{StreamReset{"j", 0, ""}, 0});
  expect_round_trip(Ready{"w", "", 0, 0, {}, "", {}});
  expect_round_trip(Ready{"w", "", 0, 0, {}, "", {{"job-1", 1}, {"job-2", 3}}});
  expect_round_trip(Credit{});
  expect_round_trip(Heartbeat{});
  expect_round_trip(Disconnect{});
  expect_round_trip(StatusReply{});
  expect_round_trip(ToolCall{});
  expect_round_trip(Message{"user", "", "", {}, {}, "", ""});
  expect_round_trip(Tool{"t", "", ""});
  expect_round_trip(Target{"p", "m"});
  expect_round_trip(Usage{});
  expect_round_trip(Attempt{});
  expect_round_trip(ToolCallDelta{});
  expect_round_trip(ProviderCounters{});
  expect_round_trip(WorkerStatus{});
}

// The broker's bound and rejection counters (added in a compatible way: absent when zero).
TEST(RoundTrip, StatusReplyBoundCounters) {
  StatusReply s;
  s.broker_id = "b";
  s.payload_bytes = 8u << 20;
  s.payload_bytes_limit = 512u << 20;
  s.rejected = {{"client_bytes", 3}, {"queue_bytes", 1}};
  s.broker_errors = {{"unknown_provider", 2}};
  s.failed_by_kind = {{"rate_limited", 4}, {"timeout", 1}};
  expect_round_trip(s);
  EXPECT_EQ(encode(StatusReply{"b", 0, {}, 0, 0, 0, {}, {}}).find("rejected"), std::string::npos);
  EXPECT_EQ(encode(StatusReply{"b", 0, {}, 0, 0, 0, {}, {}}).find("failed_by_kind"),
            std::string::npos);
}

// Security additions (compatible: absent when unset). A tenant is bounded like a job id.
TEST(RoundTrip, TenantAndScopedStatus) {
  expect_round_trip(Submit{"j", "p", Priority::interactive, 0, false, "team-a"});
  EXPECT_EQ(encode(Submit{"j", "p", Priority::interactive, 0, false}).find("tenant"),
            std::string::npos);
  StatusReply s;
  s.broker_id = "b";
  s.worker_count = 3;
  s.identity = "gw";
  s.clients["gw/team-a"] = ClientCounters{1, 2, 3, 4, 5, 6};
  s.clients["gw/team-b"] = ClientCounters{};
  s.insecure = true;
  expect_round_trip(s);

  Submit too_long{"j", "p",   Priority::interactive,
                  0,   false, std::string(Limits::max_tenant + 1, 't')};
  auto decoded = decode<Submit>(encode(too_long));
  ASSERT_FALSE(decoded);
  EXPECT_EQ(decoded.error().code, DecodeError::Code::invalid_value);
  EXPECT_NE(decoded.error().message.find("tenant"), std::string::npos) << decoded.error().message;
  too_long.tenant.pop_back();
  EXPECT_TRUE(decode<Submit>(encode(too_long)));
}

TEST(RoundTrip, ExtremeNumbers) {
  Response r;
  r.created_at = std::numeric_limits<int64_t>::min();
  r.total_duration_ns = std::numeric_limits<uint64_t>::max();
  r.skipped_events = std::numeric_limits<uint32_t>::max();
  r.usage = {std::numeric_limits<uint64_t>::max(), 0, 1};
  r.attempts = {Attempt{"p", "m", "ok", 65535, "", "", 0, 0, ""}};
  expect_round_trip(r);
  r.created_at = -1;
  expect_round_trip(r);

  Request q;
  q.provider = "p";
  q.model = "m";
  q.messages = {Message{"user", "x", "", {}, {}, "", ""}};
  q.temperature = 0.0;
  q.top_p = 1.0;
  q.max_tokens = std::numeric_limits<uint32_t>::max();
  q.retry_count = 0;  // set but zero: still written (optionals are written whenever set)
  q.think = false;
  expect_round_trip(q);
  const json wire = as_json(encode(q));
  EXPECT_EQ(wire["retry_count"], 0);
  EXPECT_EQ(wire["think"], false);
  EXPECT_EQ(wire["temperature"], 0.0);
}

// ---------------------------------------------------------------------------------------------
// Encoding rules

TEST(Encoding, KeysInDeclarationOrderDefaultsOmitted) {
  EXPECT_EQ(keys_of(encode(testing::golden_submit_minimal())), json({"job_id", "provider"}));
  EXPECT_EQ(keys_of(encode(Submit{"j", "p", Priority::batch, 10, true, ""})),
            json({"job_id", "provider", "priority", "queue_timeout_ms", "stream"}));
  EXPECT_EQ(keys_of(encode(Response{})), json({"provider", "model"}));
  EXPECT_EQ(keys_of(encode(Error{})), json({"kind"}));
  EXPECT_EQ(keys_of(encode(Rejected{})), json({"kind"}));
  EXPECT_EQ(keys_of(encode(Credit{0})), json({"capacity"}));
  EXPECT_EQ(keys_of(encode(JobHeader{"j", 1, false, {}})), json({"job_id", "delivery"}));
  EXPECT_EQ(keys_of(encode(JobEnd{"j", 0})), json({"job_id"}));
  EXPECT_EQ(keys_of(encode(Chunk{"j", 0, "", "", {}})), json({"job_id", "seq"}));
  EXPECT_EQ(keys_of(encode(ToolCallDelta{})), json({"index"}));
  EXPECT_EQ(keys_of(encode(Heartbeat{})), json::array());
  EXPECT_EQ(keys_of(encode(Attempt{})), json({"provider", "model", "outcome"}));
  EXPECT_EQ(encode(Heartbeat{}), std::string(kEmptyMap));

  const auto full = as_json(encode(testing::golden_request_full()));
  std::vector<std::string> order;
  for (const auto& [key, value] : full.items()) order.push_back(key);
  EXPECT_EQ(order, (std::vector<std::string>{
                       "provider", "model", "messages", "stream", "temperature", "max_tokens",
                       "top_p", "stop", "timeout_ms", "retry_count", "fallbacks", "tools",
                       "tool_choice", "tool_choice_function", "response_format", "response_schema",
                       "think", "thinking_budget", "metadata"}));
}

TEST(Encoding, TypesOnTheWire) {
  const std::string bytes = encode(testing::golden_error());
  EXPECT_EQ(as_json(bytes)["kind"], "rate_limited");  // ErrorKind by name

  Submit s{"j", "p", Priority::batch, 0, false, ""};
  EXPECT_EQ(as_json(encode(s))["priority"], 2);  // Priority as uint

  Request r;
  r.provider = "p";
  r.model = "m";
  r.messages = {Message{"user", "x", "", {}, {}, "", ""}};
  r.temperature = 1.0;
  const std::string request_bytes = encode(r);
  // float64 always (0xcb), even for values a float32 could hold: deterministic bytes.
  EXPECT_NE(request_bytes.find(std::string("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", 9)),
            std::string::npos);
}

TEST(Encoding, FallbacksUnsetOmittedButSetEmptyWritten) {
  Request r;
  r.provider = "p";
  r.model = "m";
  r.messages = {Message{"user", "x", "", {}, {}, "", ""}};
  EXPECT_FALSE(as_json(encode(r)).contains("fallbacks"));
  r.fallbacks = std::vector<Target>{};
  const auto wire = as_json(encode(r));
  ASSERT_TRUE(wire.contains("fallbacks"));
  EXPECT_TRUE(wire["fallbacks"].is_array());
  EXPECT_TRUE(wire["fallbacks"].empty());
  auto back = decode<Request>(encode(r));
  ASSERT_TRUE(back);
  ASSERT_TRUE(back.value().fallbacks.has_value());
  EXPECT_TRUE(back.value().fallbacks->empty());
}

TEST(Encoding, ChunkHeaderIsAChunkPlusDelivery) {
  const ChunkHeader header = testing::golden_chunk_tool_call();
  const std::string bytes = encode(header);
  EXPECT_EQ(keys_of(bytes), json({"job_id", "seq", "tool_calls", "delivery"}));
  auto as_chunk = decode<Chunk>(bytes);  // what a client does: delivery is an unknown key
  ASSERT_TRUE(as_chunk);
  EXPECT_TRUE(as_chunk.value() == header.chunk);
  EXPECT_EQ(encode(ChunkHeader{header.chunk, 0}), encode(header.chunk));
  auto as_header = decode<ChunkHeader>(encode(header.chunk));
  ASSERT_TRUE(as_header);
  EXPECT_EQ(as_header.value().delivery, 0u);

  const ResetHeader reset = testing::golden_reset();
  EXPECT_EQ(keys_of(encode(reset)), json({"job_id", "next_seq", "reason", "delivery"}));
  auto plain = decode<StreamReset>(encode(reset));
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain.value() == reset.reset);
}

TEST(Encoding, InvalidUtf8IsRepairedNotSent) {
  Disconnect d{std::string("bad \xff\xfe end \xe2\x82", 13)};
  const std::string bytes = encode(d);
  auto back = decode<Disconnect>(bytes);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back.value().reason, "bad \xEF\xBF\xBD\xEF\xBF\xBD end \xEF\xBF\xBD");
  StatusReply s;
  s.broker_id = "b";
  s.providers[std::string("a\xff")] = ProviderCounters{1, 0, 0, 0, 0, 0, 0};
  auto status = decode<StatusReply>(encode(s));
  ASSERT_TRUE(status) << status.error().message;
  EXPECT_EQ(status.value().providers.begin()->first, "a\xEF\xBF\xBD");
}

// ---------------------------------------------------------------------------------------------
// Decoding leniency

TEST(Decoding, AbsentAndPresentEmptyAreTheSame) {
  auto explicit_defaults = decode<Submit>(mp({{"job_id", "j"},
                                              {"provider", "p"},
                                              {"priority", 0},
                                              {"queue_timeout_ms", 0},
                                              {"stream", false}}));
  ASSERT_TRUE(explicit_defaults);
  EXPECT_TRUE(explicit_defaults.value() == (Submit{"j", "p", Priority::interactive, 0, false, ""}));

  auto response = decode<Response>(mp({{"content", ""},
                                       {"thinking", ""},
                                       {"tool_calls", json::array()},
                                       {"provider", ""},
                                       {"model", ""},
                                       {"usage", json::object()},
                                       {"finish_reason", ""},
                                       {"created_at", 0},
                                       {"attempts", json::array()},
                                       {"skipped_events", 0}}));
  ASSERT_TRUE(response) << response.error().message;
  EXPECT_TRUE(response.value() == Response{});

  auto status = decode<StatusReply>(mp({{"broker_id", "b"},
                                        {"queue_depth", json::array()},
                                        {"workers", json::array()},
                                        {"providers", json::object()}}));
  ASSERT_TRUE(status);
  EXPECT_TRUE(status.value() == (StatusReply{"b", 0, {}, 0, 0, 0, {}, {}}));
}

TEST(Decoding, NilMeansAbsent) {
  auto submit = decode<Submit>(
      mp({{"job_id", "j"}, {"provider", "p"}, {"priority", nullptr}, {"stream", nullptr}}));
  ASSERT_TRUE(submit) << submit.error().message;
  EXPECT_EQ(submit.value().priority, Priority::interactive);

  auto request = decode<Request>(mp({{"provider", "p"},
                                     {"model", "m"},
                                     {"messages", {{{"role", "user"}}}},
                                     {"temperature", nullptr},
                                     {"fallbacks", nullptr}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_FALSE(request.value().temperature.has_value());
  EXPECT_FALSE(request.value().fallbacks.has_value());

  expect_error<Submit>({{"job_id", nullptr}, {"provider", "p"}}, Code::missing_field,
                       "job_id: required field is missing");
}

TEST(Decoding, UnknownFieldsAreIgnoredAtEveryLevel) {
  const json future = {{"nested", {1, 2, {{"deep", nullptr}}}}, {"n", 1.5}};
  auto request =
      decode<Request>(mp({{"provider", "p"},
                          {"model", "m"},
                          {"messages", {{{"role", "user"}, {"mood", "happy"}}}},
                          {"fallbacks", {{{"provider", "q"}, {"model", "n"}, {"weight", 3}}}},
                          {"future_field", future},
                          {"x-extension", json::binary({1, 2, 3})}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_EQ(request.value().messages.at(0).role, "user");
  EXPECT_EQ(request.value().fallbacks->at(0).model, "n");

  // Non-string keys are unknown keys too.
  std::string bytes = mp({{"job_id", "j"}});
  bytes[0] = static_cast<char>(0x82);    // one more pair ...
  bytes += std::string("\x07\xa1x", 3);  // ... 7: "x"
  auto cancel = decode<Cancel>(bytes);
  ASSERT_TRUE(cancel) << cancel.error().message;
  EXPECT_EQ(cancel.value().job_id, "j");
}

TEST(Decoding, NumbersAcceptEquivalentForms) {
  // Integers where floats are expected; float32 and float64.
  auto request = decode<Request>(mp({{"provider", "p"},
                                     {"model", "m"},
                                     {"messages", {{{"role", "user"}}}},
                                     {"temperature", 1},
                                     {"top_p", 0.5}}));
  ASSERT_TRUE(request) << request.error().message;
  EXPECT_EQ(*request.value().temperature, 1.0);
  EXPECT_EQ(*request.value().top_p, 0.5);

  // A positive value in a signed encoding (e.g. Go's int64 -> 0xd3) is fine for a uint field.
  static constexpr char kCredit[] =
      "\x81\xa8"
      "capacity"
      "\xd3\x00\x00\x00\x00\x00\x00\x00\x05";
  const std::string credit(kCredit, sizeof(kCredit) - 1);
  auto decoded = decode<Credit>(credit);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded.value().capacity, 5u);

  auto negative_created =
      decode<Response>(mp({{"provider", "p"}, {"model", "m"}, {"created_at", -5}}));
  ASSERT_TRUE(negative_created);
  EXPECT_EQ(negative_created.value().created_at, -5);
}

TEST(Decoding, BinAcceptedForStrings) {
  auto cancel = decode<Cancel>(mp({{"job_id", json::binary({'a', 'b'})}}));
  ASSERT_TRUE(cancel) << cancel.error().message;
  EXPECT_EQ(cancel.value().job_id, "ab");
  auto error = decode<Error>(mp({{"kind", json::binary({'t', 'i', 'm', 'e', 'o', 'u', 't'})}}));
  ASSERT_TRUE(error);
  EXPECT_EQ(error.value().kind, ErrorKind::timeout);
}

TEST(Decoding, UnknownErrorKindIsUnknownNotAnError) {
  auto error = decode<Error>(mp({{"kind", "solar_flare"}, {"message", "m"}}));
  ASSERT_TRUE(error);
  EXPECT_EQ(error.value().kind, ErrorKind::unknown);
  auto rejected = decode<Rejected>(mp({{"kind", "brand_new"}}));
  ASSERT_TRUE(rejected);
  EXPECT_EQ(rejected.value().kind, ErrorKind::unknown);
}

TEST(Decoding, ImagesAcceptDataUrls) {
  auto message = decode<Message>(
      mp({{"role", "user"},
          {"images", {"data:image/png;base64,iVBORw0KGgo=", "iVBORw0KGgo=", "/9j/4AAQ"}}}));
  ASSERT_TRUE(message) << message.error().message;
  EXPECT_EQ(message.value().images,
            (std::vector<std::string>{"iVBORw0KGgo=", "iVBORw0KGgo=", "/9j/4AAQ"}));
  // URLs are the provider's to fetch: passed on unchanged. The gateway admitted them and the
  // decoder refused them (found by fuzzing: tests/fuzz/corpus/formats/crash-image-url).
  message = decode<Message>(
      mp({{"role", "user"}, {"images", {"https://example.com/cat.png", "HTTP://example.com/a"}}}));
  ASSERT_TRUE(message) << message.error().message;
  EXPECT_EQ(message.value().images,
            (std::vector<std::string>{"https://example.com/cat.png", "HTTP://example.com/a"}));
  expect_error<Request>(
      {{"provider", "p"},
       {"model", "m"},
       {"messages", {{{"role", "user"}}, {{"role", "user"}, {"images", {"ok==", "not base64!"}}}}}},
      Code::invalid_value, "messages[1].images[1]: is not base64");
  expect_error<Message>({{"role", "user"}, {"images", {"data:image/png,%89PNG"}}},
                        Code::invalid_value, "images[0]: is not base64");
  expect_error<Message>({{"role", "user"}, {"images", {""}}}, Code::invalid_value,
                        "images[0]: is not base64");
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(Errors, MissingRequiredFields) {
  const json message = {{"role", "user"}};
  expect_error<Request>({{"model", "m"}, {"messages", {message}}}, Code::missing_field,
                        "provider: required field is missing");
  expect_error<Request>({{"provider", "p"}, {"messages", {message}}}, Code::missing_field,
                        "model: required field is missing");
  expect_error<Request>({{"provider", "p"}, {"model", "m"}}, Code::missing_field,
                        "messages: required field is missing");
  expect_error<Request>(
      {{"provider", "p"}, {"model", "m"}, {"messages", {message, {{"content", "hi"}}}}},
      Code::missing_field, "messages[1].role: required field is missing");
  expect_error<Request>({{"provider", "p"},
                         {"model", "m"},
                         {"messages", {message}},
                         {"fallbacks", {{{"provider", "q"}}}}},
                        Code::missing_field, "fallbacks[0].model: required field is missing");
  expect_error<Request>({{"provider", "p"},
                         {"model", "m"},
                         {"messages", {message}},
                         {"tools", {{{"description", "d"}}}}},
                        Code::missing_field, "tools[0].name: required field is missing");
  expect_error<Response>({{"model", "m"}}, Code::missing_field,
                         "provider: required field is missing");
  expect_error<Response>(
      {{"provider", "p"}, {"model", "m"}, {"attempts", {{{"provider", "p"}, {"model", "m"}}}}},
      Code::missing_field, "attempts[0].outcome: required field is missing");
  expect_error<Error>({{"message", "m"}}, Code::missing_field, "kind: required field is missing");
  expect_error<Rejected>({{"job_id", "j"}}, Code::missing_field, "kind: required field is missing");
  expect_error<Submit>({{"job_id", "j"}}, Code::missing_field,
                       "provider: required field is missing");
  expect_error<Accepted>({{"job_id", "j"}}, Code::missing_field,
                         "broker_id: required field is missing");
  expect_error<Cancel>(json::object(), Code::missing_field, "job_id: required field is missing");
  expect_error<JobHeader>({{"job_id", "j"}}, Code::missing_field,
                          "delivery: required field is missing");
  expect_error<JobEnd>({{"delivery", 1}}, Code::missing_field, "job_id: required field is missing");
  expect_error<Chunk>({{"job_id", "j"}}, Code::missing_field, "seq: required field is missing");
  expect_error<ChunkHeader>({{"job_id", "j"}, {"seq", 0}, {"tool_calls", {{{"id", "x"}}}}},
                            Code::missing_field, "tool_calls[0].index: required field is missing");
  expect_error<StreamReset>({{"job_id", "j"}}, Code::missing_field,
                            "next_seq: required field is missing");
  expect_error<ResetHeader>({{"next_seq", 1}}, Code::missing_field,
                            "job_id: required field is missing");
  expect_error<Ready>({{"worker_id", "w"}}, Code::missing_field,
                      "capacity: required field is missing");
  expect_error<Ready>({{"capacity", 1}}, Code::missing_field,
                      "worker_id: required field is missing");
  expect_error<Ready>({{"worker_id", "w"}, {"capacity", 1}, {"jobs", {{{"job_id", "j"}}}}},
                      Code::missing_field, "jobs[0].delivery: required field is missing");
  expect_error<Ready>(
      {{"worker_id", "w"}, {"capacity", 1}, {"jobs", {{{"job_id", ""}, {"delivery", 1}}}}},
      Code::invalid_value, "jobs[0].job_id");
  expect_error<Credit>(json::object(), Code::missing_field, "capacity: required field is missing");
  expect_error<StatusReply>({{"uptime_ms", 1}}, Code::missing_field,
                            "broker_id: required field is missing");
  expect_error<StatusReply>({{"broker_id", "b"}, {"workers", {{{"host", "h"}}}}},
                            Code::missing_field, "workers[0].worker_id: required field is missing");
}

TEST(Errors, WrongTypesNameTheField) {
  const json message = {{"role", "user"}};
  const json request = {
      {"provider", "p"}, {"model", "m"}, {"messages", {message, message, message}}};
  auto with = [](json base, const std::string& key, json value) {
    base[key] = std::move(value);
    return base;
  };
  expect_error<Request>(with(request, "provider", 5), Code::wrong_type,
                        "provider: expected str, got int");
  expect_error<Request>(with(request, "messages", "hi"), Code::wrong_type,
                        "messages: expected array, got str");
  json bad_role = request;
  bad_role["messages"][2]["role"] = 7;
  expect_error<Request>(bad_role, Code::wrong_type, "messages[2].role: expected str, got int");
  json bad_image = request;
  bad_image["messages"][1]["images"] = {"aGk=", 3.5};
  expect_error<Request>(bad_image, Code::wrong_type,
                        "messages[1].images[1]: expected str, got float");
  json bad_call = request;
  bad_call["messages"][0]["tool_calls"] = {{{"id", "c"}, {"arguments", {{"city", "Paris"}}}}};
  expect_error<Request>(bad_call, Code::wrong_type,
                        "messages[0].tool_calls[0].arguments: expected str, got map");
  expect_error<Request>(with(request, "stream", 1), Code::wrong_type,
                        "stream: expected bool, got int");
  expect_error<Request>(with(request, "temperature", "hot"), Code::wrong_type,
                        "temperature: expected float, got str");
  expect_error<Request>(with(request, "max_tokens", 1.5), Code::wrong_type,
                        "max_tokens: expected int, got float");
  expect_error<Request>(with(request, "stop", "END"), Code::wrong_type,
                        "stop: expected array, got str");
  expect_error<Request>(with(request, "fallbacks", json::array({json::array({"p", "m"})})),
                        Code::wrong_type, "fallbacks[0]: expected map, got array");
  expect_error<Request>(with(request, "think", "yes"), Code::wrong_type,
                        "think: expected bool, got str");
  expect_error<Request>(with(request, "metadata", {{"batch", 7}}), Code::wrong_type,
                        "metadata.batch: expected str, got int");
  expect_error<Request>(with(request, "metadata", {1, 2}), Code::wrong_type,
                        "metadata: expected map, got array");
  expect_error<Request>(
      with(request, "tools", {{{"name", "f"}, {"parameters", nullptr}, {"description", false}}}),
      Code::wrong_type, "tools[0].description: expected str, got bool");

  expect_error<Submit>({{"job_id", "j"}, {"provider", "p"}, {"priority", "high"}}, Code::wrong_type,
                       "priority: expected int, got str");
  expect_error<Error>({{"kind", 3}}, Code::wrong_type, "kind: expected str, got int");
  expect_error<Response>({{"provider", "p"}, {"model", "m"}, {"usage", 50}}, Code::wrong_type,
                         "usage: expected map, got int");
  expect_error<Response>({{"provider", "p"}, {"model", "m"}, {"usage", {{"prompt_tokens", "1"}}}},
                         Code::wrong_type, "usage.prompt_tokens: expected int, got str");
  expect_error<Response>(
      {{"provider", "p"},
       {"model", "m"},
       {"attempts", {{{"provider", "p"}, {"model", "m"}, {"outcome", "ok"}, {"status", "429"}}}}},
      Code::wrong_type, "attempts[0].status: expected int, got str");
  expect_error<ChunkHeader>({{"job_id", "j"}, {"seq", 0}, {"delivery", true}}, Code::wrong_type,
                            "delivery: expected int, got bool");
  expect_error<StatusReply>({{"broker_id", "b"}, {"providers", {{"openai", {{"failed", -1.0}}}}}},
                            Code::wrong_type, "providers.openai.failed: expected int, got float");
  expect_error<StatusReply>({{"broker_id", "b"}, {"queue_depth", {1, "2"}}}, Code::wrong_type,
                            "queue_depth[1]: expected int, got str");
  expect_error<Ready>({{"worker_id", "w"}, {"capacity", 1}, {"providers", {{{"x", 1}}}}},
                      Code::wrong_type, "providers[0]: expected str, got map");

  auto top = decode<Cancel>(mp(json::array({1, 2})));
  ASSERT_FALSE(top);
  EXPECT_EQ(top.error().code, Code::wrong_type);
  EXPECT_EQ(top.error().message, "(message): expected map, got array");
}

TEST(Errors, InvalidValues) {
  const json message = {{"role", "user"}};
  const json request = {{"provider", "p"}, {"model", "m"}, {"messages", {message}}};
  auto with = [](json base, const std::string& key, json value) {
    base[key] = std::move(value);
    return base;
  };
  expect_error<Cancel>({{"job_id", ""}}, Code::invalid_value, "job_id: must not be empty");
  expect_error<Cancel>({{"job_id", std::string(129, 'x')}}, Code::invalid_value,
                       "job_id: is 129 bytes, limit 128");
  EXPECT_TRUE(decode<Cancel>(mp({{"job_id", std::string(128, 'x')}})));
  expect_error<Cancel>({{"job_id", json::binary({0xff, 0x41})}}, Code::invalid_value,
                       "job_id: is not valid UTF-8");
  expect_error<Submit>({{"job_id", "j"}, {"provider", "p"}, {"priority", 3}}, Code::invalid_value,
                       "priority: must be 0 (interactive)");
  expect_error<Submit>({{"job_id", "j"}, {"provider", "p"}, {"priority", -1}}, Code::invalid_value,
                       "priority: must not be negative");
  expect_error<Submit>({{"job_id", "j"}, {"provider", ""}}, Code::invalid_value,
                       "provider: must not be empty");
  expect_error<Request>(with(request, "temperature", std::nan("")), Code::invalid_value,
                        "temperature: must be a finite number");
  expect_error<Request>(with(request, "temperature", std::numeric_limits<double>::infinity()),
                        Code::invalid_value, "temperature: must be a finite number");
  expect_error<Request>(with(request, "temperature", 2.5), Code::invalid_value,
                        "temperature: must be within 0.0..2.0");
  expect_error<Request>(with(request, "temperature", -0.1), Code::invalid_value,
                        "temperature: must be within");
  expect_error<Request>(with(request, "top_p", 1.5), Code::invalid_value,
                        "top_p: must be within 0.0..1.0");
  expect_error<Request>(with(request, "max_tokens", 0), Code::invalid_value,
                        "max_tokens: must be at least 1");
  expect_error<Request>(with(request, "max_tokens", -5), Code::invalid_value,
                        "max_tokens: must not be negative");
  expect_error<Request>(with(request, "max_tokens", 4294967296LL), Code::invalid_value,
                        "max_tokens: must be at most 4294967295");
  expect_error<Request>(with(request, "timeout_ms", 0), Code::invalid_value,
                        "timeout_ms: must be at least 1");
  expect_error<Request>(with(request, "tool_choice", "sometimes"), Code::invalid_value,
                        "tool_choice: must be one of");
  expect_error<Request>(with(request, "tool_choice", "function"), Code::invalid_value,
                        "tool_choice_function: must name a function");
  expect_error<Request>(with(request, "response_format", "xml"), Code::invalid_value,
                        "response_format: must be one of");
  expect_error<Request>(with(request, "messages", json::array()), Code::invalid_value,
                        "messages: must not be empty");
  expect_error<Request>(with(request, "model", ""), Code::invalid_value,
                        "model: must not be empty");
  expect_error<Request>(with(request, "messages", {{{"role", ""}}}), Code::invalid_value,
                        "messages[0].role: must not be empty");
  expect_error<Request>(with(request, "metadata", {{"k", json::binary({0xc3, 0x28})}}),
                        Code::invalid_value, "metadata.k: is not valid UTF-8");
  expect_error<JobHeader>({{"job_id", "j"}, {"delivery", 0}}, Code::invalid_value,
                          "delivery: must be at least 1");
  expect_error<Response>(
      {{"provider", "p"},
       {"model", "m"},
       {"attempts", {{{"provider", "p"}, {"model", "m"}, {"outcome", "ok"}, {"status", 70000}}}}},
      Code::invalid_value, "attempts[0].status: must be at most 65535");
  expect_error<Chunk>({{"job_id", "j"}, {"seq", -1}}, Code::invalid_value,
                      "seq: must not be negative");
}

TEST(Errors, DuplicateKeysAreMalformed) {
  // {"job_id": "a", "job_id": "b"}: which one would a peer have meant?
  static constexpr char kTwice[] =
      "\x82\xa6job_id\xa1"
      "a\xa6job_id\xa1"
      "b";
  const std::string bytes(kTwice, sizeof(kTwice) - 1);
  auto cancel = decode<Cancel>(bytes);
  ASSERT_FALSE(cancel);
  EXPECT_EQ(cancel.error().code, Code::malformed);
  EXPECT_EQ(cancel.error().message, "job_id: duplicate key");
  // In a string map too.
  static constexpr char kMeta[] =
      "\x84\xa8provider\xa1p\xa5model\xa1m\xa8messages\x91\x81\xa4role\xa4user"
      "\xa8metadata\x82\xa1k\xa1v\xa1k\xa1w";
  const std::string meta(kMeta, sizeof(kMeta) - 1);
  auto request = decode<Request>(meta);
  ASSERT_FALSE(request);
  EXPECT_EQ(request.error().message, "metadata.k: duplicate key");
}

TEST(Errors, RejectionHelpers) {
  const Rejected v = make_rejected(DecodeError{Code::version_mismatch, "peer speaks LLMD2"});
  EXPECT_EQ(v.kind, ErrorKind::invalid_request);
  EXPECT_EQ(v.code, "version_mismatch");
  EXPECT_EQ(v.message, "peer speaks LLMD2");
  EXPECT_EQ(make_rejected(DecodeError{Code::unknown_command, "x"}).code, "unknown_command");
  const Rejected m = make_rejected(DecodeError{Code::wrong_type, "provider: expected str"}, "j");
  EXPECT_EQ(m.code, "malformed");
  EXPECT_EQ(m.job_id, "j");

  // The job id of a header that does not decode, so the rejection can name the job.
  EXPECT_EQ(extract_job_id(mp({{"job_id", "j-1"}, {"provider", 5}})), "j-1");
  EXPECT_EQ(extract_job_id(mp({{"provider", "p"}})), "");
  EXPECT_EQ(extract_job_id(mp({{"job_id", 5}})), "");
  EXPECT_EQ(extract_job_id(mp({{"job_id", std::string(200, 'x')}})), "");
  EXPECT_EQ(extract_job_id(std::string("\xdd\xff\xff\xff\xff", 5)), "");
  EXPECT_EQ(extract_job_id(""), "");
}

}  // namespace
}  // namespace dispatch::protocol
