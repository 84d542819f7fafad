#pragma once

// The values behind schemas/golden/golden.json. The generator writes the file from them; the
// test checks encode(value) == the file's bytes and decode(the file's bytes) == value.

#include <functional>
#include <string>
#include <vector>

#include "dispatch/common/strings.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::protocol::testing {

struct GoldenCase {
  std::string name;
  std::string type;     // C++ / PROTOCOL.md struct name
  std::string command;  // the command whose frame this is
  std::string frame;    // "header" or "payload"
  std::string bytes;    // encode(value)
  // Decodes `bytes` as the case's type; returns "" when the result equals the value, else why not.
  std::function<std::string(std::string_view)> check_decode;
};

std::vector<GoldenCase> golden_cases();

// The individual values, for tests that want them typed.
Submit golden_submit_minimal();
Request golden_request_full();
Response golden_response();
Error golden_error();
ChunkHeader golden_chunk_tool_call();
ResetHeader golden_reset();
Ready golden_ready();
StatusReply golden_status_reply();
StatusReply golden_status_reply_scoped();
ProviderHealth golden_provider_health();

// The inverse of dispatch::to_hex (dispatch/common/strings.hpp), for the file's "hex" fields.
std::string from_hex(std::string_view hex);

}  // namespace dispatch::protocol::testing
