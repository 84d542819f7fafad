#include "dispatch/broker/transport.hpp"

namespace dispatch::broker {

Frames make_frames(protocol::Command command, std::string_view header) {
  Frames frames;
  frames.reserve(4);
  frames.emplace_back(protocol::kProtocolTag.data(), protocol::kProtocolTag.size());
  const std::string_view name = protocol::to_string(command);
  frames.emplace_back(name.data(), name.size());
  frames.emplace_back(header.data(), header.size());
  return frames;
}

Frames make_frames(protocol::Command command, std::string_view header, std::string_view payload) {
  Frames frames = make_frames(command, header);
  frames.emplace_back(payload.data(), payload.size());
  return frames;
}

Frames share_frames(Frames& frames) {
  Frames copy;
  copy.reserve(frames.size());
  for (zmq::message_t& frame : frames) {
    copy.emplace_back();
    copy.back().copy(frame);
  }
  return copy;
}

zmq::message_t keep_frame(zmq::message_t& frame) {
  // libzmq's default ZMQ_IN_BATCH_SIZE: only frames that fit in one receive batch can be
  // references into it.
  constexpr std::size_t kReceiveBatchBytes = 8192;
  if (frame.size() < kReceiveBatchBytes) return zmq::message_t(frame.data(), frame.size());
  zmq::message_t shared;
  shared.copy(frame);
  return shared;
}

Frames keep_frames(Frames& frames) {
  Frames kept;
  kept.reserve(frames.size());
  for (zmq::message_t& frame : frames) kept.push_back(keep_frame(frame));
  return kept;
}

}  // namespace dispatch::broker
