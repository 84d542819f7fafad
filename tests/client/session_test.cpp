// The client's protocol state machine under a hand-driven clock: acknowledgements and
// resubmission, stream order, heartbeats, liveness, broker restarts, deadlines, cancel.

#include "session.hpp"

#include <gtest/gtest.h>

#include <optional>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::detail {
namespace {

using protocol::Command;
using std::chrono::milliseconds;

class ZeroRandom final : public Random {
 public:
  double uniform() override { return 0.0; }
};

struct Sent {
  Command command;
  std::string header;
  std::string payload;
};

std::vector<Sent> decode_outbox(Session& session) {
  std::vector<Sent> out;
  for (const auto& frames : session.take_outbox()) {
    std::vector<std::string_view> views(frames.begin(), frames.end());
    auto parsed = protocol::parse_frames(views);
    EXPECT_TRUE(parsed.ok()) << (parsed.ok() ? "" : parsed.error().message);
    if (!parsed) continue;
    out.push_back(Sent{parsed.value().command, std::string(parsed.value().header),
                       std::string(parsed.value().payload)});
  }
  return out;
}

std::size_t count(const std::vector<Sent>& sent, Command command) {
  std::size_t n = 0;
  for (const auto& s : sent) n += s.command == command ? 1 : 0;
  return n;
}

// Builds a broker -> client message and feeds it to the session.
void deliver(Session& session, Command command, const std::string& header,
             const std::string& payload = {}) {
  std::vector<std::string> frames{std::string(protocol::kProtocolTag),
                                  std::string(protocol::to_string(command)), header};
  if (protocol::command_has_payload(command)) frames.push_back(payload);
  std::vector<std::string_view> views(frames.begin(), frames.end());
  session.on_message(views);
}

void accept(Session& session, const std::string& job_id, const std::string& broker_id = "b1") {
  deliver(session, Command::accepted,
          protocol::encode(protocol::Accepted{job_id, broker_id, false}));
}

protocol::Response response_with(std::string content) {
  protocol::Response response;
  response.content = std::move(content);
  response.provider = "ollama";
  response.model = "llama3.2";
  response.usage = {4, 6, 10};
  response.finish_reason = "stop";
  return response;
}

struct Recorder {
  std::vector<StreamEvent> events;
  std::optional<DispatchOutcome> outcome;
  int done_calls = 0;

  JobCallbacks callbacks(bool want_events) {
    JobCallbacks out;
    if (want_events) out.on_event = [this](const StreamEvent& e) { events.push_back(e); };
    out.on_done = [this](DispatchOutcome o) {
      ++done_calls;
      outcome = std::move(o);
    };
    return out;
  }
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : session_(settings(), clock_, random_) {}

  static SessionSettings settings() {
    SessionSettings s;
    s.ack_timeout = milliseconds(1000);
    s.max_ack_timeout = milliseconds(4000);
    s.max_submits = 3;
    s.heartbeat_interval = milliseconds(1000);
    s.liveness = 4;
    s.default_request_timeout = milliseconds(30000);
    s.deadline_allowance = milliseconds(10000);
    s.cancel_grace = milliseconds(2000);
    return s;
  }

  DispatchRequest request(bool stream = false) {
    return DispatchRequest(Provider::ollama, "llama3.2", {Message::user("Hello")})
        .with_stream(stream)
        .with_priority(Priority::normal);
  }

  void advance(milliseconds by) {
    clock_.advance(by);
    session_.tick();
  }

  ManualClock clock_;
  ZeroRandom random_;
  Session session_;
};

TEST_F(SessionTest, SubmitSendsHeaderAndEncodedRequest) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  auto sent = decode_outbox(session_);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].command, Command::submit);
  auto submit = protocol::decode<protocol::Submit>(sent[0].header);
  ASSERT_TRUE(submit.ok());
  EXPECT_EQ(submit.value().job_id, "job1");
  EXPECT_EQ(submit.value().provider, "ollama");
  EXPECT_EQ(submit.value().priority, Priority::normal);
  EXPECT_FALSE(submit.value().stream);
  auto wire = protocol::decode<protocol::Request>(sent[0].payload);
  ASSERT_TRUE(wire.ok());
  EXPECT_EQ(wire.value(), request().wire());
  EXPECT_EQ(session_.unfinished(), 1u);
}

TEST_F(SessionTest, WantingChunksMakesTheWorkerStream) {
  Recorder recorder;
  session_.submit("job1", request(/*stream=*/false), recorder.callbacks(true));
  auto sent = decode_outbox(session_);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(protocol::decode<protocol::Submit>(sent[0].header).value().stream);
  EXPECT_TRUE(protocol::decode<protocol::Request>(sent[0].payload).value().stream);
}

TEST_F(SessionTest, UnacknowledgedJobIsResubmittedWithBackoffThenFailsAsBrokerUnreachable) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 1u);

  advance(milliseconds(999));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 0u);
  advance(milliseconds(1));  // 1 s: second submit
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 1u);
  advance(milliseconds(1999));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 0u);
  advance(milliseconds(1));  // +2 s: third submit
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 1u);
  EXPECT_FALSE(recorder.outcome.has_value());
  advance(milliseconds(4000));  // +4 s: give up
  ASSERT_TRUE(recorder.outcome.has_value());
  ASSERT_FALSE(recorder.outcome->ok());
  EXPECT_EQ(recorder.outcome->error->kind(), ErrorKind::network);
  EXPECT_EQ(recorder.outcome->error->code(), client_code::broker_unreachable);
  EXPECT_EQ(recorder.outcome->error->provider(), "ollama");
  EXPECT_EQ(session_.unfinished(), 0u);
  EXPECT_EQ(session_.stats().resubmits, 2u);
}

TEST_F(SessionTest, AcknowledgedJobIsNotResubmittedAndResultCompletesIt) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  decode_outbox(session_);
  accept(session_, "job1");
  advance(milliseconds(10000));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 0u);

  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(response_with("Hi there")));
  ASSERT_TRUE(recorder.outcome.has_value());
  ASSERT_TRUE(recorder.outcome->ok());
  EXPECT_EQ(recorder.outcome->response->content, "Hi there");
  EXPECT_EQ(recorder.outcome->response->usage.total_tokens, 10u);
  EXPECT_EQ(recorder.outcome->response->job_id, "job1");
  EXPECT_EQ(session_.unfinished(), 0u);

  // A repeated answer (after a resubmit) is ignored: on_done runs once.
  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(response_with("Hi there")));
  EXPECT_EQ(recorder.done_calls, 1);
}

TEST_F(SessionTest, ErrorPayloadBecomesTheTypedError) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  accept(session_, "job1");
  protocol::Error error;
  error.kind = ErrorKind::model_not_available;
  error.message = "model 'x' not found";
  error.status = 404;
  error.provider = "ollama";
  error.model = "x";
  deliver(session_, Command::error, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(error));
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_THROW(std::move(*recorder.outcome).take(), ModelNotAvailableError);
}

TEST_F(SessionTest, RejectedJobFailsWithTheRejectionKind) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  deliver(
      session_, Command::rejected,
      protocol::encode(protocol::Rejected{"job1", ErrorKind::queue_full, "queue_full", "full"}));
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_THROW(std::move(*recorder.outcome).take(), QueueFullError);
}

TEST_F(SessionTest, VersionMismatchFailsUnacknowledgedJobs) {
  Recorder first, second;
  session_.submit("job1", request(), first.callbacks(false));
  session_.submit("job2", request(), second.callbacks(false));
  accept(session_, "job2");
  deliver(session_, Command::rejected,
          protocol::encode(protocol::Rejected{"", ErrorKind::invalid_request, "version_mismatch",
                                              "broker speaks LLMD2"}));
  ASSERT_TRUE(first.outcome.has_value());
  EXPECT_EQ(first.outcome->error->code(), "version_mismatch");
  EXPECT_FALSE(second.outcome.has_value());
}

TEST_F(SessionTest, StreamChunksInOrderDuplicatesDroppedGapFlagged) {
  Recorder recorder;
  session_.submit("job1", request(true), recorder.callbacks(true));
  accept(session_, "job1");
  auto chunk = [&](uint64_t seq, std::string text) {
    deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", seq, text, "", {}}));
  };
  chunk(0, "a");
  chunk(1, "b");
  chunk(1, "b");  // repeat
  chunk(4, "e");  // 2 and 3 were dropped by the broker for a slow client
  ASSERT_EQ(recorder.events.size(), 4u);
  EXPECT_EQ(recorder.events[0].content, "a");
  EXPECT_EQ(recorder.events[1].content, "b");
  EXPECT_EQ(recorder.events[2].type, StreamEvent::Type::gap);
  EXPECT_EQ(recorder.events[2].expected_seq, 2u);
  EXPECT_EQ(recorder.events[2].seq, 4u);
  EXPECT_EQ(recorder.events[3].content, "e");
  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(response_with("abcde")));
  ASSERT_TRUE(recorder.outcome->ok());
  EXPECT_TRUE(recorder.outcome->response->stream_gap);
  EXPECT_EQ(recorder.outcome->response->content, "abcde");
}

TEST_F(SessionTest, ResetRestartsTheAnswerAtNextSeq) {
  Recorder recorder;
  session_.submit("job1", request(true), recorder.callbacks(true));
  accept(session_, "job1");
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 0, "Hel", "", {}}));
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 1, "lo", "", {}}));
  deliver(session_, Command::reset,
          protocol::encode(protocol::StreamReset{"job1", 2, "fallback to openai/gpt-4o"}));
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 2, "Hi", "", {}}));
  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(response_with("Hi")));
  ASSERT_EQ(recorder.events.size(), 4u);
  EXPECT_EQ(recorder.events[2].type, StreamEvent::Type::reset);
  EXPECT_EQ(recorder.events[2].next_seq, 2u);
  EXPECT_EQ(recorder.events[2].reason, "fallback to openai/gpt-4o");
  EXPECT_EQ(recorder.events[3].type, StreamEvent::Type::chunk);
  EXPECT_EQ(recorder.events[3].seq, 2u);
  ASSERT_TRUE(recorder.outcome->ok());
  EXPECT_EQ(recorder.outcome->response->stream_resets, 1u);
  EXPECT_FALSE(recorder.outcome->response->stream_gap);
}

TEST_F(SessionTest, BrokerRestartResetsSeqToZeroAfterRedelivery) {
  Recorder recorder;
  session_.submit("job1", request(true), recorder.callbacks(true));
  accept(session_, "job1");
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 0, "x", "", {}}));
  deliver(session_, Command::reset,
          protocol::encode(protocol::StreamReset{"job1", 0, "worker lost"}));
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 0, "y", "", {}}));
  ASSERT_EQ(recorder.events.size(), 3u);
  EXPECT_EQ(recorder.events[2].content, "y");  // seq 0 again is not a repeat after a reset
}

// The text a stream callback holds: chunks appended, cleared at every reset.
std::string shown_text(const std::vector<StreamEvent>& events) {
  std::string text;
  for (const auto& event : events) {
    if (event.type == StreamEvent::Type::reset) text.clear();
    if (event.type == StreamEvent::Type::chunk) text += event.content;
  }
  return text;
}

std::vector<StreamEvent::Type> types_of(const std::vector<StreamEvent>& events) {
  std::vector<StreamEvent::Type> types;
  for (const auto& event : events) types.push_back(event.type);
  return types;
}

class StreamRestartTest : public SessionTest {
 protected:
  void SetUp() override {
    session_.submit("job1", request(true), recorder_.callbacks(true));
    accept(session_, "job1");
  }
  void chunk(uint64_t seq, std::string text) {
    deliver(session_, Command::chunk,
            protocol::encode(protocol::Chunk{"job1", seq, std::move(text), "", {}}));
  }
  void reset(uint64_t next_seq, std::string reason) {
    deliver(session_, Command::reset,
            protocol::encode(protocol::StreamReset{"job1", next_seq, std::move(reason)}));
  }
  void result(std::string content) {
    deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
            protocol::encode(response_with(std::move(content))));
  }

  Recorder recorder_;
};

using Type = StreamEvent::Type;

TEST_F(StreamRestartTest, RestartAtSeqZeroAfterARelayedResetIsSurfacedAsAReset) {
  // A fallback at the worker (relayed reset), then the worker is lost and the job redelivered:
  // the broker, which cleared its "client saw chunks" flag at the relayed reset, sends no reset
  // of its own, and the new delivery numbers its chunks from 0 again.
  chunk(0, "Hel");
  chunk(1, "lo");
  reset(2, "fallback to openai/gpt-4o");
  chunk(2, "Hi");
  chunk(3, " there");
  chunk(0, "Hi");  // the redelivered attempt
  chunk(1, " there");
  chunk(2, "!");
  result("Hi there!");
  const auto& events = recorder_.events;
  EXPECT_EQ(types_of(events),
            (std::vector<Type>{Type::chunk, Type::chunk, Type::reset, Type::chunk, Type::chunk,
                               Type::reset, Type::chunk, Type::chunk, Type::chunk}));
  ASSERT_EQ(events.size(), 9u);
  EXPECT_EQ(events[5].next_seq, 0u);
  EXPECT_NE(events[5].reason.find("restarted"), std::string::npos) << events[5].reason;
  EXPECT_EQ(shown_text(events), "Hi there!");
  ASSERT_TRUE(recorder_.outcome.has_value() && recorder_.outcome->ok());
  EXPECT_EQ(recorder_.outcome->response->stream_resets, 2u);
  EXPECT_FALSE(recorder_.outcome->response->stream_gap);
}

TEST_F(StreamRestartTest, RestartWithoutAnyResetIsSurfacedAsAReset) {
  chunk(0, "a");
  chunk(1, "b");
  chunk(2, "c");
  chunk(0, "x");
  chunk(1, "y");
  result("xy");
  EXPECT_EQ(types_of(recorder_.events), (std::vector<Type>{Type::chunk, Type::chunk, Type::chunk,
                                                           Type::reset, Type::chunk, Type::chunk}));
  EXPECT_EQ(shown_text(recorder_.events), "xy");
  ASSERT_TRUE(recorder_.outcome.has_value() && recorder_.outcome->ok());
  EXPECT_EQ(recorder_.outcome->response->stream_resets, 1u);
}

TEST_F(StreamRestartTest, RestartAfterABrokerRestartIsSurfacedForTheJobWhoseAckRevealedIt) {
  chunk(0, "old ");
  chunk(1, "answer");
  // The broker restarts and goes quiet on the old connection: the client reconnects and
  // resubmits; the new instance's ack for this very job is how the client learns of it.
  for (int i = 0; i < 4; ++i) advance(milliseconds(1000));
  ASSERT_TRUE(session_.take_reconnect_request());
  session_.on_reconnected();
  accept(session_, "job1", "b2");
  chunk(0, "new");
  result("new");
  EXPECT_EQ(types_of(recorder_.events),
            (std::vector<Type>{Type::chunk, Type::chunk, Type::reset, Type::chunk}));
  EXPECT_EQ(shown_text(recorder_.events), "new");
  ASSERT_TRUE(recorder_.outcome.has_value() && recorder_.outcome->ok());
  EXPECT_EQ(recorder_.outcome->response->stream_resets, 1u);
}

TEST_F(StreamRestartTest, RestartBeforeAnyChunkFollowedTheResetNeedsNoSecondReset) {
  // Nothing shown since the relayed reset, so nothing the caller holds is void.
  chunk(0, "a");
  chunk(1, "b");
  reset(2, "fallback to claude/haiku");
  chunk(0, "c");  // the worker was lost before the fallback's first chunk; redelivered
  chunk(1, "d");
  EXPECT_EQ(types_of(recorder_.events),
            (std::vector<Type>{Type::chunk, Type::chunk, Type::reset, Type::chunk, Type::chunk}));
  EXPECT_EQ(shown_text(recorder_.events), "cd");
}

TEST_F(StreamRestartTest, RestartedAnswerWhoseFirstChunksWereLostShowsResetThenGap) {
  chunk(0, "a");
  chunk(1, "b");
  chunk(2, "c");
  chunk(1, "Y");  // the restarted answer's chunk 0 was dropped for a slow client
  result("XY");
  EXPECT_EQ(types_of(recorder_.events), (std::vector<Type>{Type::chunk, Type::chunk, Type::chunk,
                                                           Type::reset, Type::gap, Type::chunk}));
  EXPECT_EQ(recorder_.events[4].expected_seq, 0u);
  EXPECT_EQ(recorder_.events[4].seq, 1u);
  ASSERT_TRUE(recorder_.outcome.has_value() && recorder_.outcome->ok());
  EXPECT_TRUE(recorder_.outcome->response->stream_gap);
}

TEST_F(StreamRestartTest, OnlyARepeatOfTheLastChunkIsADuplicate) {
  chunk(0, "a");
  chunk(1, "b");
  chunk(1, "b");  // the last chunk again, identical: dropped
  chunk(1, "B");  // same seq, other text: the answer restarted (its chunk 0 lost)
  chunk(2, "c");
  chunk(0, "a");  // identical to a chunk shown earlier, but not the last one: a restart
  EXPECT_EQ(types_of(recorder_.events),
            (std::vector<Type>{Type::chunk, Type::chunk, Type::reset, Type::gap, Type::chunk,
                               Type::chunk, Type::reset, Type::chunk}));
  EXPECT_EQ(shown_text(recorder_.events), "a");
}

TEST_F(SessionTest, NewBrokerIdResubmitsEveryUnfinishedJob) {
  Recorder first, second, third;
  session_.submit("job1", request(), first.callbacks(false));
  session_.submit("job2", request(true), second.callbacks(true));
  accept(session_, "job1", "b1");
  accept(session_, "job2", "b1");
  deliver(session_, Command::chunk,
          protocol::encode(protocol::Chunk{"job2", 0, "partial", "", {}}));
  decode_outbox(session_);

  deliver(session_, Command::heartbeat, protocol::encode(protocol::Heartbeat{"b2", 0}));
  auto sent = decode_outbox(session_);
  EXPECT_EQ(count(sent, Command::submit), 2u);
  EXPECT_EQ(session_.stats().broker_changes, 1u);
  EXPECT_EQ(session_.broker_id(), "b2");
  // The stream job is told its answer restarts: the new broker begins again at seq 0.
  ASSERT_EQ(second.events.size(), 2u);
  EXPECT_EQ(second.events[1].type, StreamEvent::Type::reset);
  deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job2", 0, "fresh", "", {}}));
  EXPECT_EQ(second.events.back().content, "fresh");

  // A job first acknowledged by the new broker is not sent again.
  session_.submit("job3", request(), third.callbacks(false));
  accept(session_, "job3", "b2");
  decode_outbox(session_);
  accept(session_, "job1", "b2");
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 0u);
}

TEST_F(SessionTest, HeartbeatsOnlyWhileWorkIsUnfinished) {
  advance(milliseconds(5000));
  EXPECT_TRUE(decode_outbox(session_).empty());
  EXPECT_FALSE(session_.take_reconnect_request());

  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  accept(session_, "job1");
  decode_outbox(session_);
  advance(milliseconds(1000));
  EXPECT_EQ(count(decode_outbox(session_), Command::heartbeat), 1u);
  deliver(session_, Command::heartbeat, protocol::encode(protocol::Heartbeat{"b1", 0}));
  advance(milliseconds(500));
  EXPECT_EQ(count(decode_outbox(session_), Command::heartbeat), 0u);
  advance(milliseconds(500));
  EXPECT_EQ(count(decode_outbox(session_), Command::heartbeat), 1u);
}

TEST_F(SessionTest, SilentBrokerTriggersReconnectAndResubmission) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  accept(session_, "job1");
  decode_outbox(session_);
  for (int i = 0; i < 3; ++i) advance(milliseconds(1000));
  EXPECT_FALSE(session_.take_reconnect_request());
  advance(milliseconds(1000));  // 4 silent intervals
  EXPECT_TRUE(session_.take_reconnect_request());
  EXPECT_FALSE(session_.take_reconnect_request());  // once
  decode_outbox(session_);
  session_.on_reconnected();
  auto sent = decode_outbox(session_);
  EXPECT_EQ(count(sent, Command::submit), 1u);
  EXPECT_EQ(session_.stats().reconnects, 1u);
  // The re-sent job waits for its ack again.
  advance(milliseconds(1000));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 1u);
  accept(session_, "job1");
  advance(milliseconds(3000));
  EXPECT_EQ(count(decode_outbox(session_), Command::submit), 0u);
}

TEST_F(SessionTest, ReconnectsDoNotKeepADeadBrokerAlive) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  for (int step = 0; step < 200 && !recorder.outcome; ++step) {
    advance(milliseconds(100));
    if (session_.take_reconnect_request()) session_.on_reconnected();
  }
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_EQ(recorder.outcome->error->code(), client_code::broker_unreachable);
}

TEST_F(SessionTest, ClientDeadlineEndsAJobTheBrokerNeverAnswers) {
  Recorder recorder;
  session_.submit("job1", request().with_timeout_ms(5000), recorder.callbacks(false));
  accept(session_, "job1");
  for (int step = 0; step < 14; ++step) {
    advance(milliseconds(1000));
    deliver(session_, Command::heartbeat, protocol::encode(protocol::Heartbeat{"b1", 0}));
  }
  EXPECT_FALSE(recorder.outcome.has_value());
  decode_outbox(session_);
  advance(milliseconds(1000));  // 5 s request + 10 s allowance
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_EQ(recorder.outcome->error->kind(), ErrorKind::timeout);
  EXPECT_EQ(recorder.outcome->error->code(), client_code::client_deadline);
  EXPECT_EQ(count(decode_outbox(session_), Command::cancel), 1u);
}

TEST_F(SessionTest, CancelBeforeAckEndsAtOnce) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  decode_outbox(session_);
  session_.cancel("job1");
  EXPECT_EQ(count(decode_outbox(session_), Command::cancel), 1u);
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_THROW(std::move(*recorder.outcome).take(), CancelledError);
}

TEST_F(SessionTest, CancelAfterAckWaitsForTheBrokerThenGivesUpLocally) {
  Recorder answered, silent;
  session_.submit("job1", request(), answered.callbacks(false));
  session_.submit("job2", request(), silent.callbacks(false));
  accept(session_, "job1");
  accept(session_, "job2");
  decode_outbox(session_);
  session_.cancel("job1");
  session_.cancel("job2");
  session_.cancel("unknown");  // ignored
  EXPECT_EQ(count(decode_outbox(session_), Command::cancel), 2u);
  EXPECT_FALSE(answered.outcome.has_value());
  deliver(session_, Command::error, protocol::encode(protocol::JobEnd{"job1", 1}),
          protocol::encode(make_wire_error(ErrorKind::cancelled, "", "cancelled")));
  ASSERT_TRUE(answered.outcome.has_value());
  EXPECT_EQ(answered.outcome->error->kind(), ErrorKind::cancelled);
  EXPECT_FALSE(silent.outcome.has_value());
  advance(milliseconds(2000));
  ASSERT_TRUE(silent.outcome.has_value());
  EXPECT_EQ(silent.outcome->error->code(), client_code::cancelled_locally);
}

TEST_F(SessionTest, StatusRequestIsAnsweredOrTimesOut) {
  std::optional<StatusOutcome> first, second;
  session_.request_status(milliseconds(3000),
                          [&](StatusOutcome reply) { first = std::move(reply); });
  auto sent = decode_outbox(session_);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].command, Command::status);
  EXPECT_EQ(sent[0].header, std::string("\x80", 1));
  protocol::StatusReply reply;
  reply.broker_id = "b9";
  reply.queue_depth = {0, 1, 2};
  deliver(session_, Command::status, protocol::encode(reply));
  ASSERT_TRUE(first.has_value() && first->ok());
  EXPECT_EQ((*first)->queue_depth, (std::vector<uint64_t>{0, 1, 2}));

  session_.request_status(milliseconds(3000), [&](StatusOutcome r) { second = std::move(r); });
  advance(milliseconds(2999));
  EXPECT_FALSE(second.has_value());
  advance(milliseconds(1));
  ASSERT_TRUE(second.has_value());
  ASSERT_FALSE(second->ok());
  EXPECT_EQ(second->error().code, client_code::broker_unreachable);
  EXPECT_EQ(second->error().kind, ErrorKind::network);
}

TEST_F(SessionTest, ShutdownCancelsAndFailsEverything) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  accept(session_, "job1");
  decode_outbox(session_);
  session_.shutdown();
  EXPECT_EQ(count(decode_outbox(session_), Command::cancel), 1u);
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_EQ(recorder.outcome->error->code(), client_code::client_shutdown);
}

TEST_F(SessionTest, GarbageAndStrayMessagesAreIgnored) {
  Recorder recorder;
  session_.submit("job1", request(), recorder.callbacks(false));
  std::vector<std::string_view> garbage{"nope", "x"};
  session_.on_message(garbage);
  deliver(session_, Command::chunk, "\xc1");  // not msgpack
  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"other", 1}),
          protocol::encode(response_with("x")));
  EXPECT_FALSE(recorder.outcome.has_value());
  EXPECT_GE(session_.stats().ignored_messages, 2u);
  // An undecodable payload for a known job fails it rather than hanging.
  deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}), "\xc1");
  ASSERT_TRUE(recorder.outcome.has_value());
  EXPECT_EQ(recorder.outcome->error->code(), client_code::invalid_response);
}

TEST_F(SessionTest, CallbackExceptionsDoNotEscape) {
  JobCallbacks callbacks;
  callbacks.on_event = [](const StreamEvent&) { throw std::runtime_error("user bug"); };
  callbacks.on_done = [](DispatchOutcome) { throw std::runtime_error("user bug"); };
  session_.submit("job1", request(true), std::move(callbacks));
  accept(session_, "job1");
  EXPECT_NO_THROW(
      deliver(session_, Command::chunk, protocol::encode(protocol::Chunk{"job1", 0, "a", "", {}})));
  EXPECT_NO_THROW(deliver(session_, Command::result, protocol::encode(protocol::JobEnd{"job1", 1}),
                          protocol::encode(response_with("a"))));
  EXPECT_EQ(session_.unfinished(), 0u);
}

TEST_F(SessionTest, NextWakeupCoversResubmitHeartbeatAndLiveness) {
  EXPECT_EQ(session_.next_wakeup(), Clock::time_point::max());
  Recorder recorder;
  const auto start = clock_.now();
  session_.submit("job1", request(), recorder.callbacks(false));
  EXPECT_EQ(session_.next_wakeup(), start + milliseconds(1000));
}

}  // namespace
}  // namespace dispatch::detail
