// Unit tests of the format-independent reply plan.

#include "dispatch/fake_provider/reply.hpp"

#include <gtest/gtest.h>

namespace dispatch::fake_provider {
namespace {

using nlohmann::json;

ChatRequest request_for(const std::string& text) {
  ChatRequest request;
  request.last_user_text = text;
  request.prompt_tokens = count_words(text);
  return request;
}

TEST(ReplyPlan, RepliesWithPromptWordsThenFiller) {
  const ReplyPlan plan = plan_reply(request_for("hello   world"), 8);
  EXPECT_EQ(plan.text(), "reply to: hello world lorem ipsum dolor sit");
  ASSERT_EQ(plan.text_chunks.size(), 8u);
  EXPECT_EQ(plan.text_chunks.front(), "reply ");
  EXPECT_EQ(plan.text_chunks.back(), "sit");
  EXPECT_EQ(plan.finish, Finish::stop);
  EXPECT_EQ(plan.prompt_tokens, 2);
  EXPECT_EQ(plan.completion_tokens, 8);
}

TEST(ReplyPlan, LongPromptIsCutAtTheTokenCount) {
  const ReplyPlan plan = plan_reply(request_for("a b c d e f g h i j"), 4);
  EXPECT_EQ(plan.text(), "reply to: a b");
  EXPECT_EQ(plan.finish, Finish::stop);
}

TEST(ReplyPlan, ImagesComeFirst) {
  ChatRequest request = request_for("look");
  request.image_count = 2;
  EXPECT_EQ(plan_reply(request, 5).text(), "[2 images] reply to: look");
}

TEST(ReplyPlan, MaxTokensBelowTheCountFinishesWithLength) {
  ChatRequest request = request_for("x");
  request.max_tokens = 3;
  const ReplyPlan plan = plan_reply(request, 8);
  EXPECT_EQ(plan.text(), "reply to: x");
  EXPECT_EQ(plan.finish, Finish::length);
  EXPECT_EQ(plan.completion_tokens, 3);
  request.max_tokens = 8;
  EXPECT_EQ(plan_reply(request, 8).finish, Finish::stop);
}

TEST(ReplyPlan, StopSequenceCutsBeforeItself) {
  ChatRequest request = request_for("alpha beta gamma");
  request.stop = {"zzz", "beta"};
  const ReplyPlan plan = plan_reply(request, 8);
  EXPECT_EQ(plan.text(), "reply to: alpha ");
  EXPECT_EQ(plan.finish, Finish::stop_sequence);
  EXPECT_EQ(plan.stop_sequence, "beta");
  EXPECT_EQ(plan.completion_tokens, 3);
}

TEST(ReplyPlan, StopInsideAWordKeepsThePrefix) {
  ChatRequest request = request_for("abcdef");
  request.stop = {"cd"};
  const ReplyPlan plan = plan_reply(request, 8);
  EXPECT_EQ(plan.text(), "reply to: ab");
  EXPECT_EQ(plan.text_chunks.back(), "ab");
}

TEST(ReplyPlan, ToolResultIsEchoed) {
  ChatRequest request = request_for("what is the weather");
  request.last_is_tool_result = true;
  request.tool_result_text = "sunny 21C";
  request.tools = {ToolSpec{"get_weather", json::object()}};
  const ReplyPlan plan = plan_reply(request, 5);
  EXPECT_FALSE(plan.tool_call);
  EXPECT_EQ(plan.text(), "tool result: sunny 21C lorem");
}

TEST(ReplyPlan, ToolNamedInThePromptIsCalled) {
  ChatRequest request = request_for("please get_time now");
  request.tools = {ToolSpec{"get_weather", json::object()},
                   ToolSpec{"get_time", json{{"properties", {{"zone", {{"type", "string"}}}}}}}};
  const ReplyPlan plan = plan_reply(request, 8);
  ASSERT_TRUE(plan.tool_call);
  EXPECT_EQ(plan.tool_call->name, "get_time");
  EXPECT_EQ(plan.tool_call->arguments, (json{{"zone", "fake-zone"}}));
  EXPECT_EQ(plan.finish, Finish::tool_calls);
  EXPECT_TRUE(plan.text_chunks.empty());
}

TEST(ReplyPlan, WordToolPicksTheFirstTool) {
  ChatRequest request = request_for("Use a Tool, please.");
  request.tools = {ToolSpec{"first", json()}, ToolSpec{"second", json()}};
  const ReplyPlan plan = plan_reply(request, 8);
  ASSERT_TRUE(plan.tool_call);
  EXPECT_EQ(plan.tool_call->name, "first");
  EXPECT_EQ(plan.tool_call->arguments_json, "{}");
}

TEST(ReplyPlan, ToolChoiceDecides) {
  ChatRequest request = request_for("no mention here");
  request.tools = {ToolSpec{"a", json()}, ToolSpec{"b", json()}};
  EXPECT_FALSE(plan_reply(request, 4).tool_call);
  request.tool_choice = ToolChoice::required;
  EXPECT_EQ(plan_reply(request, 4).tool_call->name, "a");
  request.forced_tool = "b";
  EXPECT_EQ(plan_reply(request, 4).tool_call->name, "b");
  ChatRequest none = request_for("use the tool");
  none.tools = request.tools;
  none.tool_choice = ToolChoice::none;
  EXPECT_FALSE(plan_reply(none, 4).tool_call);
}

TEST(ReplyPlan, ArgumentsFollowTheSchemaTypes) {
  const json schema{{"type", "object"},
                    {"properties",
                     {{"city", {{"type", "string"}}},
                      {"days", {{"type", "integer"}}},
                      {"ratio", {{"type", "number"}}},
                      {"metric", {{"type", "boolean"}}},
                      {"tags", {{"type", "array"}}},
                      {"maybe", {{"type", json::array({"null", "string"})}}}}}};
  EXPECT_EQ(fake_arguments(schema), (json{{"city", "fake-city"},
                                          {"days", 1},
                                          {"ratio", 1},
                                          {"metric", true},
                                          {"tags", nullptr},
                                          {"maybe", "fake-maybe"}}));
}

TEST(ReplyPlan, ArgumentFragmentsConcatenateToTheJson) {
  ChatRequest request = request_for("tool");
  request.tools = {ToolSpec{"t", json{{"properties", {{"ünïcode", {{"type", "string"}}}}}}}};
  const ReplyPlan plan = plan_reply(request, 8);
  ASSERT_TRUE(plan.tool_call);
  ASSERT_GE(plan.tool_call->fragments.size(), 2u);
  std::string joined;
  for (const auto& f : plan.tool_call->fragments) {
    joined += f;
    // Every fragment must serialise on its own (valid UTF-8).
    EXPECT_NO_THROW(json(f).dump());
  }
  EXPECT_EQ(joined, plan.tool_call->arguments_json);
  EXPECT_EQ(plan.completion_tokens, static_cast<int64_t>(plan.tool_call->fragments.size()));
}

TEST(ReplyPlan, ThinkingIsSeparateAndNotCounted) {
  ChatRequest request = request_for("hi");
  request.thinking = true;
  const ReplyPlan plan = plan_reply(request, 3);
  EXPECT_EQ(plan.thinking(), std::string(kThinkingText));
  EXPECT_EQ(plan.completion_tokens, 3);
}

TEST(ReplyPlan, ZeroTokensIsAnEmptyReply) {
  const ReplyPlan plan = plan_reply(request_for("hi"), 0);
  EXPECT_TRUE(plan.text_chunks.empty());
  EXPECT_EQ(plan.finish, Finish::stop);
}

TEST(Words, SplitOnAnyAsciiWhitespace) {
  EXPECT_EQ(split_words(" a\tb\nc  "), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(count_words(" a\tb\nc  "), 3);
  EXPECT_EQ(count_words(""), 0);
}

}  // namespace
}  // namespace dispatch::fake_provider
