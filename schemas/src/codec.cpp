// msgpack encoding and decoding of every protocol struct.
//
// Each struct's wire form is described once, by a `fields(m, v)` function that hands every field
// (wire name, member, flags) to a visitor. The encoder, the decoder and the required-field check
// are visitors over that one description, so a name cannot differ between the two directions.
// Key order on the wire is the order in the description (= declaration order), which makes the
// encoding deterministic (golden vectors).

#include "dispatch/protocol/codec.hpp"

#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "dispatch/protocol/text.hpp"

namespace dispatch::protocol {
namespace {

// ---------------------------------------------------------------------------------------------
// Field flags

enum FieldFlag : unsigned {
  kOptional = 0,
  kRequired = 1u << 0,  // always written; absent (or nil) on decode -> missing_field
  kNonEmpty = 1u << 1,  // decode: an empty string / array -> invalid_value
  kJobId = 1u << 2,     // decode: 1..Limits::max_job_id bytes of valid UTF-8
};
constexpr unsigned kJobIdField = kRequired | kJobId;
constexpr unsigned kRequiredName = kRequired | kNonEmpty;

// ---------------------------------------------------------------------------------------------
// Wire descriptions. Keep them in declaration order; PROTOCOL.md documents the same tables.

template <class T>
inline constexpr bool kDescribed = false;

#define DISPATCH_FIELDS(Type)                         \
  template <>                                         \
  inline constexpr bool kDescribed<Type> = true;      \
  template <class M, class V>                         \
  requires std::same_as<std::remove_const_t<M>, Type> \
  void fields(M& m, V& v)

DISPATCH_FIELDS(ToolCall) {
  v("id", m.id);
  v("name", m.name);
  v("arguments", m.arguments);
}

DISPATCH_FIELDS(Message) {
  v("role", m.role, kRequiredName);
  v("content", m.content);
  v("thinking", m.thinking);
  v("images", m.images);
  v("tool_calls", m.tool_calls);
  v("tool_call_id", m.tool_call_id);
  v("tool_name", m.tool_name);
}

DISPATCH_FIELDS(Tool) {
  v("name", m.name, kRequiredName);
  v("description", m.description);
  v("parameters", m.parameters);
}

DISPATCH_FIELDS(Target) {
  v("provider", m.provider, kRequiredName);
  v("model", m.model, kRequiredName);
}

DISPATCH_FIELDS(Request) {
  v("provider", m.provider, kRequiredName);
  v("model", m.model, kRequiredName);
  v("messages", m.messages, kRequiredName);
  v("stream", m.stream);
  v("temperature", m.temperature);
  v("max_tokens", m.max_tokens);
  v("top_p", m.top_p);
  v("stop", m.stop);
  v("timeout_ms", m.timeout_ms);
  v("retry_count", m.retry_count);
  v("fallbacks", m.fallbacks);
  v("tools", m.tools);
  v("tool_choice", m.tool_choice);
  v("tool_choice_function", m.tool_choice_function);
  v("response_format", m.response_format);
  v("response_schema", m.response_schema);
  v("think", m.think);
  v("thinking_budget", m.thinking_budget);
  v("metadata", m.metadata);
}

DISPATCH_FIELDS(Usage) {
  v("prompt_tokens", m.prompt_tokens);
  v("completion_tokens", m.completion_tokens);
  v("total_tokens", m.total_tokens);
}

DISPATCH_FIELDS(Attempt) {
  v("provider", m.provider, kRequired);
  v("model", m.model, kRequired);
  v("outcome", m.outcome, kRequired);
  v("status", m.status);
  v("code", m.code);
  v("message", m.message);
  v("start_offset_ms", m.start_offset_ms);
  v("duration_ms", m.duration_ms);
  v("note", m.note);
}

DISPATCH_FIELDS(Response) {
  v("content", m.content);
  v("thinking", m.thinking);
  v("tool_calls", m.tool_calls);
  v("provider", m.provider, kRequired);
  v("model", m.model, kRequired);
  v("usage", m.usage);
  v("finish_reason", m.finish_reason);
  v("raw_finish_reason", m.raw_finish_reason);
  v("request_id", m.request_id);
  v("created_at", m.created_at);
  v("total_duration_ns", m.total_duration_ns);
  v("attempts", m.attempts);
  v("skipped_events", m.skipped_events);
}

DISPATCH_FIELDS(Error) {
  v("kind", m.kind, kRequired);
  v("message", m.message);
  v("status", m.status);
  v("code", m.code);
  v("provider", m.provider);
  v("model", m.model);
  v("attempts", m.attempts);
}

DISPATCH_FIELDS(ToolCallDelta) {
  v("index", m.index, kRequired);
  v("id", m.id);
  v("name", m.name);
  v("arguments", m.arguments);
}

DISPATCH_FIELDS(Chunk) {
  v("job_id", m.job_id, kJobIdField);
  v("seq", m.seq, kRequired);
  v("content", m.content);
  v("thinking", m.thinking);
  v("tool_calls", m.tool_calls);
}

DISPATCH_FIELDS(StreamReset) {
  v("job_id", m.job_id, kJobIdField);
  v("next_seq", m.next_seq, kRequired);
  v("reason", m.reason);
}

DISPATCH_FIELDS(Submit) {
  v("job_id", m.job_id, kJobIdField);
  v("provider", m.provider, kRequiredName);
  v("priority", m.priority);
  v("queue_timeout_ms", m.queue_timeout_ms);
  v("stream", m.stream);
}

DISPATCH_FIELDS(Accepted) {
  v("job_id", m.job_id, kJobIdField);
  v("broker_id", m.broker_id, kRequired);
  v("duplicate", m.duplicate);
}

DISPATCH_FIELDS(Rejected) {
  v("job_id", m.job_id);  // may be empty: the input was not readable far enough to know it
  v("kind", m.kind, kRequired);
  v("code", m.code);
  v("message", m.message);
}

DISPATCH_FIELDS(Cancel) {
  v("job_id", m.job_id, kJobIdField);
}

DISPATCH_FIELDS(JobHeader) {
  v("job_id", m.job_id, kJobIdField);
  v("delivery", m.delivery, kRequired);
  v("stream", m.stream);
}

DISPATCH_FIELDS(JobEnd) {
  v("job_id", m.job_id, kJobIdField);
  v("delivery", m.delivery);
}

// Flat: the chunk's own keys plus "delivery" in the same map, so a client can decode the header
// as a plain Chunk (it ignores the unknown key).
DISPATCH_FIELDS(ChunkHeader) {
  fields(m.chunk, v);
  v("delivery", m.delivery);
}

DISPATCH_FIELDS(ResetHeader) {
  fields(m.reset, v);
  v("delivery", m.delivery);
}

DISPATCH_FIELDS(HeldJob) {
  v("job_id", m.job_id, kJobIdField);
  v("delivery", m.delivery, kRequired);
}

DISPATCH_FIELDS(Ready) {
  v("worker_id", m.worker_id, kRequiredName);
  v("host", m.host);
  v("pid", m.pid);
  v("capacity", m.capacity, kRequired);
  v("providers", m.providers);
  v("version", m.version);
  v("jobs", m.jobs);
}

DISPATCH_FIELDS(Credit) {
  v("capacity", m.capacity, kRequired);
}

DISPATCH_FIELDS(Heartbeat) {
  v("sender_id", m.sender_id);
  v("in_flight", m.in_flight);
}

DISPATCH_FIELDS(Disconnect) {
  v("reason", m.reason);
}

DISPATCH_FIELDS(ProviderCounters) {
  v("submitted", m.submitted);
  v("succeeded", m.succeeded);
  v("failed", m.failed);
  v("retried", m.retried);
  v("fell_over", m.fell_over);
  v("prompt_tokens", m.prompt_tokens);
  v("completion_tokens", m.completion_tokens);
}

DISPATCH_FIELDS(WorkerStatus) {
  v("worker_id", m.worker_id, kRequired);
  v("host", m.host);
  v("pid", m.pid);
  v("capacity", m.capacity);
  v("in_flight", m.in_flight);
  v("providers", m.providers);
  v("last_heartbeat_ms_ago", m.last_heartbeat_ms_ago);
  v("state", m.state);
}

DISPATCH_FIELDS(StatusReply) {
  v("broker_id", m.broker_id, kRequired);
  v("uptime_ms", m.uptime_ms);
  v("queue_depth", m.queue_depth);
  v("queue_limit", m.queue_limit);
  v("in_flight", m.in_flight);
  v("finished_kept", m.finished_kept);
  v("workers", m.workers);
  v("providers", m.providers);
}

#undef DISPATCH_FIELDS

// A value equal to its type's zero value is omitted unless the field is required. Unset
// optionals are omitted; set ones are written even when empty (fallbacks: [] means "none").
template <class X>
bool is_default(const X& value) {
  if constexpr (requires { value.has_value(); }) {
    return !value.has_value();
  } else {
    return value == X{};
  }
}

// =============================================================================================
// Encoding

struct StringSink {
  std::string* out;
  void write(const char* data, std::size_t size) { out->append(data, size); }
};

class Packer : public msgpack::packer<StringSink> {
 public:
  explicit Packer(StringSink& sink) : msgpack::packer<StringSink>(sink), sink_(&sink) {}

  // Always float64 (0xcb). msgpack-c's pack_double writes 1.0 as the integer 1; a fixed form
  // keeps golden bytes stable and -0.0 intact. Decoders accept ints for floats anyway.
  void pack_float64(double value) {
    uint64_t bits = 0;
    static_assert(sizeof(bits) == sizeof(value));
    std::memcpy(&bits, &value, sizeof(bits));
    char bytes[9];
    bytes[0] = static_cast<char>(0xcb);
    for (int i = 0; i < 8; ++i) bytes[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
    sink_->write(bytes, sizeof(bytes));
  }

 private:
  StringSink* sink_;
};

void write_value(Packer& pk, const std::string& value);
void write_value(Packer& pk, bool value);
void write_value(Packer& pk, double value);
void write_value(Packer& pk, Priority value);
void write_value(Packer& pk, ErrorKind value);
template <class X>
requires std::is_integral_v<X>
void write_value(Packer& pk, X value);
template <class X>
void write_value(Packer& pk, const std::optional<X>& value);
template <class X>
void write_value(Packer& pk, const std::vector<X>& value);
template <class X>
void write_value(Packer& pk, const std::map<std::string, X>& value);
template <class X>
requires kDescribed<X>
void write_value(Packer& pk, const X& value);

void write_text(Packer& pk, std::string_view text) {
  if (is_valid_utf8(text)) {
    pk.pack_str(static_cast<uint32_t>(text.size()));
    pk.pack_str_body(text.data(), static_cast<uint32_t>(text.size()));
    return;
  }
  // A str that is not UTF-8 breaks Python/Node peers; repair rather than send it.
  const std::string repaired = make_valid_utf8(text);
  pk.pack_str(static_cast<uint32_t>(repaired.size()));
  pk.pack_str_body(repaired.data(), static_cast<uint32_t>(repaired.size()));
}

struct CountVisitor {
  uint32_t count = 0;
  template <class X>
  void operator()(std::string_view /*name*/, const X& value, unsigned flags = kOptional) {
    if ((flags & kRequired) != 0 || !is_default(value)) ++count;
  }
};

struct WriteVisitor {
  Packer& pk;
  template <class X>
  void operator()(std::string_view name, const X& value, unsigned flags = kOptional) {
    if ((flags & kRequired) == 0 && is_default(value)) return;
    pk.pack_str(static_cast<uint32_t>(name.size()));
    pk.pack_str_body(name.data(), static_cast<uint32_t>(name.size()));
    write_value(pk, value);
  }
};

void write_value(Packer& pk, const std::string& value) {
  write_text(pk, value);
}
void write_value(Packer& pk, bool value) {
  if (value) {
    pk.pack_true();
  } else {
    pk.pack_false();
  }
}
void write_value(Packer& pk, double value) {
  pk.pack_float64(value);
}
void write_value(Packer& pk, Priority value) {
  pk.pack_uint8(static_cast<uint8_t>(value));
}
void write_value(Packer& pk, ErrorKind value) {
  write_text(pk, to_string(value));
}

template <class X>
requires std::is_integral_v<X>
void write_value(Packer& pk, X value) {
  // msgpack-c picks the shortest representation, as other msgpack libraries do.
  if constexpr (std::is_signed_v<X>) {
    pk.pack_int64(static_cast<int64_t>(value));
  } else {
    pk.pack_uint64(static_cast<uint64_t>(value));
  }
}

template <class X>
void write_value(Packer& pk, const std::optional<X>& value) {
  write_value(pk, *value);  // only reached when set
}

template <class X>
void write_value(Packer& pk, const std::vector<X>& value) {
  pk.pack_array(static_cast<uint32_t>(value.size()));
  for (const auto& element : value) write_value(pk, element);
}

template <class X>
void write_value(Packer& pk, const std::map<std::string, X>& value) {
  pk.pack_map(static_cast<uint32_t>(value.size()));
  for (const auto& [key, element] : value) {
    write_text(pk, key);
    write_value(pk, element);
  }
}

template <class X>
requires kDescribed<X>
void write_value(Packer& pk, const X& value) {
  CountVisitor counter;
  fields(value, counter);
  pk.pack_map(counter.count);
  WriteVisitor writer{pk};
  fields(value, writer);
}

template <class T>
std::string encode_struct(const T& value) {
  std::string out;
  out.reserve(128);
  StringSink sink{&out};
  Packer pk(sink);
  write_value(pk, value);
  return out;
}

// =============================================================================================
// Decoding

using Code = DecodeError::Code;
using msgpack::type::object_type;

std::string_view type_name(const msgpack::object& o) {
  switch (o.type) {
    case object_type::NIL:
      return "nil";
    case object_type::BOOLEAN:
      return "bool";
    case object_type::POSITIVE_INTEGER:
    case object_type::NEGATIVE_INTEGER:
      return "int";
    case object_type::FLOAT32:
    case object_type::FLOAT64:
      return "float";
    case object_type::STR:
      return "str";
    case object_type::BIN:
      return "bin";
    case object_type::ARRAY:
      return "array";
    case object_type::MAP:
      return "map";
    case object_type::EXT:
      return "ext";
  }
  return "?";
}

// Where the decoder is, for error messages ("messages[2].role"). Depth is bounded by
// Limits::max_depth, so a fixed array suffices.
class Ctx {
 public:
  bool failed() const { return error_.has_value(); }

  void push_key(std::string_view key) { push({key, 0, false}); }
  void push_index(std::size_t index) { push({{}, index, true}); }
  void pop() {
    if (size_ > 0) --size_;
  }

  // Records the first failure only; always returns false so callers can `return c.fail(...)`.
  bool fail(Code code, std::string_view what) {
    if (!error_) error_ = DecodeError{code, path() + ": " + std::string(what)};
    return false;
  }
  bool wrong_type(std::string_view expected, const msgpack::object& got) {
    return fail(Code::wrong_type,
                "expected " + std::string(expected) + ", got " + std::string(type_name(got)));
  }
  DecodeError take_error() { return std::move(*error_); }

 private:
  struct Segment {
    std::string_view key;
    std::size_t index;
    bool is_index;
  };
  static constexpr std::size_t kMaxSegments = 2 * Limits::max_depth + 2;

  void push(Segment segment) {
    if (size_ < kMaxSegments) segments_[size_] = segment;
    ++size_;
  }

  std::string path() const {
    if (size_ == 0) return "(message)";
    std::string out;
    for (std::size_t i = 0; i < size_ && i < kMaxSegments; ++i) {
      const Segment& s = segments_[i];
      if (s.is_index) {
        out += "[" + std::to_string(s.index) + "]";
        continue;
      }
      if (i > 0) out += '.';
      // Map keys come from the peer: keep them short and printable.
      for (std::size_t k = 0; k < s.key.size() && k < 64; ++k) {
        const auto ch = static_cast<unsigned char>(s.key[k]);
        out.push_back(ch >= 0x20 && ch < 0x7F ? static_cast<char>(ch) : '?');
      }
      if (s.key.size() > 64) out += "...";
    }
    return out;
  }

  std::array<Segment, kMaxSegments> segments_{};
  std::size_t size_ = 0;
  std::optional<DecodeError> error_;
};

bool read_value(Ctx& c, const msgpack::object& o, std::string& out);
bool read_value(Ctx& c, const msgpack::object& o, bool& out);
bool read_value(Ctx& c, const msgpack::object& o, double& out);
bool read_value(Ctx& c, const msgpack::object& o, Priority& out);
bool read_value(Ctx& c, const msgpack::object& o, ErrorKind& out);
template <class X>
requires std::is_integral_v<X>
bool read_value(Ctx& c, const msgpack::object& o, X& out);
template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::optional<X>& out);
template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::vector<X>& out);
template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::map<std::string, X>& out);
template <class X>
requires kDescribed<X>
bool read_value(Ctx& c, const msgpack::object& o, X& out);

// Post-decode checks of values that are well-typed but out of range.
template <class T>
bool check_values(Ctx& /*c*/, T& /*value*/) {
  return true;
}
bool check_values(Ctx& c, Request& r);
bool check_values(Ctx& c, Message& m);
bool check_values(Ctx& c, JobHeader& h);

std::string_view text_of(const msgpack::object& o) {
  if (o.type == object_type::STR) return {o.via.str.ptr, o.via.str.size};
  return {o.via.bin.ptr, o.via.bin.size};
}

bool check_job_id(Ctx& c, const std::string& id) {
  if (id.empty()) return c.fail(Code::invalid_value, "must not be empty");
  if (id.size() > Limits::max_job_id) {
    return c.fail(Code::invalid_value, "is " + std::to_string(id.size()) + " bytes, limit " +
                                           std::to_string(Limits::max_job_id));
  }
  if (!is_valid_utf8(id)) return c.fail(Code::invalid_value, "is not valid UTF-8");
  return true;
}

// Matches one map entry against a struct's fields.
struct MatchVisitor {
  Ctx& c;
  std::string_view key;
  const msgpack::object& value;
  uint64_t& seen;
  std::size_t index = 0;
  bool matched = false;

  template <class X>
  void operator()(std::string_view name, X& out, unsigned flags = kOptional) {
    const std::size_t i = index++;
    if (matched || name != key) return;
    matched = true;
    // nil means "absent": JSON-minded encoders write null for unset fields.
    if (value.type == object_type::NIL) return;
    c.push_key(name);
    const uint64_t bit = uint64_t{1} << i;
    if ((seen & bit) != 0) {
      c.fail(Code::malformed, "duplicate key");
    } else {
      seen |= bit;
      if (read_value(c, value, out)) check_flags(out, flags);
    }
    c.pop();
  }

  template <class X>
  void check_flags(const X& out, unsigned flags) {
    if constexpr (std::is_same_v<X, std::string>) {
      if ((flags & kJobId) != 0) {
        check_job_id(c, out);
        return;
      }
    }
    if constexpr (requires { out.empty(); }) {
      if ((flags & kNonEmpty) != 0 && out.empty()) c.fail(Code::invalid_value, "must not be empty");
    }
  }
};

struct RequiredVisitor {
  Ctx& c;
  uint64_t seen;
  std::size_t index = 0;

  template <class X>
  void operator()(std::string_view name, X& /*out*/, unsigned flags = kOptional) {
    const std::size_t i = index++;
    if ((flags & kRequired) == 0 || (seen & (uint64_t{1} << i)) != 0 || c.failed()) return;
    c.push_key(name);
    c.fail(Code::missing_field, "required field is missing");
    c.pop();
  }
};

template <class X>
requires kDescribed<X>
bool read_value(Ctx& c, const msgpack::object& o, X& out) {
  if (o.type != object_type::MAP) return c.wrong_type("map", o);
  uint64_t seen = 0;
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const msgpack::object_kv& kv = o.via.map.ptr[i];
    // Keys we cannot name are unknown keys: ignored like any other.
    if (kv.key.type != object_type::STR && kv.key.type != object_type::BIN) continue;
    MatchVisitor matcher{c, text_of(kv.key), kv.val, seen};
    fields(out, matcher);
    if (c.failed()) return false;
  }
  RequiredVisitor required{c, seen};
  fields(out, required);
  if (c.failed()) return false;
  return check_values(c, out);
}

bool read_value(Ctx& c, const msgpack::object& o, std::string& out) {
  if (o.type != object_type::STR && o.type != object_type::BIN) return c.wrong_type("str", o);
  const std::string_view text = text_of(o);
  // Every str must be UTF-8: it ends up in provider JSON and in other-language peers that
  // refuse anything else. bin is accepted for encoders that cannot tell text from bytes.
  if (!is_valid_utf8(text)) {
    return c.fail(Code::invalid_value, "is not valid UTF-8");
  }
  out.assign(text);
  return true;
}

bool read_value(Ctx& c, const msgpack::object& o, bool& out) {
  if (o.type != object_type::BOOLEAN) return c.wrong_type("bool", o);
  out = o.via.boolean;
  return true;
}

bool read_value(Ctx& c, const msgpack::object& o, double& out) {
  switch (o.type) {
    case object_type::FLOAT32:
    case object_type::FLOAT64:
      out = o.via.f64;
      break;
    case object_type::POSITIVE_INTEGER:
      out = static_cast<double>(o.via.u64);
      break;
    case object_type::NEGATIVE_INTEGER:
      out = static_cast<double>(o.via.i64);
      break;
    default:
      return c.wrong_type("float", o);
  }
  if (!std::isfinite(out)) return c.fail(Code::invalid_value, "must be a finite number");
  return true;
}

template <class X>
requires std::is_integral_v<X>
bool read_value(Ctx& c, const msgpack::object& o, X& out) {
  using Range = std::numeric_limits<X>;
  if (o.type == object_type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(Range::max())) {
      return c.fail(Code::invalid_value, "must be at most " + std::to_string(Range::max()));
    }
    out = static_cast<X>(o.via.u64);
    return true;
  }
  if (o.type == object_type::NEGATIVE_INTEGER) {
    if constexpr (std::is_signed_v<X>) {
      if (o.via.i64 < static_cast<int64_t>(Range::min())) {
        return c.fail(Code::invalid_value, "must be at least " + std::to_string(Range::min()));
      }
      out = static_cast<X>(o.via.i64);
      return true;
    } else {
      return c.fail(Code::invalid_value, "must not be negative");
    }
  }
  return c.wrong_type("int", o);
}

bool read_value(Ctx& c, const msgpack::object& o, Priority& out) {
  uint64_t level = 0;
  if (!read_value(c, o, level)) return false;
  if (level >= kPriorityLevels) {
    return c.fail(Code::invalid_value, "must be 0 (interactive), 1 (normal) or 2 (batch)");
  }
  out = static_cast<Priority>(level);
  return true;
}

bool read_value(Ctx& c, const msgpack::object& o, ErrorKind& out) {
  if (o.type != object_type::STR && o.type != object_type::BIN) return c.wrong_type("str", o);
  out = error_kind_from_string(text_of(o));  // a newer peer's kind reads as `unknown`
  return true;
}

template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::optional<X>& out) {
  out.emplace();
  return read_value(c, o, *out);
}

template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::vector<X>& out) {
  if (o.type != object_type::ARRAY) return c.wrong_type("array", o);
  // The pre-scan proved every element exists, so the size is bounded by the input.
  out.clear();
  out.resize(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    c.push_index(i);
    const bool ok = read_value(c, o.via.array.ptr[i], out[i]);
    c.pop();
    if (!ok) return false;
  }
  return true;
}

template <class X>
bool read_value(Ctx& c, const msgpack::object& o, std::map<std::string, X>& out) {
  if (o.type != object_type::MAP) return c.wrong_type("map", o);
  out.clear();
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const msgpack::object_kv& kv = o.via.map.ptr[i];
    if (kv.key.type != object_type::STR && kv.key.type != object_type::BIN) {
      c.push_index(i);
      c.fail(Code::wrong_type, "expected str key, got " + std::string(type_name(kv.key)));
      c.pop();
      return false;
    }
    const std::string_view key = text_of(kv.key);
    c.push_key(key);
    bool ok = true;
    if (!is_valid_utf8(key)) {
      ok = c.fail(Code::invalid_value, "key is not valid UTF-8");
    } else {
      auto [it, inserted] = out.try_emplace(std::string(key));
      ok = inserted ? read_value(c, kv.val, it->second) : c.fail(Code::malformed, "duplicate key");
    }
    c.pop();
    if (!ok) return false;
  }
  return true;
}

bool fail_at(Ctx& c, std::string_view field, Code code, std::string_view what) {
  c.push_key(field);
  c.fail(code, what);
  c.pop();
  return false;
}

bool one_of(std::string_view value, std::initializer_list<std::string_view> allowed) {
  for (auto a : allowed) {
    if (value == a) return true;
  }
  return false;
}

bool check_values(Ctx& c, Request& r) {
  if (r.temperature && (*r.temperature < 0.0 || *r.temperature > 2.0)) {
    return fail_at(c, "temperature", Code::invalid_value, "must be within 0.0..2.0");
  }
  if (r.top_p && (*r.top_p < 0.0 || *r.top_p > 1.0)) {
    return fail_at(c, "top_p", Code::invalid_value, "must be within 0.0..1.0");
  }
  if (r.max_tokens && *r.max_tokens == 0) {
    return fail_at(c, "max_tokens", Code::invalid_value, "must be at least 1");
  }
  if (r.timeout_ms && *r.timeout_ms == 0) {
    return fail_at(c, "timeout_ms", Code::invalid_value, "must be at least 1");
  }
  if (!one_of(r.tool_choice, {"", "auto", "none", "required", "function"})) {
    return fail_at(c, "tool_choice", Code::invalid_value,
                   "must be one of auto, none, required, function");
  }
  if (r.tool_choice == "function" && r.tool_choice_function.empty()) {
    return fail_at(c, "tool_choice_function", Code::invalid_value,
                   "must name a function when tool_choice is \"function\"");
  }
  if (!one_of(r.response_format, {"", "text", "json_object", "json_schema"})) {
    return fail_at(c, "response_format", Code::invalid_value,
                   "must be one of text, json_object, json_schema");
  }
  return true;
}

bool check_values(Ctx& c, Message& m) {
  for (std::size_t i = 0; i < m.images.size(); ++i) {
    std::string& image = m.images[i];
    const std::string_view data = strip_data_url(image);
    if (data.size() != image.size()) image.erase(0, image.size() - data.size());
    if (!is_base64(image)) {
      c.push_key("images");
      c.push_index(i);
      c.fail(Code::invalid_value, "is not base64 image data");
      c.pop();
      c.pop();
      return false;
    }
  }
  return true;
}

bool check_values(Ctx& c, JobHeader& h) {
  if (h.delivery == 0) return fail_at(c, "delivery", Code::invalid_value, "must be at least 1");
  return true;
}

// msgpack-c may point str/bin/ext objects into our buffer instead of copying them: the buffer
// outlives the object tree (both live only inside decode<T>).
bool reference_in_place(object_type /*type*/, std::size_t /*length*/, void* /*user_data*/) {
  return true;
}

msgpack::unpack_limit unpack_limits() {
  return msgpack::unpack_limit(Limits::max_array, Limits::max_map, Limits::max_str, Limits::max_bin,
                               Limits::max_ext, Limits::max_depth);
}

// The object tree of one message. Zone memory is recycled per thread: after the first message
// a small decode does not touch malloc for the tree. Not re-entrant, and decode never is.
class UnpackedMessage {
 public:
  explicit UnpackedMessage(std::string_view bytes) {
    root_ = msgpack::unpack(zone(), bytes.data(), bytes.size(), &reference_in_place, nullptr,
                            unpack_limits());
  }
  ~UnpackedMessage() { zone().clear(); }
  UnpackedMessage(const UnpackedMessage&) = delete;
  UnpackedMessage& operator=(const UnpackedMessage&) = delete;

  const msgpack::object& root() const { return root_; }

 private:
  static msgpack::zone& zone() {
    thread_local msgpack::zone zone;
    return zone;
  }
  msgpack::object root_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string encode(const Request& v) {
  return encode_struct(v);
}
std::string encode(const Response& v) {
  return encode_struct(v);
}
std::string encode(const Error& v) {
  return encode_struct(v);
}
std::string encode(const Submit& v) {
  return encode_struct(v);
}
std::string encode(const Accepted& v) {
  return encode_struct(v);
}
std::string encode(const Rejected& v) {
  return encode_struct(v);
}
std::string encode(const Cancel& v) {
  return encode_struct(v);
}
std::string encode(const JobHeader& v) {
  return encode_struct(v);
}
std::string encode(const JobEnd& v) {
  return encode_struct(v);
}
std::string encode(const Chunk& v) {
  return encode_struct(v);
}
std::string encode(const ChunkHeader& v) {
  return encode_struct(v);
}
std::string encode(const StreamReset& v) {
  return encode_struct(v);
}
std::string encode(const ResetHeader& v) {
  return encode_struct(v);
}
std::string encode(const Ready& v) {
  return encode_struct(v);
}
std::string encode(const Credit& v) {
  return encode_struct(v);
}
std::string encode(const Heartbeat& v) {
  return encode_struct(v);
}
std::string encode(const Disconnect& v) {
  return encode_struct(v);
}
std::string encode(const StatusReply& v) {
  return encode_struct(v);
}
std::string encode(const ToolCall& v) {
  return encode_struct(v);
}
std::string encode(const Message& v) {
  return encode_struct(v);
}
std::string encode(const Tool& v) {
  return encode_struct(v);
}
std::string encode(const Target& v) {
  return encode_struct(v);
}
std::string encode(const Usage& v) {
  return encode_struct(v);
}
std::string encode(const Attempt& v) {
  return encode_struct(v);
}
std::string encode(const ToolCallDelta& v) {
  return encode_struct(v);
}
std::string encode(const ProviderCounters& v) {
  return encode_struct(v);
}
std::string encode(const WorkerStatus& v) {
  return encode_struct(v);
}

template <class T>
Decoded<T> decode(std::string_view bytes) {
  static_assert(kDescribed<T>);
  try {
    if (auto error = validate_msgpack(bytes)) return std::move(*error);
    const UnpackedMessage message(bytes);
    if (message.root().type != object_type::MAP) {
      return DecodeError{Code::wrong_type,
                         "(message): expected map, got " + std::string(type_name(message.root()))};
    }
    Ctx ctx;
    T value{};
    if (!read_value(ctx, message.root(), value)) return ctx.take_error();
    return value;
  } catch (const std::exception& e) {
    // msgpack-c throws on anything the pre-scan let through (it should not), bad_alloc on
    // exhaustion: either way a typed error, never an exception out of the decoder.
    return DecodeError{Code::malformed, std::string("undecodable: ") + e.what()};
  } catch (...) {
    return DecodeError{Code::malformed, "undecodable"};
  }
}

template Decoded<Request> decode<Request>(std::string_view);
template Decoded<Response> decode<Response>(std::string_view);
template Decoded<Error> decode<Error>(std::string_view);
template Decoded<Submit> decode<Submit>(std::string_view);
template Decoded<Accepted> decode<Accepted>(std::string_view);
template Decoded<Rejected> decode<Rejected>(std::string_view);
template Decoded<Cancel> decode<Cancel>(std::string_view);
template Decoded<JobHeader> decode<JobHeader>(std::string_view);
template Decoded<JobEnd> decode<JobEnd>(std::string_view);
template Decoded<Chunk> decode<Chunk>(std::string_view);
template Decoded<ChunkHeader> decode<ChunkHeader>(std::string_view);
template Decoded<StreamReset> decode<StreamReset>(std::string_view);
template Decoded<ResetHeader> decode<ResetHeader>(std::string_view);
template Decoded<Ready> decode<Ready>(std::string_view);
template Decoded<Credit> decode<Credit>(std::string_view);
template Decoded<Heartbeat> decode<Heartbeat>(std::string_view);
template Decoded<Disconnect> decode<Disconnect>(std::string_view);
template Decoded<StatusReply> decode<StatusReply>(std::string_view);
template Decoded<ToolCall> decode<ToolCall>(std::string_view);
template Decoded<Message> decode<Message>(std::string_view);
template Decoded<Tool> decode<Tool>(std::string_view);
template Decoded<Target> decode<Target>(std::string_view);
template Decoded<Usage> decode<Usage>(std::string_view);
template Decoded<Attempt> decode<Attempt>(std::string_view);
template Decoded<ToolCallDelta> decode<ToolCallDelta>(std::string_view);
template Decoded<ProviderCounters> decode<ProviderCounters>(std::string_view);
template Decoded<WorkerStatus> decode<WorkerStatus>(std::string_view);

std::string extract_job_id(std::string_view header) noexcept {
  try {
    if (validate_msgpack(header)) return {};
    const UnpackedMessage message(header);
    const msgpack::object& root = message.root();
    if (root.type != object_type::MAP) return {};
    for (uint32_t i = 0; i < root.via.map.size; ++i) {
      const msgpack::object_kv& kv = root.via.map.ptr[i];
      if (kv.key.type != object_type::STR || text_of(kv.key) != "job_id") continue;
      if (kv.val.type != object_type::STR) return {};
      std::string id(text_of(kv.val));
      if (id.empty() || id.size() > Limits::max_job_id || !is_valid_utf8(id)) return {};
      return id;
    }
  } catch (...) {
    // Best effort by contract: no job id.
  }
  return {};
}

}  // namespace dispatch::protocol
