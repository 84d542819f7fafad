// The checks that run before anything is decoded: the structural msgpack pre-scan and the frame
// envelope. Both look at untrusted bytes, so neither allocates on the success path nor trusts a
// declared length.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/common/strings.hpp"
#include "dispatch/protocol/codec.hpp"
#include "msgpack_format.hpp"

namespace dispatch::protocol {
namespace {

using detail::Family;
using detail::Head;
using detail::kTypeBytes;

DecodeError malformed(std::string message) {
  return DecodeError{DecodeError::Code::malformed, std::move(message)};
}

// Per family, what a str / bin / ext / array / map may declare and how errors name it.
struct LengthRule {
  const char* name;
  std::size_t limit;
};
constexpr LengthRule length_rule(Family family) {
  switch (family) {
    case Family::str:
      return {"str", Limits::max_str};
    case Family::bin:
      return {"bin", Limits::max_bin};
    case Family::ext:
      return {"ext", Limits::max_ext};
    case Family::array:
      return {"array", Limits::max_array};
    case Family::map:
      return {"map", Limits::max_map};
    default:
      return {"value", SIZE_MAX};
  }
}

// What the pre-scan found wrong, for the error message (built only then, off the hot path).
enum class Problem : uint8_t {
  reserved_byte,   // 0xc1
  value_expected,  // the input ended where a value should start
  length_cut,      // the input ended inside a length field
  number_cut,      // ... inside an int or float (need = its bytes)
  over_limit,      // a declared length / count over Limits (need = it)
  body_cut,        // a str / bin / ext body longer than what remains (need = its bytes)
  too_deep,        // a container inside max_depth others
  items_cut,       // a container declaring more items than bytes remain (need = its count)
  pending_cut,     // all declared values together cannot fit (need = how many)
};

// A problem and the numbers its message quotes.
struct Finding {
  Problem problem = Problem::value_expected;
  Family family = Family::nil;
  std::size_t at = 0;         // offset of the value's type byte
  uint64_t need = 0;          // see Problem
  std::size_t remaining = 0;  // bytes left after the value's head
};

[[gnu::cold]] DecodeError describe(const Finding& finding) {
  const auto [problem, family, at, need, remaining] = finding;
  const std::string where = " at byte " + std::to_string(at);
  const std::string what = length_rule(family).name;
  const std::string limit = std::to_string(length_rule(family).limit);
  const std::string n = std::to_string(need);
  const std::string left = std::to_string(remaining);
  switch (problem) {
    case Problem::reserved_byte:
      return malformed("reserved byte 0xc1" + where);
    case Problem::value_expected:
      return malformed("truncated: value expected" + where);
    case Problem::length_cut:
      return malformed("truncated: length field" + where);
    case Problem::number_cut:
    case Problem::body_cut:
      return malformed(what + where + " needs " + n + " bytes, " + left + " remain");
    case Problem::over_limit: {
      const bool counted = family == Family::array || family == Family::map;
      return malformed(
          what + where +
          (counted ? " declares " + n + " entries, limit " : " is " + n + " bytes, limit ") +
          limit);
    }
    case Problem::too_deep:
      return malformed("nesting deeper than " + std::to_string(Limits::max_depth) + where);
    case Problem::items_cut:
      return malformed(what + where + " declares " + n + " entries but only " + left +
                       " bytes remain");
    case Problem::pending_cut:
      return malformed("truncated: " + n + " declared values cannot fit in the " + left +
                       " bytes after byte " + std::to_string(at));
  }
  return malformed("undecodable" + where);
}

// The structural pre-scan of one msgpack value: a cursor over the bytes and, for each open
// container, how many of its items have yet to start (a map counts keys and values).
class Scanner {
 public:
  using OpenContainers = std::array<uint32_t, Limits::max_depth>;

  Scanner(std::string_view bytes, OpenContainers& open)
      : p_(reinterpret_cast<const unsigned char*>(bytes.data())), n_(bytes.size()), open_(open) {}

  std::optional<DecodeError> run() {
    do {
      if (!step()) return describe(finding_);
      // Close every container whose last item has now completed.
      while (depth_ > 0 && open_[depth_ - 1] == 0) --depth_;
    } while (depth_ > 0);
    if (pos_ != n_) return malformed(std::to_string(n_ - pos_) + " trailing bytes after the value");
    return std::nullopt;
  }

 private:
  // The scan stops at the first problem: step() and its helpers note it and return false, and
  // run() words the message (off the hot path, so the cursor can stay in registers).
  bool fail(Problem problem, Family family, std::size_t at, uint64_t need = 0) {
    finding_ = {problem, family, at, need, n_ - pos_};
    return false;
  }

  // One value: its head, then its body (str / bin / ext) or its container bookkeeping.
  bool step() {
    const std::size_t at = pos_;
    if (at >= n_) return fail(Problem::value_expected, Family::nil, at);
    const detail::TypeByte& type = kTypeBytes[p_[at]];
    if (depth_ > 0) --open_[depth_ - 1];
    --pending_;
    if (type.family == Family::reserved) return fail(Problem::reserved_byte, type.family, at);
    pos_ = at + 1;
    if (type.width > n_ - pos_) {
      const bool length = detail::has_length(type.family);
      return fail(length ? Problem::length_cut : Problem::number_cut, type.family, at, type.width);
    }
    if (!detail::has_length(type.family)) {
      pos_ += type.width;  // nil, bool, int, float: the head was all of it
      return true;
    }
    const uint64_t length =
        type.width == 0 ? type.inline_value : detail::read_be(p_ + pos_, type.width);
    pos_ += type.width;
    const Head head{type.family, length};
    if (type.family == Family::array || type.family == Family::map) {
      return open_container(head, at);
    }
    return skip_body(head, at);
  }

  bool skip_body(const Head& head, std::size_t at) {
    if (head.value > length_rule(head.family).limit) {
      return fail(Problem::over_limit, head.family, at, head.value);
    }
    const bool ext = head.family == Family::ext;
    const uint64_t body = head.value + (ext ? 1 : 0);  // ext: its type byte, then the data
    if (body > n_ - pos_) return fail(Problem::body_cut, head.family, at, body);
    pos_ += static_cast<std::size_t>(body);
    return true;
  }

  bool open_container(const Head& head, std::size_t at) {
    if (head.value > length_rule(head.family).limit) {
      return fail(Problem::over_limit, head.family, at, head.value);
    }
    if (depth_ >= Limits::max_depth) return fail(Problem::too_deep, head.family, at);
    const std::size_t remaining = n_ - pos_;
    const uint64_t items = head.family == Family::map ? 2 * head.value : head.value;
    if (items > remaining) return fail(Problem::items_cut, head.family, at, head.value);
    // Every declared value needs at least one byte, so more of them than bytes left proves the
    // input cannot be complete: that is what rejects a 5-byte message declaring 4 billion
    // elements before anything is allocated.
    pending_ += items;
    if (pending_ > remaining) return fail(Problem::pending_cut, head.family, at, pending_);
    if (items > 0) open_[depth_++] = static_cast<uint32_t>(items);
    return true;
  }

  const unsigned char* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
  // Items still to start per open container (at most 2 * max_map or max_array: 32 bits hold
  // them). An array indexed at run time must live in memory; kept outside this object, it lets
  // the compiler keep the cursor and the counters in registers.
  OpenContainers& open_;
  std::size_t depth_ = 0;
  uint64_t pending_ = 1;  // values declared but not yet started, over all open containers
  Finding finding_;
};

}  // namespace

std::optional<DecodeError> validate_msgpack(std::string_view bytes) {
  if (bytes.empty()) return malformed("empty message");
  if (bytes.size() > Limits::max_message_bytes) {
    return malformed("message of " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                     std::to_string(Limits::max_message_bytes));
  }
  Scanner::OpenContainers open{};
  return Scanner(bytes, open).run();
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
