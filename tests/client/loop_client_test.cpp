// LoopClient: the client library driven by the caller's own event loop, against the in-process
// FakeBroker. The driver below waits the way dispatch-gateway's Asio loop does: epoll in
// edge-triggered mode on the two descriptors, with the timeout process() asks for, so a wake-up
// the client fails to ask for shows as a job that never finishes within the bound.

#include "dispatch/loop_client.hpp"

#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <functional>
#include <optional>
#include <thread>
#include <zmq.hpp>

#include "support/fake_broker.hpp"

namespace dispatch {
namespace {

using std::chrono::milliseconds;
using test::FakeBroker;

// Session timers far away, so that only the descriptors can move a job along within a test's
// bound: a missed edge is a hang, not a delay.
ClientOptions slow_timer_options(const FakeBroker& broker) {
  ClientOptions options;
  options.broker_endpoint = broker.endpoint();
  options.ack_timeout = milliseconds(20000);
  options.max_ack_timeout = milliseconds(20000);
  options.heartbeat_interval = milliseconds(20000);
  options.cancel_grace = milliseconds(300);
  return options;
}

DispatchRequest hello(std::string text = "Hello there") {
  return DispatchRequest(Provider::ollama, "llama3.2", {Message::user(std::move(text))});
}

// An edge-triggered epoll loop over a LoopClient, re-registering when the socket is replaced.
class EdgeDriver {
 public:
  explicit EdgeDriver(LoopClient& client) : client_(client), epoll_(epoll_create1(EPOLL_CLOEXEC)) {
    watch();
  }
  ~EdgeDriver() { close(epoll_); }
  EdgeDriver(const EdgeDriver&) = delete;
  EdgeDriver& operator=(const EdgeDriver&) = delete;

  // Runs the loop until `done` or the bound; true when `done`.
  template <typename Done>
  bool run_until(Done done, milliseconds bound = milliseconds(5000)) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    LoopClient::Progress progress = step();
    while (!done()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      if (progress.again) {
        progress = step();
        continue;
      }
      auto wait = std::chrono::ceil<milliseconds>(deadline - now);
      if (progress.next_due != Clock::time_point::max()) {
        wait = std::min(wait, std::chrono::ceil<milliseconds>(
                                  std::max(progress.next_due - now, Clock::duration::zero())));
      }
      epoll_event events[4];
      epoll_wait(epoll_, events, 4, static_cast<int>(wait.count()));
      progress = step();
    }
    return true;
  }

  int wakeups() const noexcept { return steps_; }

 private:
  LoopClient::Progress step() {
    ++steps_;
    const LoopClient::Progress progress = client_.process();
    if (client_.generation() != generation_) watch();
    return progress;
  }

  void watch() {
    for (int fd : fds_) {
      if (fd >= 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    }
    generation_ = client_.generation();
    fds_ = client_.descriptors();
    for (int fd : fds_) {
      epoll_event event{};
      event.events = EPOLLIN | EPOLLET;
      event.data.fd = fd;
      epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
    }
  }

  LoopClient& client_;
  int epoll_;
  std::array<int, 2> fds_{-1, -1};
  uint64_t generation_ = 0;
  int steps_ = 0;
};

TEST(LoopClientTest, AJobIsAnsweredOnTheCallersThread) {
  FakeBroker broker;
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  const auto caller = std::this_thread::get_id();
  std::optional<DispatchOutcome> outcome;
  bool on_caller_thread = false;
  const std::string job_id = client.submit(hello(), [&](DispatchOutcome done) {
    on_caller_thread = std::this_thread::get_id() == caller;
    outcome = std::move(done);
  });
  EXPECT_EQ(job_id.size(), 32u);
  EXPECT_EQ(client.in_flight(), 1u);
  ASSERT_TRUE(driver.run_until([&] { return outcome.has_value(); }));
  EXPECT_TRUE(on_caller_thread);
  ASSERT_TRUE(outcome->ok()) << outcome->error->message();
  EXPECT_EQ(outcome->response->content, "echo: Hello there");
  EXPECT_EQ(outcome->response->job_id, job_id);
  EXPECT_EQ(client.in_flight(), 0u);
}

TEST(LoopClientTest, StreamEventsArriveInOrderBeforeTheResult) {
  FakeBroker broker;
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  std::string streamed;
  std::vector<uint64_t> seqs;
  std::optional<DispatchOutcome> outcome;
  client.submit(
      DispatchRequest(Provider::openai, "gpt", {Message::user("one two three four")}),
      [&](DispatchOutcome done) { outcome = std::move(done); },
      [&](const StreamEvent& event) {
        EXPECT_FALSE(outcome.has_value()) << "a chunk after the result";
        seqs.push_back(event.seq);
        streamed += event.content;
      });
  ASSERT_TRUE(driver.run_until([&] { return outcome.has_value(); }));
  ASSERT_TRUE(outcome->ok());
  EXPECT_EQ(streamed, outcome->response->content);
  EXPECT_EQ(seqs, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  ASSERT_EQ(broker.submits().size(), 1u);
  EXPECT_TRUE(broker.submits()[0].submit.stream);
}

// Hundreds of answers arrive while the loop is busy: each descriptor edge stands for any number
// of messages, and edges consumed by a send must not strand the rest.
TEST(LoopClientTest, ABurstOfJobsAllFinishOnEdgeTriggeredWakeUps) {
  FakeBroker broker;
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  constexpr int kJobs = 500;
  int finished = 0;
  int succeeded = 0;
  for (int i = 0; i < kJobs; ++i) {
    client.submit(hello("job " + std::to_string(i)), [&](DispatchOutcome done) {
      ++finished;
      if (done.ok()) ++succeeded;
    });
    if (i % 50 == 0) client.process();  // interleave sends with answers arriving
  }
  ASSERT_TRUE(driver.run_until([&] { return finished == kJobs; }))
      << finished << " of " << kJobs << " finished";
  EXPECT_EQ(succeeded, kJobs);
  EXPECT_EQ(broker.submit_count(), static_cast<std::size_t>(kJobs));
}

// A closed loop: each answer submits the next job from inside process(), so sends and arriving
// answers interleave all the time and a send often swallows the descriptor's edge for a message
// that is already waiting (libzmq processes its commands inside zmq_send). process() must see
// it and say `again`, or the loop stalls until a timer (20 s here, past the bound).
TEST(LoopClientTest, AClosedLoopOfJobsNeverStallsOnASwallowedEdge) {
  FakeBroker broker;
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  constexpr int kJobs = 3000;
  constexpr int kInFlight = 16;
  int submitted = 0;
  int succeeded = 0;
  int finished = 0;
  std::function<void()> submit_next = [&] {
    ++submitted;
    client.submit(hello("job " + std::to_string(submitted)), [&](DispatchOutcome done) {
      ++finished;
      if (done.ok()) ++succeeded;
      if (submitted < kJobs) submit_next();
    });
  };
  for (int i = 0; i < kInFlight; ++i) submit_next();
  ASSERT_TRUE(driver.run_until([&] { return finished == kJobs; }, milliseconds(15000)))
      << finished << " of " << kJobs << " finished";
  EXPECT_EQ(succeeded, kJobs);
}

TEST(LoopClientTest, StatusIsAnswered) {
  FakeBroker broker("status-broker");
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  std::optional<Result<protocol::StatusReply, protocol::Error>> status;
  client.request_status(milliseconds(2000), [&](auto outcome) { status = std::move(outcome); });
  ASSERT_TRUE(driver.run_until([&] { return status.has_value(); }));
  ASSERT_TRUE(status->ok());
  EXPECT_EQ((*status)->broker_id, "status-broker");
}

TEST(LoopClientTest, ASilentBrokerGetsANewSocketAndTheJobIsResubmittedOnIt) {
  FakeBroker broker;
  std::atomic<bool> answer_now{false};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    if (answer_now) {
      b.send_result(job.route, job.submit.job_id, FakeBroker::echo_response(job.request));
    }
  });
  ClientOptions options = slow_timer_options(broker);
  options.heartbeat_interval = milliseconds(50);
  options.liveness = 4;
  zmq::context_t context(1);
  LoopClient client(options, context);
  EdgeDriver driver(client);
  const uint64_t first_generation = client.generation();
  std::optional<DispatchOutcome> outcome;
  client.submit(hello(), [&](DispatchOutcome done) { outcome = std::move(done); });
  ASSERT_TRUE(driver.run_until([&] { return broker.submit_count() == 1; }));
  broker.set_silent(true);  // no heartbeat replies: the client presumes the broker gone
  ASSERT_TRUE(driver.run_until([&] { return client.generation() > first_generation; }));
  answer_now = true;
  broker.set_silent(false);
  ASSERT_TRUE(driver.run_until([&] { return outcome.has_value(); }));
  ASSERT_TRUE(outcome->ok());
  EXPECT_EQ(outcome->response->content, "echo: Hello there");
  EXPECT_GE(broker.routes().size(), 2u);  // the resubmission came from the new socket
}

TEST(LoopClientTest, CancelEndsTheJobAsCancelled) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) { b.accept(job); });
  zmq::context_t context(1);
  LoopClient client(slow_timer_options(broker), context);
  EdgeDriver driver(client);
  std::optional<DispatchOutcome> outcome;
  const std::string job_id =
      client.submit(hello(), [&](DispatchOutcome done) { outcome = std::move(done); });
  ASSERT_TRUE(driver.run_until([&] { return broker.submit_count() == 1; }));
  client.cancel(job_id);
  ASSERT_TRUE(driver.run_until([&] { return outcome.has_value(); }));
  ASSERT_FALSE(outcome->ok());
  EXPECT_EQ(outcome->error->kind(), ErrorKind::cancelled);
}

TEST(LoopClientTest, DestroyingTheClientEndsUnfinishedJobsAsClientShutdown) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) { b.accept(job); });
  zmq::context_t context(1);
  std::optional<DispatchOutcome> outcome;
  {
    LoopClient client(slow_timer_options(broker), context);
    EdgeDriver driver(client);
    client.submit(hello(), [&](DispatchOutcome done) { outcome = std::move(done); });
    ASSERT_TRUE(driver.run_until([&] { return broker.submit_count() == 1; }));
    EXPECT_FALSE(outcome.has_value());
  }
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->ok());
  EXPECT_EQ(outcome->error->code(), client_code::client_shutdown);
}

}  // namespace
}  // namespace dispatch
