// estimate_request_body_bytes is an upper bound of every adapter's body, and close to it for
// text; check_request_body_size refuses by it, before anything is built.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "dispatch/protocol/codec.hpp"
#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

const char* const kTypes[] = {"openai", "openai-compatible", "anthropic", "ollama", "dashscope"};

// Requests of every element the adapters write, with text that needs escaping, in shapes that
// most adapters accept (the rest fail, which is fine: only built bodies are compared).
class RequestGenerator {
 public:
  explicit RequestGenerator(uint32_t seed) : random_(seed) {}

  protocol::Request next() {
    protocol::Request request;
    request.provider = "p";
    request.model = text();
    const std::string roles[] = {"system", "user", "assistant", "tool", "developer"};
    for (int i = pick(8) + 1; i > 0; --i) {
      protocol::Message m;
      m.role = roles[pick(5)];
      m.content = text();
      if (m.role == "assistant") add_calls(m);
      if (m.role == "assistant" && pick(3) == 0) m.thinking = text();
      if (m.role == "user" && pick(3) == 0) m.images.push_back(kPng);
      if (m.role == "tool") {
        m.tool_call_id = pick(2) == 0 ? std::string() : text();
        m.tool_name = pick(2) == 0 ? std::string() : text();
      }
      request.messages.push_back(std::move(m));
    }
    request.messages.front().role = "user";
    add_options(request);
    return request;
  }

 private:
  // A 1x1 PNG.
  static constexpr const char* kPng =
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+"
      "M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

  int pick(int n) { return static_cast<int>(random_() % static_cast<uint32_t>(n)); }

  std::string text() {
    static const char* const kPieces[] = {"a",        "word ", "\"", "\\",     "\n", "\x01",
                                          "\xC3\xA9", "\xFF",  "{}", "call_1", "f"};
    std::string out;
    for (int i = pick(6); i > 0; --i) out += kPieces[pick(11)];
    return out;
  }

  void add_calls(protocol::Message& m) {
    for (int c = pick(3); c > 0; --c) {
      protocol::ToolCall call{pick(4) == 0 ? std::string() : "call_" + text(), text(), ""};
      if (pick(2) == 0) call.arguments = R"({"city": "Paris", "n": [1, 2]})";
      m.tool_calls.push_back(std::move(call));
    }
  }

  void add_options(protocol::Request& request) {
    if (pick(2) == 0) request.temperature = 0.25 * pick(9);
    if (pick(2) == 0) request.top_p = 0.9;
    if (pick(2) == 0) request.max_tokens = static_cast<uint32_t>(pick(5000) + 1);
    for (int s = pick(4); s > 0; --s) request.stop.push_back(text());
    for (int t = pick(3); t > 0; --t) {
      request.tools.push_back({"tool" + std::to_string(t), text(),
                               pick(2) == 0 ? std::string() : R"({"type":"object"})"});
    }
    const std::string choices[] = {"", "auto", "none", "required", "function"};
    request.tool_choice = choices[pick(5)];
    if (request.tool_choice == "function") request.tool_choice_function = "tool1";
    const std::string formats[] = {"", "text", "json_object", "json_schema"};
    request.response_format = formats[pick(4)];
    if (request.response_format == "json_schema") request.response_schema = R"({"type":"object"})";
    if (pick(2) == 0) request.think = pick(2) == 0;
    if (pick(2) == 0) request.thinking_budget = static_cast<uint32_t>(pick(4000) + 1);
  }

  std::mt19937 random_;
};

TEST(BodyEstimate, IsAnUpperBoundOfEveryAdaptersBody) {
  RequestGenerator generate(20261130);
  int built_bodies = 0;
  for (int round = 0; round < 3000; ++round) {
    const protocol::Request request = generate.next();
    const std::size_t estimate = estimate_request_body_bytes(request);
    for (const char* type : kTypes) {
      const ProviderConfig provider = make_provider(type);
      for (const std::string& model : {request.model, std::string(256, 'm')}) {
        auto built = adapter(type).build(request, model, round % 2 == 0, provider);
        if (!built) continue;
        ++built_bodies;
        ASSERT_LE(built->http.body.size(), estimate)
            << type << " round " << round << ": " << built->http.body;
      }
    }
  }
  EXPECT_GT(built_bodies, 5000);  // most generated requests are expressible
}

TEST(BodyEstimate, IsCloseForText) {
  protocol::Request request;
  request.messages.push_back({"user", std::string(1u << 20, 'x'), "", {}, {}, "", ""});
  const std::size_t estimate = estimate_request_body_bytes(request);
  auto built = adapter("openai").build(request, "gpt-x", true, make_provider("openai"));
  ASSERT_TRUE(built.ok());
  EXPECT_LE(estimate, built->http.body.size() + 2048);
}

TEST(BodyEstimate, CheckRefusesOverMaxRequestBytes) {
  protocol::Request request;
  request.messages.push_back({"user", std::string(100'000, 'x'), "", {}, {}, "", ""});
  const std::size_t payload = protocol::encode(request).size();
  EXPECT_TRUE(check_request_body_size(request, payload, 1u << 20).ok());
  auto refused = check_request_body_size(request, payload, 50'000);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, protocol::ErrorKind::invalid_request);
  EXPECT_EQ(refused.error().code, "request_too_large");
  EXPECT_THAT(refused.error().message,
              ::testing::HasSubstr("over worker.max_request_bytes (50000)"));
}

TEST(BodyEstimate, CheckRefusesWhatWouldHoldOverTenTimesThePayload) {
  protocol::Request request;
  request.messages.push_back({"user", "hi", "", {}, {}, "", ""});
  protocol::Message calls{"assistant", "", "", {}, {}, "", ""};
  calls.tool_calls.resize(100'000);  // one byte each on the wire, ~80 in any body
  request.messages.push_back(std::move(calls));
  const std::size_t payload = protocol::encode(request).size();
  auto refused = check_request_body_size(request, payload, 32u << 20);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, "request_too_large");
  EXPECT_THAT(refused.error().message, ::testing::HasSubstr("over 10x its size"));
}

}  // namespace
}  // namespace dispatch::worker::test
