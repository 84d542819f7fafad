#pragma once

// Sending and receiving LLMD/1 messages on ZeroMQ sockets (cppzmq), shared by broker, worker and
// client. It sits on the 20,000 msgs/s path, so it works on views and reuses its frame buffers.
//
//   DEALER side:  [tag, command, header, payload?]
//   ROUTER side:  [routing_id, tag, command, header, payload?]

#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::protocol {

enum class SendMode : uint8_t {
  // Waits while the peer's queue is full (HWM). Still returns false on EHOSTUNREACH (a ROUTER
  // with ZMQ_ROUTER_MANDATORY and an unknown routing id).
  blocking,
  // Never waits: returns false when the message could not be queued (EAGAIN: HWM reached or no
  // peer; EHOSTUNREACH: unknown routing id). Nothing was sent then.
  nonblocking,
};

// The frames of one message as views (nothing copied). An empty routing id means "none" (ZeroMQ
// never assigns an empty one). The payload frame is present exactly when the command has one.
class OutgoingFrames {
 public:
  OutgoingFrames(Command command, std::string_view header, std::string_view payload = {}) noexcept;
  OutgoingFrames(std::string_view routing_id, Command command, std::string_view header,
                 std::string_view payload = {}) noexcept;

  std::span<const std::string_view> frames() const noexcept { return {frames_.data(), count_}; }

 private:
  std::array<std::string_view, 5> frames_{};
  std::size_t count_ = 0;
};

// Sends the frames as one multipart message (sndmore on all but the last). Returns true when
// queued; false as SendMode describes. Other ZeroMQ failures (ETERM, ENOTSOCK …) throw
// zmq::error_t as cppzmq does. ZeroMQ queues a multipart message atomically: once the first
// frame is accepted the others are too, so `false` always means nothing was sent.
bool send_frames(zmq::socket_ref socket, std::span<const std::string_view> frames,
                 SendMode mode = SendMode::nonblocking);

// DEALER side: [tag, command, header, payload?].
bool send_message(zmq::socket_ref socket, Command command, std::string_view header,
                  std::string_view payload = {}, SendMode mode = SendMode::nonblocking);

// ROUTER side: [routing_id, tag, command, header, payload?].
bool send_routed(zmq::socket_ref socket, std::string_view routing_id, Command command,
                 std::string_view header, std::string_view payload = {},
                 SendMode mode = SendMode::nonblocking);

// One received message. Keep one instance per socket and reuse it: the frames are recycled, so
// a steady loop does not allocate (beyond what libzmq itself does for large frames).
class IncomingMessage {
 public:
  // Routing id + the 4 protocol frames + 1 so that "too many frames" is still visible.
  static constexpr std::size_t kMaxFrames = 6;

  // Receives all frames of one message without blocking. `routed`: the socket is a ROUTER and
  // the first frame is the routing id. Returns false when no message was waiting. Frames past
  // kMaxFrames are received and dropped (frame_count() still counts them), so a hostile peer
  // cannot make us buffer without bound; parse() then reports bad_frame_count.
  // Throws zmq::error_t only for real socket failures (ETERM, ENOTSOCK …).
  bool receive(zmq::socket_ref socket, bool routed);

  // Empty unless received with routed = true.
  std::string_view routing_id() const noexcept { return routing_id_; }
  // The frames after the routing id (at most kMaxFrames of them are kept).
  std::span<const std::string_view> protocol_frames() const noexcept {
    return {views_.data() + first_protocol_frame_, stored_ - first_protocol_frame_};
  }
  // Frames as received, including the routing id and any dropped extras.
  std::size_t frame_count() const noexcept { return total_; }

  // parse_frames() over protocol_frames(); the views stay valid until the next receive().
  Decoded<FrameView> parse() const { return parse_frames(protocol_frames()); }

  // Direct access, e.g. to forward a large payload frame without copying it (move it out; the
  // slot is refilled by the next receive()).
  zmq::message_t& frame(std::size_t index) { return frames_.at(index); }

 private:
  std::array<zmq::message_t, kMaxFrames> frames_;
  std::array<std::string_view, kMaxFrames> views_{};
  std::string_view routing_id_;
  std::size_t stored_ = 0;
  std::size_t total_ = 0;
  std::size_t first_protocol_frame_ = 0;
};

// Sets ZMQ_MAXMSGSIZE to Limits::max_message_bytes: libzmq then disconnects a peer that sends a
// bigger frame before we ever buffer it. Every LLMD socket should have it (before bind/connect).
void apply_protocol_socket_options(zmq::socket_ref socket);

}  // namespace dispatch::protocol
