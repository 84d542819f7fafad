#pragma once

// A job's final message (result or error) encoded to fit one protocol frame. libzmq refuses a
// frame over Limits::max_message_bytes (ZMQ_MAXMSGSIZE at the broker drops the connection):
// sent anyway, it would cost a reconnect, the same result would be replayed on the new
// connection, and the worker would loop. So what does not fit is replaced before it is sent.

#include <cstddef>
#include <string>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::worker {

struct FinalMessage {
  protocol::Command command = protocol::Command::result;
  std::string payload;
};

// The result, or - when its encoding is over `max_frame_bytes` - an error invalid_request with
// code response_too_large naming the size, with the result's provider, model and attempts.
FinalMessage encode_result(const protocol::Response& response,
                           std::size_t max_frame_bytes = protocol::Limits::max_message_bytes);

// The error; when it does not fit, first without its attempt records, then with its message
// clipped.
FinalMessage encode_error(protocol::Error error,
                          std::size_t max_frame_bytes = protocol::Limits::max_message_bytes);

}  // namespace dispatch::worker
