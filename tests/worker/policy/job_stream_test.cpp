// Streams: chunks, invisible retries before the first chunk, reset + restart after it, and
// truncation that is never reported as success.

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

protocol::Request stream_request(std::vector<protocol::Target> fallbacks = {}) {
  auto request = make_request("a", "m1", std::move(fallbacks));
  request.stream = true;
  return request;
}

class JobStreamTest : public ::testing::Test {
 protected:
  JobHarness h{make_config({"a", "b"}, without_breaker())};
};

TEST_F(JobStreamTest, DeltasBecomeNumberedChunks) {
  h.start_main(stream_request());
  h.launcher.delta(0, "Hel");
  h.launcher.delta(0, "");  // nothing to show: not forwarded
  h.launcher.delta(0, "lo");
  h.launcher.complete(0, ok_output("Hello"));
  ASSERT_EQ(h.listener.chunks.size(), 2u);
  EXPECT_EQ(h.listener.chunks[0].job_id, "job-1");
  EXPECT_EQ(h.listener.chunks[0].seq, 0u);
  EXPECT_EQ(h.listener.chunks[1].seq, 1u);
  EXPECT_EQ(h.listener.log,
            (std::vector<std::string>{"chunk 0 Hel", "chunk 1 lo", "result Hello"}));
}

TEST_F(JobStreamTest, ThinkingAndToolCallDeltasAreForwarded) {
  h.start_main(stream_request());
  protocol::Chunk thinking;
  thinking.thinking = "hmm";
  h.launcher.delta(0, "");
  auto* events = h.launcher.at(0).events;
  events->on_delta(thinking);
  protocol::Chunk tool;
  tool.tool_calls.push_back({0, "call_1", "get_weather", "{\"ci"});
  events->on_delta(tool);
  ASSERT_EQ(h.listener.chunks.size(), 2u);
  EXPECT_EQ(h.listener.chunks[0].thinking, "hmm");
  EXPECT_EQ(h.listener.chunks[1].tool_calls.at(0).name, "get_weather");
  EXPECT_EQ(h.listener.chunks[1].seq, 1u);
}

TEST_F(JobStreamTest, NonStreamingRequestsGetNoChunks) {
  auto request = stream_request();
  request.stream = false;
  h.start_main(request);
  h.launcher.delta(0, "Hel");
  h.launcher.delta(0, "lo");
  h.launcher.complete(0, ok_output("Hello"));
  EXPECT_TRUE(h.listener.chunks.empty());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->content, "Hello");
}

// The job header decides (send_chunks), not the request's own stream flag: a client that
// submits stream=true with a request saying false gets chunks, and the reverse gets none.
TEST_F(JobStreamTest, SendChunksDecidesNotTheRequestsStreamFlag) {
  auto run = [&](bool send_chunks, bool request_stream) {
    JobHarness harness{make_config({"a"}, without_breaker())};
    auto request = make_request("a", "m1");
    request.stream = request_stream;
    auto runner = start_job(JobContext{harness.scheduler, harness.launcher, harness.breakers,
                                       harness.random, harness.config},
                            "job-1", std::move(request), send_chunks, harness.listener);
    harness.scheduler.run_due();
    harness.launcher.delta(0, "Hel");
    harness.launcher.complete(0, ok_output("Hel"));
    EXPECT_TRUE(harness.listener.result);
    return harness.listener.chunks.size();
  };
  EXPECT_EQ(run(/*send_chunks=*/true, /*request_stream=*/false), 1u);
  EXPECT_EQ(run(/*send_chunks=*/false, /*request_stream=*/true), 0u);
}

TEST_F(JobStreamTest, FailureBeforeTheFirstChunkIsRetriedInvisibly) {
  h.start_main(stream_request());
  h.launcher.activity(0);
  h.launcher.fail(0, failure(ErrorKind::overloaded, 529));
  h.scheduler.advance_by(100ms);
  ASSERT_EQ(h.launcher.count(), 2u);
  h.launcher.delta(1, "fresh");
  h.launcher.complete(1, ok_output("fresh"));
  EXPECT_TRUE(h.listener.resets.empty());
  EXPECT_EQ(h.listener.log, (std::vector<std::string>{"chunk 0 fresh", "result fresh"}));
}

TEST_F(JobStreamTest, FailureAfterChunksResetsAndRestartsOnTheFallback) {
  const auto request = stream_request({t("b", "m2")});
  h.start_main(request);
  h.launcher.delta(0, "The answ");
  h.launcher.delta(0, "er is");
  h.launcher.fail(0, failure(ErrorKind::network, 0, "", "connection reset by peer"));
  ASSERT_EQ(h.launcher.count(), 2u);  // at once: another target, no backoff
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  // The restart gets the original request, not the partial answer as an assistant prefill.
  EXPECT_EQ(h.launcher.at(1).request, request);
  EXPECT_EQ(h.launcher.at(1).request.messages.size(), 1u);
  h.launcher.delta(1, "42");
  h.launcher.complete(1, ok_output("42"));

  EXPECT_EQ(h.listener.log, (std::vector<std::string>{"chunk 0 The answ", "chunk 1 er is",
                                                      "reset 2", "chunk 2 42", "result 42"}));
  ASSERT_EQ(h.listener.resets.size(), 1u);
  EXPECT_EQ(h.listener.resets[0].job_id, "job-1");
  EXPECT_EQ(h.listener.resets[0].reason, "fallback to b/m2: network");
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->content, "42");
  EXPECT_EQ(h.listener.result->provider, "b");
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 1u);  // the broken route was not retried first
}

TEST_F(JobStreamTest, MidStreamFailureWithoutFallbackRestartsTheSameTarget) {
  h.start_main(stream_request());
  h.launcher.delta(0, "par");
  h.launcher.fail(0, failure(ErrorKind::server_error, 500));
  ASSERT_EQ(h.listener.resets.size(), 1u);  // the client knows at once that "par" is void
  EXPECT_EQ(h.listener.resets[0].reason, "retry of a/m1 after server_error");
  h.scheduler.advance_by(100ms);
  ASSERT_EQ(h.launcher.count(), 2u);
  h.launcher.delta(1, "full");
  h.launcher.complete(1, ok_output("full"));
  EXPECT_EQ(h.listener.log,
            (std::vector<std::string>{"chunk 0 par", "reset 1", "chunk 1 full", "result full"}));
}

TEST_F(JobStreamTest, RestartedAttemptFailingBeforeItsFirstChunkNeedsNoSecondReset) {
  h.start_main(stream_request({t("b", "m2")}));
  h.launcher.delta(0, "x");
  h.launcher.fail(0, failure(ErrorKind::network));
  h.launcher.fail(1, failure(ErrorKind::network));  // nothing shown since the reset
  h.scheduler.advance_by(100ms);
  ASSERT_EQ(h.launcher.count(), 3u);
  EXPECT_EQ(h.launcher.at(2).spec.target, t("b", "m2"));
  h.launcher.delta(2, "y");
  h.launcher.complete(2, ok_output("y"));
  EXPECT_EQ(h.listener.log,
            (std::vector<std::string>{"chunk 0 x", "reset 1", "chunk 1 y", "result y"}));
}

TEST_F(JobStreamTest, MidStreamFailureWithNothingLeftIsAClearError) {
  auto request = stream_request();
  request.retry_count = 0;
  h.start_main(request);
  h.launcher.delta(0, "half an ans");
  h.launcher.fail(0, failure(ErrorKind::network, 0, "", "connection reset"));
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::network);
  EXPECT_TRUE(h.listener.resets.empty());
  EXPECT_FALSE(h.listener.result);
}

TEST_F(JobStreamTest, MissingTerminatorIsAStreamInterruptionAndFailsOver) {
  h.start_main(stream_request({t("b", "m2")}));
  h.launcher.delta(0, "trunc");
  AttemptOutput truncated = ok_output("trunc");
  truncated.finish_reason.clear();
  truncated.saw_terminator = false;
  h.launcher.complete(0, truncated);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_FALSE(h.listener.ended());
  h.launcher.delta(1, "whole");
  h.launcher.complete(1, ok_output("whole"));
  ASSERT_TRUE(h.listener.result);
  const auto& first = h.listener.result->attempts.at(0);
  EXPECT_EQ(first.outcome, "stream_interrupted");
  EXPECT_EQ(first.code, "missing_terminator");
  EXPECT_EQ(h.listener.log, (std::vector<std::string>{"chunk 0 trunc", "reset 1", "chunk 1 whole",
                                                      "result whole"}));
}

TEST_F(JobStreamTest, TruncationIsNeverASuccess) {
  for (bool stream : {true, false}) {
    JobHarness hh(make_config({"a"}, without_breaker()));
    auto request = make_request("a", "m1");
    request.stream = stream;
    hh.start_main(request);
    for (int i = 0; i < 10 && !hh.listener.ended(); ++i) {
      const std::size_t last = hh.launcher.count() - 1;
      hh.launcher.delta(last, "trunc");
      AttemptOutput truncated = ok_output("trunc");
      truncated.finish_reason.clear();
      truncated.saw_terminator = false;
      hh.launcher.complete(last, truncated);
      hh.scheduler.advance_by(1s);
    }
    EXPECT_FALSE(hh.listener.result) << "stream " << stream;
    ASSERT_TRUE(hh.listener.has_error());
    EXPECT_EQ(hh.listener.error().kind, ErrorKind::stream_interrupted);
    EXPECT_EQ(hh.listener.error().code, "missing_terminator");
    EXPECT_EQ(hh.launcher.count(), 3u);  // 1 + 2 retries: an interruption is worth retrying
  }
}

TEST_F(JobStreamTest, FinishWithoutTerminatorIsFinalisedWithANote) {
  h.start_main(stream_request());
  h.launcher.delta(0, "done");
  AttemptOutput output = ok_output("done");
  output.saw_terminator = false;  // finish_reason "stop" arrived, [DONE] did not
  output.notes = {"temperature clamped to 1.0"};
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->attempts.at(0).note,
            "temperature clamped to 1.0; stream ended without terminator");
}

TEST_F(JobStreamTest, TerminatorWithoutFinishReasonIsASuccess) {
  h.start_main(stream_request());
  AttemptOutput output = ok_output("ok");
  output.finish_reason.clear();
  h.launcher.complete(0, output);
  EXPECT_TRUE(h.listener.result);
}

TEST_F(JobStreamTest, StreamErrorEventAfterChunksFailsOver) {
  h.start_main(stream_request({t("b", "m2")}));
  h.launcher.delta(0, "so far");
  h.launcher.fail(0, failure(ErrorKind::overloaded, 0, "overloaded_error", "Overloaded"));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_EQ(h.listener.resets.size(), 1u);
}

TEST_F(JobStreamTest, IdleStallAfterChunksFailsOverWithAReset) {
  h.start_main(stream_request({t("b", "m2")}));
  h.launcher.delta(0, "so far");
  h.scheduler.advance_by(500ms);
  EXPECT_TRUE(h.launcher.at(0).aborted);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  ASSERT_EQ(h.listener.resets.size(), 1u);
  EXPECT_EQ(h.listener.resets[0].next_seq, 1u);
  EXPECT_EQ(h.listener.resets[0].reason, "fallback to b/m2: timeout");
}

TEST_F(JobStreamTest, IdleStallWithoutFallbackIsNotRetried) {
  h.start_main(stream_request());
  h.launcher.delta(0, "so far");
  h.scheduler.advance_by(500ms);
  h.scheduler.advance_by(5s);
  EXPECT_EQ(h.launcher.count(), 1u);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().code, "idle_timeout");
  EXPECT_TRUE(h.listener.resets.empty());
}

TEST_F(JobStreamTest, SkippedEventsOfTheAnsweringAttemptAreCounted) {
  h.start_main(stream_request());
  auto output = ok_output();
  output.skipped_events = 3;
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->skipped_events, 3u);
}

}  // namespace
}  // namespace dispatch::worker::test
