#include "dispatch/protocol/zmq_io.hpp"

#include <cerrno>

namespace dispatch::protocol {
namespace {

std::string_view view_of(const zmq::message_t& message) noexcept {
  return {static_cast<const char*>(message.data()), message.size()};
}

}  // namespace

OutgoingFrames::OutgoingFrames(Command command, std::string_view header,
                               std::string_view payload) noexcept
    : OutgoingFrames({}, command, header, payload) {}

OutgoingFrames::OutgoingFrames(std::string_view routing_id, Command command,
                               std::string_view header, std::string_view payload) noexcept {
  if (!routing_id.empty()) frames_[count_++] = routing_id;
  frames_[count_++] = kProtocolTag;
  frames_[count_++] = to_string(command);
  frames_[count_++] = header;
  if (command_has_payload(command)) frames_[count_++] = payload;
}

bool send_frames(zmq::socket_ref socket, std::span<const std::string_view> frames, SendMode mode) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    // Only the first frame may wait or fail: libzmq queues a multipart message atomically, so
    // once it took the first frame the rest cannot hit the high-water mark.
    if (i == 0 && mode == SendMode::nonblocking) flags = flags | zmq::send_flags::dontwait;
    try {
      const auto sent = socket.send(zmq::const_buffer(frames[i].data(), frames[i].size()), flags);
      if (!sent) return false;  // EAGAIN
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) return false;
      throw;
    }
  }
  return true;
}

bool send_message(zmq::socket_ref socket, Command command, std::string_view header,
                  std::string_view payload, SendMode mode) {
  const OutgoingFrames out(command, header, payload);
  return send_frames(socket, out.frames(), mode);
}

bool send_routed(zmq::socket_ref socket, std::string_view routing_id, Command command,
                 std::string_view header, std::string_view payload, SendMode mode) {
  const OutgoingFrames out(routing_id, command, header, payload);
  return send_frames(socket, out.frames(), mode);
}

bool IncomingMessage::receive(zmq::socket_ref socket, bool routed) {
  stored_ = 0;
  total_ = 0;
  first_protocol_frame_ = 0;
  routing_id_ = {};
  if (!socket.recv(frames_[0], zmq::recv_flags::dontwait)) return false;
  views_[0] = view_of(frames_[0]);
  stored_ = 1;
  total_ = 1;
  bool more = frames_[0].more();
  zmq::message_t overflow;
  while (more) {
    zmq::message_t& target = stored_ < kMaxFrames ? frames_[stored_] : overflow;
    // The remaining parts are already here (atomic delivery), so this does not wait.
    if (!socket.recv(target, zmq::recv_flags::none)) break;
    ++total_;
    if (stored_ < kMaxFrames) views_[stored_++] = view_of(target);
    more = target.more();
  }
  if (routed) {
    routing_id_ = views_[0];
    first_protocol_frame_ = 1;
  }
  return true;
}

void apply_protocol_socket_options(zmq::socket_ref socket) {
  socket.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(Limits::max_message_bytes));
}

}  // namespace dispatch::protocol
