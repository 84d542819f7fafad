// The Client with its real I/O thread and socket, against the in-process FakeBroker.
// Timings are scaled down (tens of ms) so reconnects and resubmits happen quickly.

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "dispatch/client.hpp"
#include "support/fake_broker.hpp"

namespace dispatch {
namespace {

using std::chrono::milliseconds;
using test::FakeBroker;

ClientOptions fast_options(const FakeBroker& broker) {
  ClientOptions options;
  options.broker_endpoint = broker.endpoint();
  options.ack_timeout = milliseconds(100);
  options.max_ack_timeout = milliseconds(200);
  options.max_submits = 4;
  options.heartbeat_interval = milliseconds(50);
  options.liveness = 4;
  options.deadline_allowance = milliseconds(5000);
  options.cancel_grace = milliseconds(300);
  return options;
}

DispatchRequest hello(std::string model = "llama3.2") {
  return DispatchRequest(Provider::ollama, std::move(model), {Message::user("Hello there")});
}

TEST(ClientEngineTest, DispatchReturnsTheResponse) {
  FakeBroker broker;
  Client client(fast_options(broker));
  auto response = client.dispatch(hello());
  EXPECT_EQ(response.content, "echo: Hello there");
  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.model, "llama3.2");
  EXPECT_EQ(response.usage.total_tokens, 8u);
  EXPECT_EQ(response.job_id.size(), 32u);
  EXPECT_EQ(response.total_duration(), std::chrono::nanoseconds(1'500'000));
  EXPECT_EQ(client.in_flight(), 0u);
}

// Always the same number: what two generators that drew the same seed look like to each other.
class ConstantRandom final : public Random {
 public:
  double uniform() override { return 0.5; }
};

TEST(ClientEngineTest, JobIdsComeFromTheOsNotFromTheInjectedRandom) {
  // Clients whose injected generators draw the same numbers (as two processes whose seeds
  // collided would) must still never produce the same job id: the broker would hand one
  // client's stored answer to the other.
  FakeBroker broker;
  ConstantRandom random;
  auto options = fast_options(broker);
  options.random = &random;
  Client first(options);
  Client second(options);
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    for (Client* client : {&first, &second}) {
      const auto id = client->dispatch_async(hello()).job_id();
      EXPECT_EQ(id.size(), 32u);
      EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
      ids.insert(id);
    }
  }
  EXPECT_EQ(ids.size(), 100u);
}

TEST(ClientEngineTest, TypedErrorIsThrown) {
  FakeBroker broker;
  Client client(fast_options(broker));
  try {
    client.dispatch(hello("error:rate_limited:429"));
    FAIL() << "expected RateLimitedError";
  } catch (const RateLimitedError& e) {
    EXPECT_EQ(e.status(), 429);
    EXPECT_EQ(e.code(), "scripted");
  }
  EXPECT_THROW(client.dispatch(hello("error:model_not_available:404")), ModelNotAvailableError);
}

TEST(ClientEngineTest, ManyJobsInFlightFromManyThreads) {
  FakeBroker broker;
  auto options = fast_options(broker);
  options.ack_timeout = milliseconds(1000);  // about pipelining, not resubmission
  options.max_ack_timeout = milliseconds(2000);
  Client client(options);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<PendingDispatch> pending;
      for (int i = 0; i < kPerThread; ++i) {
        pending.push_back(client.dispatch_async(
            DispatchRequest("openai", "gpt", {Message::user(std::to_string(t * 1000 + i))})));
      }
      for (int i = 0; i < kPerThread; ++i) {
        auto response = pending[static_cast<std::size_t>(i)].get();
        if (response.content == "echo: " + std::to_string(t * 1000 + i)) ++ok;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  // Every job reached the broker under its own id (a slow machine may add a deduplicated
  // resubmit or two, under the same id).
  std::set<std::string> ids;
  for (const auto& job : broker.submits()) ids.insert(job.submit.job_id);
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(broker.routes().size(), 1u);  // all pipelined on one socket
}

TEST(ClientEngineTest, CallbackFormDeliversOutcomes) {
  FakeBroker broker;
  Client client(fast_options(broker));
  std::mutex mutex;
  std::vector<DispatchOutcome> outcomes;
  client.dispatch_async(hello(), [&](DispatchOutcome o) {
    std::lock_guard lock(mutex);
    outcomes.push_back(std::move(o));
  });
  client.dispatch_async(hello("error:timeout"), [&](DispatchOutcome o) {
    std::lock_guard lock(mutex);
    outcomes.push_back(std::move(o));
  });
  ASSERT_TRUE(FakeBroker::eventually([&] {
    std::lock_guard lock(mutex);
    return outcomes.size() == 2;
  }));
  std::lock_guard lock(mutex);
  int successes = 0;
  for (const auto& o : outcomes) {
    if (o.ok()) {
      ++successes;
    } else {
      EXPECT_EQ(o.error->kind(), ErrorKind::timeout);
    }
  }
  EXPECT_EQ(successes, 1);
}

TEST(ClientEngineTest, StreamDeliversChunksInOrderOnTheCallingThread) {
  FakeBroker broker;
  Client client(fast_options(broker));
  const auto caller = std::this_thread::get_id();
  std::string streamed;
  std::vector<uint64_t> seqs;
  bool on_caller_thread = true;
  auto response = client.dispatch_stream(
      DispatchRequest(Provider::openai, "gpt", {Message::user("one two three four")}),
      [&](const StreamEvent& event) {
        on_caller_thread = on_caller_thread && std::this_thread::get_id() == caller;
        ASSERT_EQ(event.type, StreamEvent::Type::chunk);
        seqs.push_back(event.seq);
        streamed += event.content;
      });
  EXPECT_TRUE(on_caller_thread);
  EXPECT_EQ(streamed, response.content);
  EXPECT_EQ(seqs, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  ASSERT_EQ(broker.submits().size(), 1u);
  EXPECT_TRUE(broker.submits()[0].submit.stream);
  EXPECT_TRUE(broker.submits()[0].request.stream);
}

TEST(ClientEngineTest, TheRequestsTenantIsOnEverySubmitOfItsJob) {
  FakeBroker broker;
  std::atomic<int> seen{0};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    if (seen++ == 0) return;  // the first submit is "lost": the resubmit must name it too
    FakeBroker::answer(b, job);
  });
  Client client(fast_options(broker));
  auto response = client.dispatch(hello().with_tenant("team-a"));
  EXPECT_EQ(response.content, "echo: Hello there");
  const auto submits = broker.submits();
  ASSERT_GE(submits.size(), 2u);
  for (const auto& job : submits) EXPECT_EQ(job.submit.tenant, "team-a");
}

TEST(ClientEngineTest, ARequestWithoutTenantSubmitsNone) {
  FakeBroker broker;
  Client client(fast_options(broker));
  client.dispatch(hello());
  const auto submits = broker.submits();
  ASSERT_EQ(submits.size(), 1u);
  EXPECT_EQ(submits[0].submit.tenant, "");
}

TEST(ClientEngineTest, StreamSurfacesResetAndGap) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    const auto& id = job.submit.job_id;
    b.send_chunk(job.route, {id, 0, "bad ", "", {}});
    b.send_reset(job.route, {id, 1, "fallback to claude/haiku: stream_interrupted"});
    b.send_chunk(job.route, {id, 1, "good ", "", {}});
    b.send_chunk(job.route, {id, 3, "end", "", {}});  // seq 2 dropped
    auto response = FakeBroker::echo_response(job.request);
    response.content = "good middle end";
    b.send_result(job.route, id, response);
  });
  Client client(fast_options(broker));
  std::vector<StreamEvent> events;
  auto response =
      client.dispatch_stream(hello(), [&](const StreamEvent& e) { events.push_back(e); });
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[1].type, StreamEvent::Type::reset);
  EXPECT_EQ(events[1].reason, "fallback to claude/haiku: stream_interrupted");
  EXPECT_EQ(events[3].type, StreamEvent::Type::gap);
  EXPECT_EQ(events[3].expected_seq, 2u);
  EXPECT_EQ(response.content, "good middle end");
  EXPECT_EQ(response.stream_resets, 1u);
  EXPECT_TRUE(response.stream_gap);
}

TEST(ClientEngineTest, StreamThatRestartsWithoutAResetIsSurfacedAsAReset) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    const auto& id = job.submit.job_id;
    b.send_chunk(job.route, {id, 0, "lost ", "", {}});
    b.send_chunk(job.route, {id, 1, "worker", "", {}});
    // Redelivered to another worker, and no reset reached the client.
    b.send_chunk(job.route, {id, 0, "new ", "", {}});
    b.send_chunk(job.route, {id, 1, "answer", "", {}});
    auto response = FakeBroker::echo_response(job.request);
    response.content = "new answer";
    b.send_result(job.route, id, response);
  });
  Client client(fast_options(broker));
  std::vector<StreamEvent> events;
  std::string shown;
  auto response = client.dispatch_stream(hello(), [&](const StreamEvent& e) {
    events.push_back(e);
    if (e.type == StreamEvent::Type::reset) shown.clear();
    if (e.type == StreamEvent::Type::chunk) shown += e.content;
  });
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[2].type, StreamEvent::Type::reset);
  EXPECT_EQ(events[2].next_seq, 0u);
  EXPECT_EQ(shown, response.content);
  EXPECT_EQ(response.stream_resets, 1u);
}

TEST(ClientEngineTest, StreamCallbackExceptionCancelsTheJob) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    b.send_chunk(job.route, {job.submit.job_id, 0, "x", "", {}});
  });
  Client client(fast_options(broker));
  EXPECT_THROW(
      client.dispatch_stream(hello(), [](const StreamEvent&) { throw std::runtime_error("stop"); }),
      std::runtime_error);
  EXPECT_TRUE(FakeBroker::eventually([&] { return broker.cancels().size() == 1; }));
}

TEST(ClientEngineTest, LostSubmitIsResubmittedUnderTheSameJobId) {
  FakeBroker broker;
  std::atomic<int> seen{0};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    if (seen++ < 2) return;  // the first two submits are "lost"
    FakeBroker::answer(b, job);
  });
  Client client(fast_options(broker));
  auto pending = client.dispatch_async(hello());
  auto response = pending.get();
  EXPECT_EQ(response.content, "echo: Hello there");
  EXPECT_GE(broker.submit_count(pending.job_id()), 3u);  // 2 lost + the answered one
}

TEST(ClientEngineTest, DeadBrokerIsReportedAsBrokerUnreachable) {
  FakeBroker broker;
  broker.set_silent(true);
  auto options = fast_options(broker);
  options.max_submits = 3;
  Client client(options);
  const auto start = std::chrono::steady_clock::now();
  try {
    client.dispatch(hello());
    FAIL() << "expected NetworkError";
  } catch (const NetworkError& e) {
    EXPECT_EQ(e.code(), client_code::broker_unreachable);
  }
  // 100 + 200 + 200 ms of ack waits (+ jitter), far from the request deadline.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  // 3 counted submits, plus re-sends on the fresh sockets of liveness reconnects; all of
  // them the same job.
  const auto submits = broker.submits();
  ASSERT_GE(submits.size(), 3u);
  for (const auto& job : submits) EXPECT_EQ(job.submit.job_id, submits[0].submit.job_id);
}

TEST(ClientEngineTest, NothingListeningIsBrokerUnreachableToo) {
  ClientOptions options;
  options.broker_endpoint = "tcp://127.0.0.1:1";
  options.ack_timeout = milliseconds(50);
  options.max_ack_timeout = milliseconds(50);
  Client client(options);
  EXPECT_THROW(client.dispatch(hello()), NetworkError);
  EXPECT_THROW(client.status(milliseconds(100)), NetworkError);
}

TEST(ClientEngineTest, InvalidEndpointIsRejectedAtConstruction) {
  ClientOptions options;
  options.broker_endpoint = "not-an-endpoint";
  EXPECT_THROW(Client{options}, std::invalid_argument);
}

TEST(ClientEngineTest, SilentBrokerMakesTheClientReconnectOnANewSocket) {
  FakeBroker broker;
  std::atomic<bool> answer_now{false};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    if (answer_now)
      b.send_result(job.route, job.submit.job_id, FakeBroker::echo_response(job.request));
  });
  Client client(fast_options(broker));
  auto pending = client.dispatch_async(hello());
  ASSERT_TRUE(FakeBroker::eventually([&] { return broker.submit_count() == 1; }));
  broker.set_silent(true);  // no heartbeat replies: the client presumes the broker gone
  ASSERT_TRUE(FakeBroker::eventually([&] { return broker.submit_count() >= 2; }));
  answer_now = true;
  broker.set_silent(false);
  auto response = pending.get();
  EXPECT_EQ(response.content, "echo: Hello there");
  EXPECT_GE(broker.routes().size(), 2u);  // the resubmission came from a new socket
  EXPECT_GT(broker.heartbeats(), 0u);
}

TEST(ClientEngineTest, BrokerRestartMakesTheClientResubmit) {
  FakeBroker broker("instance-1");
  std::atomic<bool> restarted{false};
  std::atomic<int> handled{0};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    if (restarted)
      b.send_result(job.route, job.submit.job_id, FakeBroker::echo_response(job.request));
    ++handled;
  });
  Client client(fast_options(broker));
  auto pending = client.dispatch_async(hello());
  // Handled, not merely counted: the count goes up before the callback runs, and a callback
  // that read `restarted` after the flip below would answer the first submission.
  ASSERT_TRUE(FakeBroker::eventually([&] { return handled.load() == 1; }));
  restarted = true;
  broker.set_broker_id("instance-2");  // the next heartbeat reply names a new instance
  EXPECT_EQ(pending.get().content, "echo: Hello there");
  EXPECT_GE(broker.submit_count(pending.job_id()), 2u);  // resubmitted to the new instance
}

TEST(ClientEngineTest, CancelEndsTheJob) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) { b.accept(job); });
  Client client(fast_options(broker));
  auto pending = client.dispatch_async(hello());
  ASSERT_TRUE(FakeBroker::eventually([&] { return broker.submit_count() == 1; }));
  // Whether the accepted has arrived yet or not, the job must end as cancelled.
  pending.cancel();
  EXPECT_THROW(pending.get(), CancelledError);
  EXPECT_TRUE(FakeBroker::eventually([&] { return broker.cancels().size() == 1; }));
}

TEST(ClientEngineTest, ClientSideDeadlineEndsAHungJob) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) { b.accept(job); });
  auto options = fast_options(broker);
  options.deadline_allowance = milliseconds(200);
  Client client(options);
  try {
    client.dispatch(hello().with_timeout_ms(100));
    FAIL() << "expected TimeoutError";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.code(), client_code::client_deadline);
  }
}

TEST(ClientEngineTest, StatusReturnsTheBrokerView) {
  FakeBroker broker("status-broker");
  Client client(fast_options(broker));
  auto status = client.status(milliseconds(2000));
  EXPECT_EQ(status.broker_id, "status-broker");
  ASSERT_EQ(status.workers.size(), 1u);
  EXPECT_EQ(status.workers[0].capacity, 8u);
}

TEST(ClientEngineTest, DestroyingTheClientFailsPendingJobs) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) { b.accept(job); });
  std::future<DispatchResponse> future;
  {
    Client client(fast_options(broker));
    auto pending = client.dispatch_async(hello());
    ASSERT_TRUE(FakeBroker::eventually([&] { return broker.submit_count() == 1; }));
    future = std::move(pending.future());
  }
  try {
    future.get();
    FAIL() << "expected CancelledError";
  } catch (const CancelledError& e) {
    EXPECT_EQ(e.code(), client_code::client_shutdown);
  }
}

}  // namespace
}  // namespace dispatch
