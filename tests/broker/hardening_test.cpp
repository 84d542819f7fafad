// Unit tests of BrokerCore's bounds and hardening: byte and per-client budgets, the queue
// timeout ceiling, the unknown-provider grace, running deadlines, reset-then-loss, worker-id
// and status-header checks. Driven by hand on a ManualClock (core_fixture.hpp).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core_fixture.hpp"

namespace dispatch::broker {
namespace {

// ---------------------------------------------------------------------------------------------
// Memory bounds

TEST_F(CoreTest, PayloadBytesOfQueuedAndRunningJobsAreBounded) {
  const std::string big = request_payload("openai", 1'000);
  BrokerConfig config;
  config.queue_bytes = 3 * big.size();
  make(config);
  ready("w1", "worker-1", 1);
  for (const char* id : {"run", "q1", "q2"}) submit_payload(id, id, "openai", big);
  auto sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 3u);
  EXPECT_EQ(core_->status().payload_bytes, 3 * big.size());
  EXPECT_EQ(core_->status().payload_bytes_limit, 3 * big.size());

  // A fourth is over the bound (running jobs count: they hold their payload for redelivery),
  // but a small one still fits nowhere either: the bound is strict.
  submit_payload("c4", "q3", "openai", big);
  sent = take();
  EXPECT_EQ(rejection_code(sent), "queue_bytes");
  EXPECT_EQ(core_->find_job("q3"), nullptr);

  // A finished job gives its bytes back.
  result("w1", "run", 1);
  take();
  EXPECT_EQ(core_->status().payload_bytes, 2 * big.size());
  submit_payload("c4", "q3", "openai", big);
  sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 1u);
  EXPECT_EQ(core_->status().rejected, (std::map<std::string, uint64_t>{{"queue_bytes", 1}}));
}

TEST_F(CoreTest, OneClientCannotQueueMoreThanItsJobBound) {
  BrokerConfig config;
  config.client_jobs = 2;
  make(config);
  submit("greedy", "g1");
  submit("greedy", "g2");
  take();
  submit("greedy", "g3");
  auto sent = take();
  EXPECT_EQ(rejection_code(sent), "client_jobs");
  // Other clients are not affected.
  submit("modest", "m1");
  sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 1u);
  // A job that leaves the queue (dispatched) frees a place.
  ready("w1", "worker-1", 1);
  take();
  submit("greedy", "g3");
  sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 1u);
  EXPECT_EQ(core_->status().rejected.at("client_jobs"), 1u);
}

TEST_F(CoreTest, OneClientCannotQueueMoreThanItsByteBound) {
  const std::string big = request_payload("openai", 10'000);
  BrokerConfig config;
  config.client_bytes = 2 * big.size() + 100;
  make(config);
  submit_payload("greedy", "g1", "openai", big);
  submit_payload("greedy", "g2", "openai", big);
  take();
  submit_payload("greedy", "g3", "openai", big);
  auto sent = take();
  EXPECT_EQ(rejection_code(sent), "client_bytes");
  // Small jobs of the same client still fit; other clients are not affected.
  submit("greedy", "small");
  submit_payload("other", "o1", "openai", big);
  sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 2u);
  // A cancelled job gives its place back.
  cancel("greedy", "g1");
  take();
  submit_payload("greedy", "g3", "openai", big);
  sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 1u);
}

TEST_F(CoreTest, JobsAFreeWorkerTakesAtOnceAreNotChargedToTheClient) {
  BrokerConfig config;
  config.client_jobs = 1;
  make(config);
  ready("w1", "worker-1", 4, {"claude"});
  submit("c1", "waits", "openai");
  take();
  // Its one queued job is for another provider; this one does not wait.
  submit("c1", "runs", "claude");
  auto sent = take();
  EXPECT_EQ(of(sent, Command::accepted).size(), 1u);
  EXPECT_EQ(of(sent, Command::job, false).size(), 1u);
}

TEST_F(CoreTest, ALongerQueueTimeoutThanTheCeilingIsClamped) {
  BrokerConfig config;
  config.max_queue_timeout = 1'000ms;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "busy");
  submit("c1", "waits", "openai", Priority::interactive, false, 4'000'000'000u);
  take();
  advance(999ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "queue_deadline");
}

// ---------------------------------------------------------------------------------------------
// Providers no worker has ever offered

TEST_F(CoreTest, ProviderNoWorkerEverAdvertisedFailsAfterTheGrace) {
  BrokerConfig config;
  config.unknown_provider_grace = 10'000ms;
  make(config);
  const std::string big = request_payload("typo", 10'000);
  submit_payload("c1", "j1", "typo", big);
  take();
  advance(9'999ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::unsupported_provider);
  EXPECT_EQ(error.code, "unknown_provider");
  EXPECT_EQ(error.provider, "typo");
  EXPECT_EQ(core_->status().payload_bytes, 0u);
  EXPECT_EQ(core_->status().broker_errors.at("unknown_provider"), 1u);
  EXPECT_EQ(core_->status().failed_by_kind.at("unsupported_provider"), 1u);
}

TEST_F(CoreTest, ProviderAdvertisedOnceWaitsItsFullQueueDeadline) {
  BrokerConfig config;
  config.unknown_provider_grace = 10'000ms;
  config.queue_timeout = 60'000ms;
  make(config);
  ready("w1", "worker-1", 1, {"ollama"});
  disconnect("w1");
  submit("c1", "j1", "ollama");
  take();
  advance(59'999ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::unsupported_provider);
  EXPECT_EQ(error.code, "queue_deadline");
}

TEST_F(CoreTest, AProviderAdvertisedWithinTheGraceKeepsItsWaitingJobs) {
  BrokerConfig config;
  config.unknown_provider_grace = 10'000ms;
  config.queue_timeout = 60'000ms;
  make(config);
  submit("c1", "first", "late");
  submit("c1", "second", "late");
  take();
  advance(5'000ms);
  ready("w1", "worker-1", 1, {"late"});  // takes one; the other keeps waiting
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"first"}));
  advance(10'000ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(45'000ms);  // 60 s after it was queued
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "queue_deadline");
}

// ---------------------------------------------------------------------------------------------
// Running deadlines

struct RunningDeadline : CoreTest {
  void SetUp() override {
    BrokerConfig config;
    config.running_timeout = 100'000ms;
    config.running_grace = 5'000ms;
    config.heartbeat_interval = 1'000ms;
    config.liveness = 1'000'000;  // the worker never looks dead here: it is only stuck
    make(config);
    ready("w1", "worker-1", 1);
    take();
  }
};

TEST_F(RunningDeadline, WorkerThatNeverAnswersIsToldToCancelThenTheJobIsReleased) {
  submit_payload("c1", "stuck", "openai", request_payload("openai", 2, 10'000));
  submit("c1", "next");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"stuck"}));
  advance(14'999ms);
  EXPECT_TRUE(take_of(Command::cancel, false).empty());
  advance(1ms);  // timeout_ms 10 s + grace 5 s
  auto cancels = take_of(Command::cancel, false);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].route, "w1");
  EXPECT_EQ(decode_or_die<protocol::Cancel>(cancels[0].header()).job_id, "stuck");
  // No answer within another grace: released anyway, and its slot goes to the next job.
  advance(4'999ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto sent = take();
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "running_deadline");
  auto jobs = of(sent, Command::job, false);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::JobHeader>(jobs[0].header()).job_id, "next");
  // A late answer of the released delivery is dropped.
  result("w1", "stuck", 1);
  EXPECT_TRUE(take_of(Command::result).empty());
  EXPECT_EQ(core_->status().broker_errors.at("running_deadline"), 1u);
}

TEST_F(RunningDeadline, WorkerAnswerThatItNoLongerHoldsTheJobReleasesItAtOnce) {
  submit("c1", "stuck");  // no timeout_ms: the broker's running_timeout applies
  take();
  advance(104'999ms);
  EXPECT_TRUE(take_of(Command::cancel, false).empty());
  advance(1ms);
  ASSERT_EQ(take_of(Command::cancel, false).size(), 1u);
  submit("c1", "next");
  // The worker's rule for a cancel of a job it does not hold.
  protocol::Error unknown;
  unknown.kind = ErrorKind::cancelled;
  unknown.code = "unknown_job";
  worker_error("w1", "stuck", 0, unknown);
  auto sent = take();
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "running_deadline");
  EXPECT_EQ(of(sent, Command::job, false).size(), 1u);  // the slot is free again
}

TEST_F(RunningDeadline, CancelledAnswerToTheDeadlineCancelBecomesRunningDeadline) {
  submit_payload("c1", "slow", "openai", request_payload("openai", 2, 1'000));
  take();
  advance(6'000ms);
  ASSERT_EQ(take_of(Command::cancel, false).size(), 1u);
  protocol::Error cancelled;
  cancelled.kind = ErrorKind::cancelled;
  worker_error("w1", "slow", 1, cancelled);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).code, "running_deadline");
}

TEST_F(RunningDeadline, OverdueJobWhoseWorkerIsLostEndsInsteadOfBeingRedelivered) {
  submit_payload("c1", "slow", "openai", request_payload("openai", 2, 1'000));
  take();
  advance(6'000ms);
  ASSERT_EQ(take_of(Command::cancel, false).size(), 1u);
  ready("w2", "worker-2", 1);
  disconnect("w1");
  auto sent = take();
  EXPECT_TRUE(of(sent, Command::job, false).empty());
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).code, "running_deadline");
}

TEST_F(RunningDeadline, OverdueJobKeptAcrossAReconnectIsToldToCancelAgain) {
  submit_payload("c1", "slow", "openai", request_payload("openai", 2, 1'000));
  take();
  advance(6'000ms);
  ASSERT_EQ(take_of(Command::cancel, false).size(), 1u);
  // The same worker on a new connection, still holding the delivery.
  ready("w1-new", "worker-1", 1, {"openai"}, {protocol::HeldJob{"slow", 1}});
  auto cancels = take_of(Command::cancel, false);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].route, "w1-new");
  // The release still comes one grace after the first cancel.
  advance(5'000ms);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).code, "running_deadline");
}

TEST_F(RunningDeadline, AnAnswerBeforeTheDeadlineDisarmsIt) {
  submit_payload("c1", "quick", "openai", request_payload("openai", 2, 1'000));
  take();
  result("w1", "quick", 1);
  take();
  advance(100'000ms);
  EXPECT_TRUE(take_of(Command::cancel, false).empty());
  EXPECT_TRUE(take_of(Command::error).empty());
}

TEST_F(RunningDeadline, UnknownJobAnswerToAClientCancelEndsTheJobCancelled) {
  submit("c1", "gone");
  take();
  cancel("c1", "gone");
  ASSERT_EQ(take_of(Command::cancel, false).size(), 1u);
  protocol::Error unknown;
  unknown.kind = ErrorKind::cancelled;
  unknown.code = "unknown_job";
  worker_error("w1", "gone", 0, unknown);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).kind, ErrorKind::cancelled);
  EXPECT_EQ(core_->running(), 0u);
}

TEST_F(RunningDeadline, UnknownJobFromAnotherWorkerOrWithoutACancelIsIgnored) {
  ready("w2", "worker-2", 1);
  submit("c1", "busy");
  take();
  protocol::Error unknown;
  unknown.kind = ErrorKind::cancelled;
  unknown.code = "unknown_job";
  worker_error("w1", "busy", 0, unknown);  // no cancel was sent
  worker_error("w2", "busy", 0, unknown);  // not its job
  EXPECT_TRUE(take_of(Command::error).empty());
  EXPECT_EQ(core_->running(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Streams: reset then loss

TEST_F(CoreTest, RedeliveryAfterARelayedResetStillResetsTheClient) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 3;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "s", "openai", Priority::interactive, true);
  take();
  for (uint64_t seq = 0; seq < 3; ++seq) chunk("w1", "s", seq, 1);
  reset("w1", "s", 3, 1);  // the worker failed over: its next chunk would be seq 3
  ASSERT_EQ(take_of(Command::reset).size(), 1u);
  // The worker dies before sending anything more; the next delivery starts at seq 0.
  ready("w2", "worker-2", 1);
  take();
  for (int i = 0; i < 5; ++i) {
    advance(100ms);
    worker_heartbeat("w2");
  }
  ASSERT_EQ(core_->find_worker("w1"), nullptr);
  auto sent = take();
  auto resets = of(sent, Command::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::StreamReset>(resets[0].header()).next_seq, 0u);
  EXPECT_EQ(of(sent, Command::job, false).size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Worker ids and status headers

TEST_F(CoreTest, OverlongWorkerIdIsRefusedAndLeavesNothingBehind) {
  ready("w1", std::string(300, 'x'), 4);
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].command, Command::rejected);
  EXPECT_FALSE(sent[0].to_client);
  EXPECT_EQ(decode_or_die<protocol::Rejected>(sent[0].header()).code, "malformed");
  EXPECT_EQ(core_->worker_count(), 0u);
  EXPECT_EQ(core_->worker_ids_known(), 0u);
  // At the limit it registers, and its id leaves with it.
  ready("w2", std::string(256, 'y'), 4);
  EXPECT_EQ(core_->worker_ids_known(), 1u);
  core_->on_backend(
      "w2", make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  EXPECT_EQ(core_->worker_count(), 0u);
  EXPECT_EQ(core_->worker_ids_known(), 0u);
}

TEST_F(CoreTest, StatusRequestWhoseHeaderIsNotAMapIsRejectedMalformed) {
  for (const std::string& header : {std::string("\x01", 1), std::string("\x90", 1),
                                    std::string("\xa1x", 2), std::string("\xc0", 1)}) {
    core_->on_frontend("c1", make_frames(Command::status, header));
    auto sent = take();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].command, Command::rejected);
    EXPECT_EQ(decode_or_die<protocol::Rejected>(sent[0].header()).code, "malformed");
  }
  core_->on_frontend("c1", make_frames(Command::status, protocol::kEmptyMap));
  EXPECT_EQ(take_of(Command::status).size(), 1u);
}

}  // namespace
}  // namespace dispatch::broker
