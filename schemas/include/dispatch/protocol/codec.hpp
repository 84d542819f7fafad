#pragma once

// msgpack encoding of every protocol type, and safe decoding of untrusted bytes.
//
// Encoding: each struct is one msgpack map keyed by field name (PROTOCOL.md lists the keys).
// Optional fields that are unset are omitted; empty strings / empty arrays may be omitted.
// Decoding: unknown keys are ignored; a missing required key, a value of the wrong type, a
// size over the limits, a declared count that the remaining bytes cannot hold, or trailing
// bytes give a DecodeError. Decoding never throws, and whatever the input it allocates at most
// Limits::decode_ratio times the input's size plus Limits::decode_slack bytes (a message that
// would need more fails `malformed`, "decoded size would exceed 8x its N bytes").

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dispatch/common/result.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::protocol {

// Hard limits on what any peer accepts. Also documented in PROTOCOL.md ("Limits").
struct Limits {
  static constexpr std::size_t max_message_bytes = 16u << 20;  // ZMQ_MAXMSGSIZE per frame
  static constexpr std::size_t max_depth = 16;
  static constexpr std::size_t max_array = 100'000;
  static constexpr std::size_t max_map = 10'000;
  static constexpr std::size_t max_str = 16u << 20;
  static constexpr std::size_t max_bin = 16u << 20;
  static constexpr std::size_t max_ext = 1u << 20;
  static constexpr std::size_t max_job_id = 128;
  static constexpr std::size_t max_tenant = 128;  // Submit.tenant
  // Memory one decode<T> may allocate: decode_ratio times the frame's size plus decode_slack,
  // counted before allocating. Ordinary messages are text and take about their own size; the
  // bound is for hostile ones (an array of empty maps decoding to a struct each).
  static constexpr std::size_t decode_ratio = 8;
  static constexpr std::size_t decode_slack = 64u << 10;
};

struct DecodeError {
  enum class Code : uint8_t {
    malformed,         // not msgpack, truncated, trailing bytes, over a limit
    wrong_type,        // a field has the wrong msgpack type
    missing_field,     // a required field is absent
    invalid_value,     // well-typed but out of range (e.g. empty job_id, unknown priority)
    bad_tag,           // frame 0 is not an LLMD tag
    version_mismatch,  // frame 0 is LLMD with another version
    unknown_command,   // frame 1 names no command we know
    bad_frame_count,   // wrong number of frames for the command
  };
  Code code = Code::malformed;
  std::string message;  // names the field where there is one, e.g. "messages[2].role: expected str"
};

std::string_view to_string(DecodeError::Code code) noexcept;
std::optional<DecodeError::Code> decode_error_code_from_string(std::string_view name) noexcept;

// What decoding returns: the value, or the DecodeError saying why not. The project's one
// Result type (ok(), value(), error(), operator bool); the alias only names its use here.
template <class T>
using Decoded = dispatch::Result<T, DecodeError>;

// encode(x) -> msgpack bytes of one map. decode<T>(bytes) -> T or DecodeError.
std::string encode(const Request& v);
std::string encode(const Response& v);
std::string encode(const Error& v);
std::string encode(const Submit& v);
std::string encode(const Accepted& v);
std::string encode(const Rejected& v);
std::string encode(const Cancel& v);
std::string encode(const JobHeader& v);
std::string encode(const JobEnd& v);
std::string encode(const Chunk& v);
std::string encode(const ChunkHeader& v);
std::string encode(const StreamReset& v);
std::string encode(const ResetHeader& v);
std::string encode(const Ready& v);
std::string encode(const Credit& v);
std::string encode(const Heartbeat& v);
std::string encode(const Disconnect& v);
std::string encode(const StatusReply& v);
// Nested structs on their own (tests, tools, other-language fixtures).
std::string encode(const ToolCall& v);
std::string encode(const Message& v);
std::string encode(const Tool& v);
std::string encode(const Target& v);
std::string encode(const Usage& v);
std::string encode(const Attempt& v);
std::string encode(const ToolCallDelta& v);
std::string encode(const ProviderCounters& v);
std::string encode(const WorkerStatus& v);
std::string encode(const ProviderHealth& v);
std::string encode(const QuotaStatus& v);

// The header of a `status` request: an empty msgpack map.
inline constexpr std::string_view kEmptyMap{"\x80", 1};

template <class T>
Decoded<T> decode(std::string_view bytes);

// Structural check of one msgpack value against Limits, without allocating: every declared
// array/map/str/bin/ext length must fit in the bytes that remain, nesting within max_depth,
// and exactly one value must fill the buffer. decode<T> runs it first.
std::optional<DecodeError> validate_msgpack(std::string_view bytes);

// Frames after the routing envelope: [tag, command, header, payload?].
struct FrameView {
  Command command;
  std::string_view header;
  std::string_view payload;  // empty unless command_has_payload(command)
};

Decoded<FrameView> parse_frames(std::span<const std::string_view> frames);

// Best effort: the "job_id" of a header that did not decode (so a rejection can still name the
// job). Returns "" unless `header` is well-formed msgpack whose top-level map holds a valid job_id.
std::string extract_job_id(std::string_view header) noexcept;

// The `rejected` reply to undecodable input, as PROTOCOL.md prescribes: kind invalid_request,
// code "version_mismatch" / "unknown_command" / "malformed", message from the error.
Rejected make_rejected(const DecodeError& error, std::string job_id = {});

}  // namespace dispatch::protocol
