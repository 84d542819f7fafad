#include "dispatch/gateway/splice.hpp"

#include <gtest/gtest.h>

namespace dispatch::gateway {
namespace {

using Verdict = StreamSplicer::Verdict;

AnswerDelta text(std::string content) {
  return AnswerDelta{std::move(content), {}, {}};
}

DispatchResponse final_answer(std::string content) {
  DispatchResponse response;
  response.content = std::move(content);
  return response;
}

TEST(StreamSplicerTest, LiveChunksPassThrough) {
  StreamSplicer splicer;
  EXPECT_FALSE(splicer.sent_anything());
  auto step = splicer.on_chunk(text("Hel"));
  EXPECT_EQ(step.verdict, Verdict::send);
  EXPECT_EQ(step.delta.content, "Hel");
  EXPECT_TRUE(splicer.sent_anything());
  // A live stream is trusted: the final answer adds nothing.
  EXPECT_TRUE(splicer.on_final(final_answer("Hello")).delta.empty());
}

TEST(StreamSplicerTest, AResetBeforeAnythingWasSentIsInvisible) {
  StreamSplicer splicer;
  splicer.on_reset();
  auto step = splicer.on_chunk(text("Other"));
  EXPECT_EQ(step.delta.content, "Other");
  EXPECT_EQ(splicer.resets_after_send(), 0u);
  EXPECT_EQ(splicer.splices(), 0u);
}

TEST(StreamSplicerTest, ARestartThatRepeatsWhatWasSentContinuesSeamlessly) {
  StreamSplicer splicer;
  splicer.on_chunk(text("reply "));
  splicer.on_chunk(text("to: "));
  splicer.on_chunk(text("Hel"));
  splicer.on_reset();
  EXPECT_TRUE(splicer.on_chunk(text("reply ")).delta.empty());  // held: the client has it
  EXPECT_TRUE(splicer.on_chunk(text("to: ")).delta.empty());
  auto step = splicer.on_chunk(text("Hello "));  // catches up and goes past
  EXPECT_EQ(step.verdict, Verdict::send);
  EXPECT_EQ(step.delta.content, "lo ");
  EXPECT_EQ(splicer.on_chunk(text("there")).delta.content, "there");
  EXPECT_EQ(splicer.splices(), 1u);
  EXPECT_EQ(splicer.resets_after_send(), 1u);
  EXPECT_TRUE(splicer.on_final(final_answer("reply to: Hello there")).delta.empty());
}

TEST(StreamSplicerTest, ARestartThatDiffersDiverges) {
  StreamSplicer splicer;
  splicer.on_chunk(text("reply to: Hello"));
  splicer.on_reset();
  EXPECT_EQ(splicer.on_chunk(text("reply ")).verdict, Verdict::send);
  EXPECT_EQ(splicer.on_chunk(text("from: ")).verdict, Verdict::diverged);
  EXPECT_EQ(splicer.on_chunk(text("more")).verdict, Verdict::diverged);  // stays failed
  EXPECT_EQ(splicer.on_final(final_answer("reply from: x")).verdict, Verdict::diverged);
  EXPECT_EQ(splicer.splices(), 0u);
}

TEST(StreamSplicerTest, ARestartThatEndsShortOfWhatWasSentDiverges) {
  StreamSplicer splicer;
  splicer.on_chunk(text("reply to: Hello there"));
  splicer.on_reset();
  splicer.on_chunk(text("reply to:"));
  EXPECT_EQ(splicer.on_final(final_answer("reply to:")).verdict, Verdict::diverged);
}

TEST(StreamSplicerTest, TheFinalAnswerCompletesAStillReplayingStream) {
  StreamSplicer splicer;
  splicer.on_chunk(text("reply to: "));
  splicer.on_reset();
  splicer.on_chunk(text("reply"));
  auto step = splicer.on_final(final_answer("reply to: Hello"));
  EXPECT_EQ(step.verdict, Verdict::send);
  EXPECT_EQ(step.delta.content, "Hello");
  EXPECT_EQ(splicer.splices(), 1u);
}

TEST(StreamSplicerTest, AfterAGapTheFinalAnswerFillsIn) {
  StreamSplicer splicer;
  splicer.on_chunk(text("reply "));
  splicer.on_gap();
  EXPECT_TRUE(splicer.on_chunk(text("lost?")).delta.empty());  // nothing relayed after a gap
  auto step = splicer.on_final(final_answer("reply to: Hello"));
  EXPECT_EQ(step.delta.content, "to: Hello");
  StreamSplicer other;
  other.on_chunk(text("reply "));
  other.on_gap();
  EXPECT_EQ(other.on_final(final_answer("answer")).verdict, Verdict::diverged);
}

TEST(StreamSplicerTest, ToolCallsSpliceOnNameAndArgumentsNotIds) {
  StreamSplicer splicer;
  splicer.on_chunk(AnswerDelta{"", "Think.", {{0, "call_1", "lookup", "{\"q\":"}}});
  splicer.on_reset();
  // A retry's call id differs (the provider's per attempt); the client keeps the first.
  EXPECT_TRUE(
      splicer.on_chunk(AnswerDelta{"", "Think.", {{0, "call_2", "lookup", ""}}}).delta.empty());
  auto step = splicer.on_chunk(AnswerDelta{"", "", {{0, "", "", "{\"q\":1}"}}});
  ASSERT_EQ(step.delta.tool_calls.size(), 1u);
  EXPECT_EQ(step.delta.tool_calls[0].index, 0u);
  EXPECT_TRUE(step.delta.tool_calls[0].id.empty());
  EXPECT_EQ(step.delta.tool_calls[0].arguments, "1}");
  // A second call the client has not seen goes out whole.
  step = splicer.on_chunk(AnswerDelta{"", "", {{1, "call_3", "other", "{}"}}});
  ASSERT_EQ(step.delta.tool_calls.size(), 1u);
  EXPECT_EQ(step.delta.tool_calls[0].id, "call_3");

  StreamSplicer renamed;
  renamed.on_chunk(AnswerDelta{"", "", {{0, "call_1", "lookup", "{"}}});
  renamed.on_reset();
  EXPECT_EQ(renamed.on_chunk(AnswerDelta{"", "", {{0, "call_2", "search", "{"}}}).verdict,
            Verdict::diverged);
}

TEST(StreamSplicerTest, HostileToolCallIndexesAreNotTracked) {
  StreamSplicer splicer;
  auto step = splicer.on_chunk(AnswerDelta{"", "", {{4'000'000'000u, "c", "f", "{}"}}});
  EXPECT_EQ(step.verdict, Verdict::send);  // relayed, but no 4-billion-entry table behind it
}

}  // namespace
}  // namespace dispatch::gateway
