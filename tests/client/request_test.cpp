#include "dispatch/request.hpp"

#include <gtest/gtest.h>

namespace dispatch {
namespace {

TEST(ProviderTest, BuiltInNamesFollowTheGuide) {
  EXPECT_EQ(provider_name(Provider::ollama), "ollama");
  EXPECT_EQ(provider_name(Provider::ali), "ali");
  EXPECT_EQ(provider_name(Provider::openai), "openai");
  EXPECT_EQ(provider_name(Provider::claude), "claude");
}

TEST(ProviderTest, CapitalisedSpellingsStillCompileAsTheSameValues) {
  // Code written against earlier releases gets a deprecation warning, not a break.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  EXPECT_EQ(Provider::Ollama, Provider::ollama);
  EXPECT_EQ(Provider::Ali, Provider::ali);
  EXPECT_EQ(Provider::OpenAI, Provider::openai);
  EXPECT_EQ(Provider::Claude, Provider::claude);
  EXPECT_EQ(provider_name(Provider::OpenAI), "openai");
#pragma GCC diagnostic pop
}

TEST(ParseTargetTest, SplitsOnTheFirstSlashOnly) {
  EXPECT_EQ(parse_target("openai/gpt-4o"), (Target{"openai", "gpt-4o"}));
  EXPECT_EQ(parse_target("together/meta-llama/Llama-3-8B"),
            (Target{"together", "meta-llama/Llama-3-8B"}));
  EXPECT_EQ(parse_target("ollama/llama3.2:1b"), (Target{"ollama", "llama3.2:1b"}));
}

TEST(ParseTargetTest, RejectsTextThatIsNotProviderSlashModel) {
  EXPECT_THROW(parse_target("gpt-4o"), InvalidTargetError);
  EXPECT_THROW(parse_target("/gpt-4o"), InvalidTargetError);
  EXPECT_THROW(parse_target("openai/"), InvalidTargetError);
  EXPECT_THROW(parse_target(""), InvalidTargetError);
}

TEST(ParseTargetTest, OptionalTargetTreatsAMissingModelAsNoFallback) {
  EXPECT_EQ(parse_optional_target(""), std::nullopt);
  EXPECT_EQ(parse_optional_target("openai"), std::nullopt);
  EXPECT_EQ(parse_optional_target("openai/"), std::nullopt);
  EXPECT_EQ(parse_optional_target("claude/claude-3-5-haiku"),
            (Target{"claude", "claude-3-5-haiku"}));
  EXPECT_THROW(parse_optional_target("/m"), InvalidTargetError);
}

TEST(PriorityTest, NamesRoundTrip) {
  for (auto priority : {Priority::interactive, Priority::normal, Priority::batch}) {
    EXPECT_EQ(priority_from_string(to_string(priority)), priority);
  }
  EXPECT_EQ(priority_from_string("urgent"), std::nullopt);
}

TEST(MessageTest, NamedConstructorsAndImages) {
  auto message = Message::user("Describe this").with_image("aGVsbG8=").with_image("d29ybGQ=");
  EXPECT_EQ(message.role, "user");
  EXPECT_EQ(message.content, "Describe this");
  EXPECT_EQ(message.images, (std::vector<std::string>{"aGVsbG8=", "d29ybGQ="}));
  EXPECT_EQ(Message::system("s").role, "system");
  EXPECT_EQ(Message::assistant("a").role, "assistant");
  auto tool = Message::tool("call_1", "get_weather", "{\"temp\":21}");
  EXPECT_EQ(tool.role, "tool");
  EXPECT_EQ(tool.tool_call_id, "call_1");
  EXPECT_EQ(tool.tool_name, "get_weather");
  auto assistant = Message::assistant("").with_tool_calls({{"call_1", "get_weather", "{}"}});
  ASSERT_EQ(assistant.tool_calls.size(), 1u);
  EXPECT_EQ(assistant.tool_calls[0].name, "get_weather");
}

TEST(DispatchRequestTest, GuideStyleBuilderFillsTheWireRequest) {
  auto request = DispatchRequest(Provider::ollama, "llama3.2",
                                 {Message::system("Be brief."), Message::user("Hello")})
                     .with_temperature(0.7)
                     .with_max_tokens(1000)
                     .with_top_p(0.9)
                     .with_stop({"END"})
                     .with_stream(true)
                     .with_timeout_ms(12000)
                     .with_retry_count(2)
                     .with_fallbacks({"openai/gpt-4o-mini", "claude/claude-3-5-haiku-latest"})
                     .with_priority(Priority::normal)
                     .with_metadata("custom_id", "r1")
                     .with_thinking(true)
                     .with_queue_timeout_ms(5000);
  const protocol::Request& wire = request.wire();
  EXPECT_EQ(wire.provider, "ollama");
  EXPECT_EQ(wire.model, "llama3.2");
  ASSERT_EQ(wire.messages.size(), 2u);
  EXPECT_EQ(wire.messages[0].role, "system");
  EXPECT_EQ(wire.messages[1].content, "Hello");
  EXPECT_EQ(wire.temperature, 0.7);
  EXPECT_EQ(wire.max_tokens, 1000u);
  EXPECT_EQ(wire.top_p, 0.9);
  EXPECT_EQ(wire.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(wire.stream);
  EXPECT_EQ(wire.timeout_ms, 12000u);
  EXPECT_EQ(wire.retry_count, 2u);
  ASSERT_TRUE(wire.fallbacks.has_value());
  EXPECT_EQ(*wire.fallbacks, (std::vector<Target>{{"openai", "gpt-4o-mini"},
                                                  {"claude", "claude-3-5-haiku-latest"}}));
  EXPECT_EQ(wire.metadata.at("custom_id"), "r1");
  EXPECT_EQ(wire.think, true);
  EXPECT_EQ(request.priority(), Priority::normal);
  EXPECT_EQ(request.queue_timeout_ms(), 5000u);
}

TEST(DispatchRequestTest, UnsetOptionsStayAbsentSoWorkerDefaultsApply) {
  DispatchRequest request("deepseek", "deepseek-chat", {Message::user("hi")});
  const auto& wire = request.wire();
  EXPECT_EQ(wire.provider, "deepseek");
  EXPECT_FALSE(wire.temperature.has_value());
  EXPECT_FALSE(wire.max_tokens.has_value());
  EXPECT_FALSE(wire.timeout_ms.has_value());
  EXPECT_FALSE(wire.retry_count.has_value());
  EXPECT_FALSE(wire.fallbacks.has_value());  // absent: the worker's default chain
  EXPECT_FALSE(wire.stream);
  EXPECT_EQ(request.priority(), Priority::interactive);
}

TEST(DispatchRequestTest, FallbackForms) {
  DispatchRequest request(Provider::openai, "gpt-4o", {Message::user("hi")});
  request.with_fallback(Provider::claude, "claude-3-5-sonnet").with_fallback({"ali", "qwen-plus"});
  EXPECT_EQ(*request.wire().fallbacks,
            (std::vector<Target>{{"claude", "claude-3-5-sonnet"}, {"ali", "qwen-plus"}}));

  request.with_no_fallback();
  ASSERT_TRUE(request.wire().fallbacks.has_value());
  EXPECT_TRUE(request.wire().fallbacks->empty());  // present and empty: no fallback at all

  std::vector<std::string> texts{"x/a/b"};
  request.with_fallbacks(texts);
  EXPECT_EQ(*request.wire().fallbacks, (std::vector<Target>{{"x", "a/b"}}));
  EXPECT_THROW(request.with_fallbacks({"no-slash"}), InvalidTargetError);
}

TEST(DispatchRequestTest, ToolsAndToolChoice) {
  auto request =
      DispatchRequest(Provider::openai, "gpt-4o", {Message::user("weather in Paris?")})
          .with_tools({Tool("get_weather", "Current weather",
                            R"({"type":"object","properties":{"city":{"type":"string"}}})")})
          .with_tool_choice(ToolChoice::function_named("get_weather"));
  ASSERT_EQ(request.wire().tools.size(), 1u);
  EXPECT_EQ(request.wire().tools[0].name, "get_weather");
  EXPECT_EQ(request.wire().tool_choice, "function");
  EXPECT_EQ(request.wire().tool_choice_function, "get_weather");
  request.with_tool_choice(ToolChoice::required());
  EXPECT_EQ(request.wire().tool_choice, "required");
  EXPECT_EQ(request.wire().tool_choice_function, "");
}

TEST(DispatchRequestTest, ResponseFormatAndThinkingBudget) {
  DispatchRequest request(Provider::claude, "claude-3-7-sonnet", {Message::user("hi")});
  request.with_json_schema(R"({"type":"object"})").with_thinking_budget(2048);
  EXPECT_EQ(request.wire().response_format, "json_schema");
  EXPECT_EQ(request.wire().response_schema, R"({"type":"object"})");
  EXPECT_EQ(request.wire().think, true);
  EXPECT_EQ(request.wire().thinking_budget, 2048u);
  request.with_timeout(std::chrono::seconds(3));
  EXPECT_EQ(request.wire().timeout_ms, 3000u);
}

}  // namespace
}  // namespace dispatch
