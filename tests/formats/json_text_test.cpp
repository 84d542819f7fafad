#include "dispatch/formats/json_text.hpp"

#include <gtest/gtest.h>

#include "dispatch/formats/http_errors.hpp"

namespace dispatch::formats {
namespace {

std::string nested(std::size_t depth, const std::string& key = "tools") {
  return "{\"model\":\"m\",\"" + key + "\":" + std::string(depth, '[') + std::string(depth, ']') +
         "}";
}

TEST(ParseJsonBodyTest, ParsesOrdinaryBodies) {
  auto body = parse_json_body(R"({"model":"openai/gpt-4o","messages":[{"role":"user"}]})");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["model"], "openai/gpt-4o");
}

TEST(ParseJsonBodyTest, DeepNestingIsRefusedNamingTheTopLevelField) {
  ASSERT_TRUE(parse_json_body(nested(60)).ok());
  auto deep = parse_json_body(nested(100'000));
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.error().status, 400);
  EXPECT_EQ(deep.error().param, "tools");
  EXPECT_EQ(deep.error().code, "too_deep");
  EXPECT_EQ(deep.error().message, "tools nests deeper than 64 levels");
  // Brackets inside strings are text, not nesting; escaped quotes do not end a string.
  const std::string quoted = R"({"a":"[[[[[[\"[[[[[[[[","b":1})";
  EXPECT_TRUE(parse_json_body(quoted, JsonLimits{3, 100}).ok());
  auto bare = parse_json_body(std::string(100, '['));
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.error().param, "");
  EXPECT_EQ(bare.error().message, "request body nests deeper than 64 levels");
}

TEST(ParseJsonBodyTest, TooManyValuesAreRefusedBeforeTheDomIsBuilt) {
  std::string body = R"({"model":"m","messages":[)";
  for (int i = 0; i < 300'000; ++i) body += "{},";
  body += "{}]}";
  auto refused = parse_json_body(body);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().param, "messages");
  EXPECT_EQ(refused.error().code, "too_large");
}

TEST(ParseJsonBodyTest, NotJson) {
  for (const char* text : {"", "{", "{\"a\":}", "nul", "{\"a\":1}x", "1e99999"}) {
    auto refused = parse_json_body(text);
    ASSERT_FALSE(refused.ok()) << text;
    EXPECT_EQ(refused.error().code, "invalid_json") << text;
    EXPECT_EQ(refused.error().message.rfind("invalid JSON: ", 0), 0u) << refused.error().message;
  }
}

TEST(AppendJsonStringTest, EscapesAndRepairsUtf8) {
  std::string out;
  append_json_string(out, "a\"b\\c\nd\te\x01 caf\xc3\xa9");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\nd\\te\\u0001 caf\xc3\xa9\"");
  EXPECT_EQ(json::parse(out), "a\"b\\c\nd\te\x01 caf\xc3\xa9");
  out.clear();
  append_json_string(out, "bad \xff byte");
  EXPECT_EQ(json::parse(out), "bad \xef\xbf\xbd byte");
}

protocol::Error wire_error(protocol::ErrorKind kind, std::string code = {}) {
  protocol::Error error;
  error.kind = kind;
  error.code = std::move(code);
  error.message = "it failed";
  return error;
}

TEST(HttpErrorsTest, StatusOfEveryKind) {
  using K = protocol::ErrorKind;
  const std::pair<protocol::Error, int> cases[] = {
      {wire_error(K::invalid_request), 400},
      {wire_error(K::context_length_exceeded), 400},
      {wire_error(K::content_filtered), 400},
      {wire_error(K::model_not_available), 404},
      {wire_error(K::rate_limited), 429},
      {wire_error(K::queue_full, "queue_full"), 429},
      {wire_error(K::queue_full, "draining"), 503},
      {wire_error(K::unsupported_provider, "queue_deadline"), 503},
      {wire_error(K::overloaded, "circuit_open"), 503},
      {wire_error(K::network, "broker_unreachable"), 503},
      {wire_error(K::network, "curl_7"), 502},
      {wire_error(K::authentication), 502},
      {wire_error(K::server_error), 502},
      {wire_error(K::stream_interrupted), 502},
      {wire_error(K::timeout, "deadline"), 504},
      {wire_error(K::internal), 500},
      {wire_error(K::unknown), 500},
  };
  for (const auto& [error, status] : cases) {
    const HttpError http = http_error_from(error);
    EXPECT_EQ(http.status, status) << protocol::to_string(error.kind) << "/" << error.code;
    EXPECT_EQ(http.retry_after_s > 0, status == 429 || status == 503);
  }
}

TEST(HttpErrorsTest, BodiesInBothFormats) {
  protocol::Error error = wire_error(protocol::ErrorKind::model_not_available, "model_not_found");
  error.provider = "openai";
  error.model = "nope";
  const HttpError http = http_error_from(error);
  const json openai = json::parse(R"json({"error":{"message":"it failed (openai/nope)",
      "type":"not_found_error","param":null,"code":"model_not_found"}})json");
  EXPECT_EQ(json::parse(openai_error_body(http)), openai);
  const json anthropic = json::parse(R"json({"type":"error","error":{"type":"not_found_error",
      "message":"it failed (openai/nope)"},"request_id":"req-1"})json");
  EXPECT_EQ(json::parse(anthropic_error_body(http, "req-1")), anthropic);
  EXPECT_EQ(openai_error_event(http), "data: " + openai_error_body(http) + "\n\n");
  EXPECT_EQ(anthropic_error_event(http, ""),
            "event: error\ndata: " + anthropic_error_body(http, "") + "\n\n");
  const HttpError field = http_error_from(invalid_field("messages[0].role", "must be a string"));
  EXPECT_EQ(json::parse(openai_error_body(field))["error"]["param"], "messages[0].role");
  EXPECT_EQ(anthropic_error_type(413), "request_too_large");
  EXPECT_EQ(anthropic_error_type(503), "overloaded_error");
  const HttpError overloaded = http_error_from(wire_error(protocol::ErrorKind::overloaded));
  EXPECT_EQ(overloaded.status, 503);
  EXPECT_EQ(overloaded.status_for_anthropic(), 529);  // Anthropic's OverloadedError
  EXPECT_EQ(json::parse(anthropic_error_body(overloaded, ""))["error"]["type"], "overloaded_error");
  EXPECT_EQ(http_error_from(wire_error(protocol::ErrorKind::timeout)).status_for_anthropic(), 504);
  EXPECT_EQ(openai_error_type(401), "authentication_error");
  EXPECT_EQ(status_reason(431), "Request Header Fields Too Large");
}

}  // namespace
}  // namespace dispatch::formats
