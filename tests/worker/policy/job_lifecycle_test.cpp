// cancel(), destruction mid-job, and listeners that re-enter the job.

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

class JobLifecycleTest : public ::testing::Test {
 protected:
  JobHarness h{make_config({"a", "b"}, without_breaker())};
};

TEST_F(JobLifecycleTest, NothingHappensInsideStartJob) {
  RecordingListener listener;
  auto runner = start_job(JobContext{h.scheduler, h.launcher, h.breakers, h.random, h.config},
                          "job-1", make_request("zz", "m"), /*send_chunks=*/false, listener);
  EXPECT_FALSE(listener.ended());  // even a job that fails at once waits for the loop
  EXPECT_EQ(h.launcher.count(), 0u);
  h.scheduler.run_due();
  ASSERT_TRUE(listener.has_error());
  EXPECT_EQ(listener.error().kind, ErrorKind::unsupported_provider);
}

TEST_F(JobLifecycleTest, CancelDuringAnAttempt) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.scheduler.advance_by(300ms);
  h.runner->cancel();
  EXPECT_TRUE(h.launcher.at(0).aborted);
  ASSERT_TRUE(h.listener.has_error());
  const auto& error = h.listener.error();
  EXPECT_EQ(error.kind, ErrorKind::cancelled);
  ASSERT_EQ(error.attempts.size(), 1u);
  EXPECT_EQ(error.attempts[0].outcome, "cancelled");
  EXPECT_EQ(error.attempts[0].duration_ms, 300u);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  h.scheduler.advance_by(60s);
  EXPECT_EQ(h.launcher.count(), 1u);
  h.runner->cancel();  // no-op once ended
  EXPECT_EQ(h.listener.ends, 1);
}

TEST_F(JobLifecycleTest, CancelDuringBackoff) {
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, failure(ErrorKind::server_error, 500));
  EXPECT_EQ(h.scheduler.pending_timers(), 2u);  // the backoff and the deadline
  h.runner->cancel();
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::cancelled);
  EXPECT_EQ(h.listener.error().attempts.size(), 1u);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  h.scheduler.advance_by(60s);
  EXPECT_EQ(h.launcher.count(), 1u);
}

TEST_F(JobLifecycleTest, CancelAfterTheEndIsANoOp) {
  h.start_main(make_request("a", "m1"));
  h.launcher.complete(0, ok_output());
  h.runner->cancel();
  EXPECT_EQ(h.listener.ends, 1);
  EXPECT_TRUE(h.listener.result);
}

TEST_F(JobLifecycleTest, CancelBeforeTheFirstTurn) {
  RecordingListener listener;
  auto runner = start_job(JobContext{h.scheduler, h.launcher, h.breakers, h.random, h.config},
                          "job-1", make_request("a", "m1"), /*send_chunks=*/false, listener);
  runner->cancel();
  ASSERT_TRUE(listener.has_error());
  EXPECT_EQ(listener.error().kind, ErrorKind::cancelled);
  h.scheduler.advance_by(60s);
  EXPECT_EQ(h.launcher.count(), 0u);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobLifecycleTest, DestroyingARunningJobAbortsItSilently) {
  h.start_main(make_request("a", "m1"));
  h.launcher.delta(0, "x");
  h.runner.reset();
  EXPECT_TRUE(h.launcher.at(0).aborted);
  EXPECT_FALSE(h.listener.ended());
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  h.scheduler.advance_by(60s);
  EXPECT_EQ(h.launcher.count(), 1u);
  EXPECT_FALSE(h.listener.ended());
}

TEST_F(JobLifecycleTest, DestroyingAJobDuringBackoff) {
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, failure(ErrorKind::network));
  h.runner.reset();
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  h.scheduler.advance_by(60s);
  EXPECT_EQ(h.launcher.count(), 1u);
  EXPECT_FALSE(h.listener.ended());
}

TEST_F(JobLifecycleTest, EventsToAStaleObserverAreIgnored) {
  // A launcher that (wrongly) reports after abort must not disturb the job.
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.scheduler.advance_by(1000ms);  // first-token timeout: a aborted, b launched
  ASSERT_EQ(h.launcher.count(), 2u);
  auto* stale = h.launcher.at(0).events;
  stale->on_delta(protocol::Chunk{"", 0, "late", "", {}});
  stale->on_complete(ok_output("late"));
  EXPECT_FALSE(h.listener.ended());
  h.launcher.complete(1, ok_output("fresh"));
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->content, "fresh");
}

TEST_F(JobLifecycleTest, ListenerMayCancelFromInsideOnChunk) {
  auto request = make_request("a", "m1");
  request.stream = true;
  h.listener.on_chunk_hook = [&](const protocol::Chunk&) { h.runner->cancel(); };
  h.start_main(request);
  h.launcher.delta(0, "one");
  EXPECT_TRUE(h.launcher.at(0).aborted);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::cancelled);
  EXPECT_EQ(h.listener.log, (std::vector<std::string>{"chunk 0 one", "error cancelled"}));
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobLifecycleTest, ListenerMayDropTheJobFromInsideOnChunk) {
  auto request = make_request("a", "m1");
  request.stream = true;
  h.listener.on_chunk_hook = [&](const protocol::Chunk&) { h.runner.reset(); };
  h.start_main(request);
  h.launcher.delta(0, "one");
  EXPECT_FALSE(h.runner);
  EXPECT_TRUE(h.launcher.at(0).aborted);
  EXPECT_FALSE(h.listener.ended());
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobLifecycleTest, ListenerMayDropTheJobFromInsideOnReset) {
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.stream = true;
  h.listener.on_reset_hook = [&](const protocol::StreamReset&) { h.runner.reset(); };
  h.start_main(request);
  h.launcher.delta(0, "one");
  h.launcher.fail(0, failure(ErrorKind::network));
  EXPECT_EQ(h.launcher.count(), 1u);  // nothing launched after the drop
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  EXPECT_FALSE(h.listener.ended());
}

TEST_F(JobLifecycleTest, ListenerMayDropTheJobWhenItEnds) {
  h.listener.on_end_hook = [&] { h.runner.reset(); };
  h.start_main(make_request("a", "m1"));
  h.launcher.complete(0, ok_output());
  EXPECT_TRUE(h.listener.result);
  EXPECT_FALSE(h.runner);

  JobHarness h2(make_config({"a"}, without_breaker()));
  h2.listener.on_end_hook = [&] { h2.runner.reset(); };
  h2.start_main(make_request("a", "m1"));
  h2.runner->cancel();
  EXPECT_TRUE(h2.listener.has_error());
  EXPECT_FALSE(h2.runner);
}

TEST_F(JobLifecycleTest, ManyConcurrentJobsStayIndependent) {
  std::vector<std::unique_ptr<RecordingListener>> listeners;
  std::vector<std::unique_ptr<JobRunner>> runners;
  for (int i = 0; i < 50; ++i) {
    listeners.push_back(std::make_unique<RecordingListener>());
    auto request = make_request("a", "m1");
    request.stream = true;
    runners.push_back(h.start(request, *listeners.back(), "job-" + std::to_string(i)));
  }
  ASSERT_EQ(h.launcher.count(), 50u);
  for (std::size_t i = 0; i < 50; ++i) h.launcher.delta(i, "c" + std::to_string(i));
  for (std::size_t i = 0; i < 50; i += 2) h.launcher.complete(i, ok_output());
  for (std::size_t i = 1; i < 50; i += 2) runners[i]->cancel();
  for (std::size_t i = 0; i < 50; ++i) {
    ASSERT_EQ(listeners[i]->chunks.size(), 1u);
    EXPECT_EQ(listeners[i]->chunks[0].job_id, "job-" + std::to_string(i));
    EXPECT_EQ(listeners[i]->chunks[0].seq, 0u);
    EXPECT_EQ(static_cast<bool>(listeners[i]->result), i % 2 == 0);
  }
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

}  // namespace
}  // namespace dispatch::worker::test
