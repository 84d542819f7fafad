#pragma once

// The boundary between the broker's decisions (BrokerCore, no sockets) and the ZeroMQ loop.

#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/messages.hpp"

namespace dispatch::broker {

// One protocol message after (incoming) or before (outgoing) the ROUTER routing frame:
// [tag, command, header, payload?]. zmq::message_t so that a worker's result or chunk is
// relayed to the client without copying or re-encoding its bytes.
using Frames = std::vector<zmq::message_t>;

enum class SendStatus {
  sent,
  would_block,  // the peer's pipe is at its high-water mark
  unreachable,  // no such peer (it disconnected)
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Never blocks. The transport buffers for slow clients and drops per its policy; the core
  // does not need to know the outcome (finished results stay stored for resubmits).
  virtual void send_to_client(std::string_view route, protocol::Command command, Frames frames) = 0;
  // Never blocks. Anything but `sent` means the worker is unusable; the core treats it as lost.
  virtual SendStatus send_to_worker(std::string_view route, Frames frames) = 0;
  // True when messages from workers have arrived but not been handed to the core yet (the loop
  // is behind). The core then does not take a worker's silence for death: the proof of life
  // may be in that backlog. A transport without such a backlog keeps the default.
  virtual bool worker_input_pending() { return false; }
};

// [tag, command, header, payload?] with fresh frames.
Frames make_frames(protocol::Command command, std::string_view header);
Frames make_frames(protocol::Command command, std::string_view header, std::string_view payload);

// A copy that shares the bytes of large frames (zmq_msg_copy is reference counted).
Frames share_frames(Frames& frames);

// A frame to keep for long (a queued request, a stored result). libzmq hands out received
// frames smaller than its 8 KiB receive batch as references into a shared buffer; keeping one
// such frame would pin the whole buffer, so small frames are copied into their own memory.
// Larger frames have their own allocation already and are shared.
zmq::message_t keep_frame(zmq::message_t& frame);
Frames keep_frames(Frames& frames);

inline std::string_view view(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

}  // namespace dispatch::broker
