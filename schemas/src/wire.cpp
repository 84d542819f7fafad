// The checks that run before anything is decoded: the structural msgpack pre-scan and the frame
// envelope. Both look at untrusted bytes, so neither allocates on the success path nor trusts a
// declared length.

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::protocol {
namespace {

DecodeError malformed(std::string message) {
  return DecodeError{DecodeError::Code::malformed, std::move(message)};
}

uint64_t read_be(const unsigned char* p, std::size_t width) noexcept {
  uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value = (value << 8) | p[i];
  return value;
}

// Printable, bounded rendering of peer-supplied bytes for an error message.
std::string printable(std::string_view bytes, std::size_t max = 32) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  if (bytes.size() > max) out += "...";
  return out;
}

enum class Kind : uint8_t { scalar, str, bin, ext, array, map };

}  // namespace

std::optional<DecodeError> validate_msgpack(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  if (n == 0) return malformed("empty message");
  if (n > Limits::max_message_bytes) {
    return malformed("message of " + std::to_string(n) + " bytes exceeds the limit of " +
                     std::to_string(Limits::max_message_bytes));
  }

  // Items still to start in each open container (a map counts keys and values).
  std::array<uint64_t, Limits::max_depth> open{};
  std::size_t depth = 0;
  // Values declared but not yet started, over all open containers. Each needs at least one byte,
  // so pending > remaining bytes proves the input cannot be complete: that is what rejects a
  // 5-byte message declaring 4 billion elements before anything is allocated.
  uint64_t pending = 1;
  std::size_t pos = 0;

  while (true) {
    if (pos >= n) return malformed("truncated: value expected at byte " + std::to_string(pos));
    const std::size_t at = pos;
    const unsigned char b = p[pos++];
    if (depth > 0) --open[depth - 1];
    --pending;

    Kind kind = Kind::scalar;
    uint64_t size = 0;      // payload bytes (scalar/str/bin/ext) or element count
    std::size_t width = 0;  // bytes of the length field
    if (b <= 0x7F || b >= 0xE0) {
      // positive / negative fixint
    } else if (b <= 0x8F) {
      kind = Kind::map;
      size = b & 0x0Fu;
    } else if (b <= 0x9F) {
      kind = Kind::array;
      size = b & 0x0Fu;
    } else if (b <= 0xBF) {
      kind = Kind::str;
      size = b & 0x1Fu;
    } else {
      switch (b) {
        case 0xC0:
        case 0xC2:
        case 0xC3:
          break;  // nil, false, true
        case 0xC1:
          return malformed("reserved byte 0xc1 at byte " + std::to_string(at));
        case 0xC4:
          kind = Kind::bin;
          width = 1;
          break;
        case 0xC5:
          kind = Kind::bin;
          width = 2;
          break;
        case 0xC6:
          kind = Kind::bin;
          width = 4;
          break;
        case 0xC7:
          kind = Kind::ext;
          width = 1;
          break;
        case 0xC8:
          kind = Kind::ext;
          width = 2;
          break;
        case 0xC9:
          kind = Kind::ext;
          width = 4;
          break;
        case 0xCA:
          size = 4;
          break;  // float32
        case 0xCB:
          size = 8;
          break;  // float64
        case 0xCC:
        case 0xD0:
          size = 1;
          break;  // (u)int8
        case 0xCD:
        case 0xD1:
          size = 2;
          break;  // (u)int16
        case 0xCE:
        case 0xD2:
          size = 4;
          break;  // (u)int32
        case 0xCF:
        case 0xD3:
          size = 8;
          break;  // (u)int64
        case 0xD4:
          kind = Kind::ext;
          size = 1;
          break;  // fixext 1
        case 0xD5:
          kind = Kind::ext;
          size = 2;
          break;
        case 0xD6:
          kind = Kind::ext;
          size = 4;
          break;
        case 0xD7:
          kind = Kind::ext;
          size = 8;
          break;
        case 0xD8:
          kind = Kind::ext;
          size = 16;
          break;
        case 0xD9:
          kind = Kind::str;
          width = 1;
          break;
        case 0xDA:
          kind = Kind::str;
          width = 2;
          break;
        case 0xDB:
          kind = Kind::str;
          width = 4;
          break;
        case 0xDC:
          kind = Kind::array;
          width = 2;
          break;
        case 0xDD:
          kind = Kind::array;
          width = 4;
          break;
        case 0xDE:
          kind = Kind::map;
          width = 2;
          break;
        case 0xDF:
          kind = Kind::map;
          width = 4;
          break;
        default:
          return malformed("unknown type byte at byte " + std::to_string(at));
      }
    }
    if (width > 0) {
      if (width > n - pos) {
        return malformed("truncated: length field at byte " + std::to_string(at));
      }
      size = read_be(p + pos, width);
      pos += width;
    }
    const std::size_t remaining = n - pos;

    switch (kind) {
      case Kind::scalar:
      case Kind::str:
      case Kind::bin:
      case Kind::ext: {
        std::size_t limit = SIZE_MAX;
        const char* what = "value";
        if (kind == Kind::str) limit = Limits::max_str, what = "str";
        if (kind == Kind::bin) limit = Limits::max_bin, what = "bin";
        if (kind == Kind::ext) limit = Limits::max_ext, what = "ext";
        if (size > limit) {
          return malformed(std::string(what) + " at byte " + std::to_string(at) + " is " +
                           std::to_string(size) + " bytes, limit " + std::to_string(limit));
        }
        const uint64_t body = size + (kind == Kind::ext ? 1 : 0);  // ext: type byte
        if (body > remaining) {
          return malformed(std::string(what) + " at byte " + std::to_string(at) + " needs " +
                           std::to_string(body) + " bytes, " + std::to_string(remaining) +
                           " remain");
        }
        pos += static_cast<std::size_t>(body);
        break;
      }
      case Kind::array:
      case Kind::map: {
        const bool is_map = kind == Kind::map;
        const char* what = is_map ? "map" : "array";
        const std::size_t limit = is_map ? Limits::max_map : Limits::max_array;
        if (size > limit) {
          return malformed(std::string(what) + " at byte " + std::to_string(at) + " declares " +
                           std::to_string(size) + " entries, limit " + std::to_string(limit));
        }
        if (depth >= Limits::max_depth) {
          return malformed("nesting deeper than " + std::to_string(Limits::max_depth) +
                           " at byte " + std::to_string(at));
        }
        const uint64_t items = is_map ? 2 * size : size;
        if (items > remaining) {
          return malformed(std::string(what) + " at byte " + std::to_string(at) + " declares " +
                           std::to_string(size) + " entries but only " + std::to_string(remaining) +
                           " bytes remain");
        }
        pending += items;
        if (pending > remaining) {
          return malformed("truncated: " + std::to_string(pending) +
                           " declared values cannot fit in the " + std::to_string(remaining) +
                           " bytes after byte " + std::to_string(at));
        }
        if (items > 0) open[depth++] = items;
        break;
      }
    }
    // Close every container whose last item has now completed.
    while (depth > 0 && open[depth - 1] == 0) --depth;
    if (depth == 0) break;
  }
  if (pos != n) {
    return malformed(std::to_string(n - pos) + " trailing bytes after the value");
  }
  return std::nullopt;
}

Decoded<FrameView> parse_frames(std::span<const std::string_view> frames) {
  using Code = DecodeError::Code;
  if (frames.empty()) return DecodeError{Code::bad_frame_count, "no frames"};
  const std::string_view tag = frames[0];
  if (tag != kProtocolTag) {
    if (tag.substr(0, kProtocolPrefix.size()) == kProtocolPrefix) {
      return DecodeError{
          Code::version_mismatch,
          "peer speaks " + printable(tag) + ", this peer speaks " + std::string(kProtocolTag)};
    }
    return DecodeError{Code::bad_tag, "frame 0 is not the protocol tag " +
                                          std::string(kProtocolTag) + " (got '" + printable(tag) +
                                          "')"};
  }
  if (frames.size() < 2) return DecodeError{Code::bad_frame_count, "no command frame"};
  const auto command = command_from_string(frames[1]);
  if (!command) {
    return DecodeError{Code::unknown_command, "unknown command '" + printable(frames[1]) + "'"};
  }
  const std::size_t expected = command_has_payload(*command) ? 4 : 3;
  if (frames.size() != expected) {
    return DecodeError{Code::bad_frame_count, std::string(to_string(*command)) + " takes " +
                                                  std::to_string(expected) + " frames, got " +
                                                  std::to_string(frames.size())};
  }
  for (std::size_t i = 2; i < frames.size(); ++i) {
    if (frames[i].size() > Limits::max_message_bytes) {
      return malformed("frame " + std::to_string(i) + " of " + std::to_string(frames[i].size()) +
                       " bytes exceeds the limit of " + std::to_string(Limits::max_message_bytes));
    }
  }
  return FrameView{*command, frames[2], expected == 4 ? frames[3] : std::string_view{}};
}

Rejected make_rejected(const DecodeError& error, std::string job_id) {
  Rejected rejected;
  rejected.job_id = std::move(job_id);
  rejected.kind = ErrorKind::invalid_request;
  switch (error.code) {
    case DecodeError::Code::version_mismatch:
      rejected.code = "version_mismatch";
      break;
    case DecodeError::Code::unknown_command:
      rejected.code = "unknown_command";
      break;
    default:
      rejected.code = "malformed";
      break;
  }
  rejected.message = error.message.empty() ? std::string(to_string(error.code)) : error.message;
  return rejected;
}

}  // namespace dispatch::protocol
