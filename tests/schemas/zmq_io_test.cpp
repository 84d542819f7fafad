// send/receive helpers over a real ROUTER/DEALER pair (inproc, so no ports and no timing; one
// test of the frame limit needs loopback TCP).

#include "dispatch/protocol/zmq_io.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <vector>

namespace dispatch::protocol {
namespace {

using namespace std::chrono_literals;

// Polls until a message arrives or the deadline passes; never sleeps blindly.
bool receive_within(zmq::socket_t& socket, IncomingMessage& in, bool routed,
                    std::chrono::milliseconds deadline = 2000ms) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (int round = 0; round < 1000 && std::chrono::steady_clock::now() < until; ++round) {
    if (in.receive(socket, routed)) return true;
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 20ms);
  }
  return false;
}

class ZmqIo : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    endpoint_ = "inproc://protocol-zmq-io-" + std::to_string(++counter);
    router_.set(zmq::sockopt::router_mandatory, 1);
    apply_protocol_socket_options(router_);
    router_.bind(endpoint_);
    dealer_.set(zmq::sockopt::routing_id, "client-1");
    dealer_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::linger, 0);
    apply_protocol_socket_options(dealer_);
    dealer_.connect(endpoint_);
  }

  zmq::context_t context_{1};
  zmq::socket_t router_{context_, zmq::socket_type::router};
  zmq::socket_t dealer_{context_, zmq::socket_type::dealer};
  std::string endpoint_;
};

TEST_F(ZmqIo, SocketOptionSetsTheFrameLimit) {
  EXPECT_EQ(router_.get(zmq::sockopt::maxmsgsize), static_cast<int64_t>(Limits::max_message_bytes));
}

TEST_F(ZmqIo, DealerToRouterAndBack) {
  const std::string header = encode(Submit{"job-1", "ollama", Priority::normal, 0, true, ""});
  const std::string payload(1 << 20, 'p');  // a large payload frame survives intact
  ASSERT_TRUE(send_message(dealer_, Command::submit, header, payload));

  IncomingMessage at_router;
  ASSERT_TRUE(receive_within(router_, at_router, true));
  EXPECT_EQ(at_router.routing_id(), "client-1");
  EXPECT_EQ(at_router.frame_count(), 5u);
  auto parsed = at_router.parse();
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed.value().command, Command::submit);
  EXPECT_EQ(parsed.value().header, header);
  EXPECT_EQ(parsed.value().payload, payload);
  auto submit = decode<Submit>(parsed.value().header);
  ASSERT_TRUE(submit);
  EXPECT_EQ(submit.value().job_id, "job-1");

  const std::string reply = encode(Accepted{"job-1", "broker-1", false});
  ASSERT_TRUE(send_routed(router_, at_router.routing_id(), Command::accepted, reply));
  IncomingMessage at_dealer;
  ASSERT_TRUE(receive_within(dealer_, at_dealer, false));
  EXPECT_TRUE(at_dealer.routing_id().empty());
  auto accepted = at_dealer.parse();
  ASSERT_TRUE(accepted) << accepted.error().message;
  EXPECT_EQ(accepted.value().command, Command::accepted);
  EXPECT_EQ(accepted.value().header, reply);
}

TEST_F(ZmqIo, NothingWaitingReturnsFalse) {
  IncomingMessage in;
  EXPECT_FALSE(in.receive(router_, true));
  EXPECT_FALSE(in.receive(dealer_, false));
}

TEST_F(ZmqIo, UnknownRoutingIdIsFalseNotAThrow) {
  EXPECT_FALSE(send_routed(router_, "nobody", Command::heartbeat, kEmptyMap));
  EXPECT_FALSE(
      send_routed(router_, "nobody", Command::heartbeat, kEmptyMap, {}, SendMode::blocking));
}

TEST_F(ZmqIo, DealerWithoutPeerWouldBlock) {
  zmq::socket_t lonely(context_, zmq::socket_type::dealer);
  lonely.set(zmq::sockopt::linger, 0);
  EXPECT_FALSE(send_message(lonely, Command::heartbeat, kEmptyMap));
}

TEST_F(ZmqIo, TooManyFramesAreDrainedAndReported) {
  std::vector<std::string_view> frames = {"LLMD1", "cancel", "h", "1", "2", "3", "4", "5", "6"};
  ASSERT_TRUE(send_frames(dealer_, frames));
  ASSERT_TRUE(send_message(dealer_, Command::cancel, encode(Cancel{"after"})));

  IncomingMessage in;
  ASSERT_TRUE(receive_within(router_, in, true));
  EXPECT_EQ(in.frame_count(), 10u);
  auto parsed = in.parse();
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().code, DecodeError::Code::bad_frame_count);

  // The extra frames did not bleed into the next message.
  ASSERT_TRUE(receive_within(router_, in, true));
  auto next = in.parse();
  ASSERT_TRUE(next) << next.error().message;
  auto cancel = decode<Cancel>(next.value().header);
  ASSERT_TRUE(cancel);
  EXPECT_EQ(cancel.value().job_id, "after");
}

TEST_F(ZmqIo, OneIncomingMessageReusedForManyMessages) {
  constexpr int kCount = 2000;
  int sent = 0;
  int received = 0;
  IncomingMessage in;
  // Interleave so neither side's queue fills; bounded by count.
  for (int round = 0; round < kCount * 4 && received < kCount; ++round) {
    if (sent < kCount) {
      const std::string header = encode(Heartbeat{"w", static_cast<uint32_t>(sent)});
      if (send_message(dealer_, Command::heartbeat, header)) ++sent;
    }
    while (in.receive(router_, true)) {
      auto parsed = in.parse();
      ASSERT_TRUE(parsed);
      auto beat = decode<Heartbeat>(parsed.value().header);
      ASSERT_TRUE(beat);
      EXPECT_EQ(beat.value().in_flight, static_cast<uint32_t>(received));
      ++received;
    }
  }
  // Whatever is still in flight arrives within the deadline.
  while (received < kCount && receive_within(router_, in, true)) ++received;
  EXPECT_EQ(received, kCount);
}

// ZMQ_MAXMSGSIZE acts on stream transports only (not inproc), so this one runs over loopback
// TCP: a frame of exactly Limits::max_message_bytes arrives; one byte more costs the sender its
// connection and never arrives (PROTOCOL.md, Limits).
TEST(ZmqIoTcp, ExactlyTheFrameLimitArrivesAndOneByteMoreDoesNot) {
  zmq::context_t context{1};
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t dealer{context, zmq::socket_type::dealer};
  router.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::linger, 0);
  apply_protocol_socket_options(router);
  router.bind("tcp://127.0.0.1:*");
  dealer.set(zmq::sockopt::routing_id, "client-1");
  dealer.set(zmq::sockopt::reconnect_ivl, 10);
  dealer.connect(router.get(zmq::sockopt::last_endpoint));

  const std::string header = encode(Submit{"job-1", "ollama", Priority::normal, 0, false, ""});
  const std::string exact(Limits::max_message_bytes, 'x');
  ASSERT_TRUE(send_message(dealer, Command::submit, header, exact, SendMode::blocking));
  IncomingMessage in;
  ASSERT_TRUE(receive_within(router, in, true, 30s));
  auto parsed = in.parse();
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed.value().payload.size(), Limits::max_message_bytes);

  const std::string over(Limits::max_message_bytes + 1, 'x');
  ASSERT_TRUE(send_message(dealer, Command::submit, header, over, SendMode::blocking));
  // The router drops that connection and the dealer reconnects; small probes are sent until
  // one gets through. Nothing received before it may be the oversized frame.
  const std::string probe_header =
      encode(Submit{"probe", "ollama", Priority::normal, 0, false, ""});
  const auto until = std::chrono::steady_clock::now() + 30s;
  bool probed = false;
  while (!probed && std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(send_message(dealer, Command::submit, probe_header, "p", SendMode::blocking));
    while (receive_within(router, in, true, 100ms)) {
      auto message = in.parse();
      ASSERT_TRUE(message) << message.error().message;
      ASSERT_LT(message.value().payload.size(), Limits::max_message_bytes);
      probed = true;
    }
  }
  EXPECT_TRUE(probed) << "the connection never came back";
}

}  // namespace
}  // namespace dispatch::protocol
