// Issue 11 (4) through the whole system: an answer larger than a protocol frame (16 MiB) used
// to fail the worker's send, make it reconnect and replay the same result forever (94
// reconnects in 50 s) while the next job went unanswered. Now the worker caps the answer at
// worker.max_response_bytes (8 MiB by default, at most 15 MiB): the client gets
// invalid_request / response_too_large, the worker keeps its one connection and serves the
// next job. (That a result over a frame is never sent is checked in
// tests/worker/runtime/final_message_test.cpp.)

#include <gtest/gtest.h>

#include "dispatch/client.hpp"
#include "dispatch/test/stack.hpp"
#include "system_support.hpp"

namespace dispatch {
namespace {

using namespace std::chrono_literals;

class WorkerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto binaries = test::StackBinaries::from_build();
    ASSERT_TRUE(binaries.missing().empty()) << "binaries not built: " << binaries.missing();
    stack_ = std::make_unique<test::Stack>(binaries);
    stack_->start_fake_provider();
    stack_->start_broker({"--heartbeat-ms", "100", "--liveness", "4"});
    // `whole` asks for whole answers: the fake provider writes its 9 MB in one body at once,
    // where streaming it word by word would take seconds.
    const std::string yaml =
        "defaults: {retry_count: 0, enable_fallback: false}\n"
        "providers:\n"
        "  whole: {type: ollama, stream_upstream: false, base_url: \"" +
        stack_->fake().host_url() + "\"}\n";
    stack_->start_workers(1, yaml, {"--heartbeat-ms", "100", "--liveness", "4"});
    stack_->wait_for_workers(1);
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    client_ = std::make_unique<Client>(options);
  }

  void TearDown() override {
    client_.reset();
    stack_.reset();
  }

  std::unique_ptr<test::Stack> stack_;
  std::unique_ptr<Client> client_;
};

TEST_F(WorkerLimitsTest, AnAnswerOverTheCapIsResponseTooLargeAndTheWorkerServesTheNextJob) {
  // The fake provider answers with the words of the prompt (then filler, up to `tokens`): 60,000
  // words of 150 bytes make a 9 MB answer, over the 8 MiB default cap.
  std::string prompt;
  for (int i = 0; i < 60'000; ++i) prompt += std::string(149, 'a' + i % 26) + ' ';
  const DispatchRequest huge("whole", "m~tokens=100000", {Message::user(prompt)});
  try {
    const DispatchResponse response = client_->dispatch(huge);
    FAIL() << "got an answer of " << response.content.size() << " bytes";
  } catch (const InvalidRequestError& error) {
    EXPECT_EQ(error.code(), "response_too_large") << error.message();
  }

  const DispatchResponse next =
      client_->dispatch(DispatchRequest("whole", "m~tokens=3", {Message::user("hi")}));
  EXPECT_EQ(next.provider, "whole");
  EXPECT_FALSE(next.content.empty());

  // One connection throughout: no reconnect, no re-registration.
  const std::string log = stack_->worker_log(0);
  EXPECT_EQ(log.find("reconnecting"), std::string::npos) << log;
  EXPECT_EQ(log.find("re-register"), std::string::npos) << log;
  const auto status = stack_->status();
  ASSERT_TRUE(status);
  EXPECT_EQ(status->workers.size(), 1u);
}

}  // namespace
}  // namespace dispatch
