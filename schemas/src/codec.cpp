// msgpack encoding and decoding of every protocol struct.
//
// Each struct's wire form is described once, by a `fields(m, v)` function that hands every field
// (wire name, member, flags) to a visitor. The encoder, the decoder and the required-field check
// are visitors over that one description, so a name cannot differ between the two directions.
// Key order on the wire is the order in the description (= declaration order), which makes the
// encoding deterministic (golden vectors).

#include "dispatch/protocol/codec.hpp"

#include <array>
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
#include <utility>
#include <vector>

#include "dispatch/common/strings.hpp"
#include "dispatch/protocol/text.hpp"
#include "msgpack_format.hpp"

namespace dispatch::protocol {
namespace {

// ---------------------------------------------------------------------------------------------
// Field flags

enum FieldFlag : unsigned {
  kOptional = 0,
  kRequired = 1u << 0,  // always written; absent (or nil) on decode -> missing_field
  kNonEmpty = 1u << 1,  // decode: an empty string / array -> invalid_value
  kJobId = 1u << 2,     // decode: 1..Limits::max_job_id bytes of valid UTF-8
  kTenant = 1u << 3,    // decode: at most Limits::max_tenant bytes
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
  v("cached_tokens", m.cached_tokens);
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
  v("cost_usd", m.cost_usd);
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
  v("tenant", m.tenant, kTenant);
  v("model", m.model);
  v("traceparent", m.traceparent);
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
  v("open_targets", m.open_targets);
  v("traceparent", m.traceparent);
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

DISPATCH_FIELDS(ProviderHealth) {
  v("provider", m.provider, kRequiredName);
  v("model", m.model);
  v("kind", m.kind, kRequiredName);
  v("retry_after_ms", m.retry_after_ms);
  v("limit_requests", m.limit_requests);
  v("remaining_requests", m.remaining_requests);
  v("reset_requests_ms", m.reset_requests_ms);
  v("limit_tokens", m.limit_tokens);
  v("remaining_tokens", m.remaining_tokens);
  v("reset_tokens_ms", m.reset_tokens_ms);
  v("cooldown_ms", m.cooldown_ms);
}

DISPATCH_FIELDS(QuotaStatus) {
  v("key", m.key, kRequiredName);
  v("rpm", m.rpm);
  v("tpm", m.tpm);
  v("concurrency", m.concurrency);
  v("requests_last_minute", m.requests_last_minute);
  v("tokens_last_minute", m.tokens_last_minute);
  v("running", m.running);
  v("waiting", m.waiting);
  v("paused_ms", m.paused_ms);
  v("paused_reason", m.paused_reason);
  v("breaker", m.breaker);
  v("breaker_ms", m.breaker_ms);
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

DISPATCH_FIELDS(ClientCounters) {
  v("queued", m.queued);
  v("running", m.running);
  v("submitted", m.submitted);
  v("succeeded", m.succeeded);
  v("failed", m.failed);
  v("rejected", m.rejected);
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
  v("payload_bytes", m.payload_bytes);
  v("payload_bytes_limit", m.payload_bytes_limit);
  v("rejected", m.rejected);
  v("broker_errors", m.broker_errors);
  v("worker_count", m.worker_count);
  v("identity", m.identity);
  v("clients", m.clients);
  v("insecure", m.insecure);
  v("quotas", m.quotas);
  v("failed_by_kind", m.failed_by_kind);
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
//
// Straight from the bytes, after validate_msgpack has checked them, with no msgpack-c object
// tree in between: a tree costs 24+ bytes per value, so a payload of 1-byte values would weigh
// 24 times its size before any check could run. What the decoder itself allocates (strings,
// vectors, map nodes) is charged to a budget of Limits::decode_ratio times the input plus
// Limits::decode_slack *before* it is allocated; a message that would exceed it fails
// `malformed`. An all-optional struct in an array (1 byte of input, a whole struct of memory)
// is what the budget is for.

using Code = DecodeError::Code;
using detail::Family;
using detail::Head;

// A cursor over bytes that validate_msgpack accepted: every length it reads is known to fit in
// the buffer, so it needs no bounds checks of its own.
class Reader {
 public:
  explicit Reader(std::string_view bytes)
      : p_(reinterpret_cast<const unsigned char*>(bytes.data())) {}

  Family peek() const { return detail::kTypeBytes[*p_].family; }

  // The next value's head, consumed; a str's body, an array's items etc. come after it.
  Head next() {
    const Head head = detail::read_head(p_);
    p_ += 1 + detail::kTypeBytes[*p_].width;
    return head;
  }

  // The body of the str / bin whose head was just read.
  std::string_view text(const Head& head) {
    const auto* start = reinterpret_cast<const char*>(p_);
    p_ += head.value;
    return {start, static_cast<std::size_t>(head.value)};
  }

  // The rest of a value whose head was just read: its body, or all of its items.
  void skip_rest(Head head) {
    uint64_t pending = 0;
    while (true) {
      if (detail::is_text(head.family)) p_ += head.value;
      if (head.family == Family::ext) p_ += head.value + 1;  // its type byte, then the data
      if (head.family == Family::array) pending += head.value;
      if (head.family == Family::map) pending += 2 * head.value;
      if (pending == 0) return;
      --pending;
      head = next();
    }
  }
  void skip_value() { skip_rest(next()); }

 private:
  const unsigned char* p_;
};

// What the allocator really takes for a block of `bytes` (glibc: 16-byte granules plus a
// header; page-rounded mappings for large blocks), so that the budget bounds memory, not just
// the sizes asked for.
constexpr std::size_t heap_block(std::size_t bytes) {
  if (bytes == 0) return 0;
  if (bytes < (128u << 10)) return bytes + 24;
  return (bytes + 32 + 4095) & ~std::size_t{4095};
}

// A std::string of `size` bytes: held inline up to its small-string capacity, else one block.
std::size_t string_heap(std::size_t size) {
  static const std::size_t inline_capacity = std::string().capacity();
  return size <= inline_capacity ? 0 : heap_block(size + 1);
}

// One node of a std::map<std::string, X> (the tree's links and colour, then the pair).
template <class X>
constexpr std::size_t kMapNode = heap_block(4 * sizeof(void*) +
                                            sizeof(std::pair<const std::string, X>));

// Where the decoder is (for error messages: "messages[2].role"), the first error, and what is
// left of the memory budget. Errors are sticky: the read_value functions return false and leave
// the reason here, because only the innermost one knows it and only the outermost returns it;
// one error per decode, no allocation per level. Depth is bounded by Limits::max_depth, so a
// fixed array holds the path.
class Ctx {
 public:
  explicit Ctx(std::size_t input_bytes)
      : input_bytes_(input_bytes),
        budget_(Limits::decode_ratio * input_bytes + Limits::decode_slack) {}

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
  bool wrong_type(std::string_view expected, Family got) {
    return fail(Code::wrong_type, "expected " + std::string(expected) + ", got " +
                                      std::string(detail::family_name(got)));
  }

  // Reserves `bytes` of the budget for an allocation about to be made; false (with the error)
  // when the message would exceed it.
  bool charge(std::size_t bytes) {
    if (bytes <= budget_) {
      budget_ -= bytes;
      return true;
    }
    budget_ = 0;
    return fail(Code::malformed, "decoded size would exceed " +
                                     std::to_string(Limits::decode_ratio) + "x its " +
                                     std::to_string(input_bytes_) + " bytes");
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
      out += printable(s.key, 64);  // map keys come from the peer
    }
    return out;
  }

  std::size_t input_bytes_;
  std::size_t budget_;
  std::array<Segment, kMaxSegments> segments_{};
  std::size_t size_ = 0;
  std::optional<DecodeError> error_;
};

bool read_value(Ctx& c, Reader& r, std::string& out);
bool read_value(Ctx& c, Reader& r, bool& out);
bool read_value(Ctx& c, Reader& r, double& out);
bool read_value(Ctx& c, Reader& r, Priority& out);
bool read_value(Ctx& c, Reader& r, ErrorKind& out);
template <class X>
requires std::is_integral_v<X>
bool read_value(Ctx& c, Reader& r, X& out);
template <class X>
bool read_value(Ctx& c, Reader& r, std::optional<X>& out);
template <class X>
bool read_value(Ctx& c, Reader& r, std::vector<X>& out);
template <class X>
bool read_value(Ctx& c, Reader& r, std::map<std::string, X>& out);
template <class X>
requires kDescribed<X>
bool read_value(Ctx& c, Reader& r, X& out);

// Post-decode checks of values that are well-typed but out of range.
template <class T>
bool check_values(Ctx& /*c*/, T& /*value*/) {
  return true;
}
bool check_values(Ctx& c, Request& r);
bool check_values(Ctx& c, Message& m);
bool check_values(Ctx& c, JobHeader& h);

bool check_job_id(Ctx& c, const std::string& id) {
  if (id.empty()) return c.fail(Code::invalid_value, "must not be empty");
  if (id.size() > Limits::max_job_id) {
    return c.fail(Code::invalid_value, "is " + std::to_string(id.size()) + " bytes, limit " +
                                           std::to_string(Limits::max_job_id));
  }
  if (!is_valid_utf8(id)) return c.fail(Code::invalid_value, "is not valid UTF-8");
  return true;
}

// Matches one map entry (its key read, its value next in `r`) against a struct's fields.
struct MatchVisitor {
  Ctx& c;
  Reader& r;
  std::string_view key;
  uint64_t& seen;
  std::size_t index = 0;
  bool matched = false;

  template <class X>
  void operator()(std::string_view name, X& out, unsigned flags = kOptional) {
    const std::size_t i = index++;
    if (matched || name != key) return;
    matched = true;
    // nil means "absent": JSON-minded encoders write null for unset fields.
    if (r.peek() == Family::nil) {
      r.next();
      return;
    }
    c.push_key(name);
    const uint64_t bit = uint64_t{1} << i;
    if ((seen & bit) != 0) {
      c.fail(Code::malformed, "duplicate key");
    } else {
      seen |= bit;
      if (read_value(c, r, out)) check_flags(out, flags);
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
      if ((flags & kTenant) != 0 && out.size() > Limits::max_tenant) {
        c.fail(Code::invalid_value, "is " + std::to_string(out.size()) + " bytes, limit " +
                                        std::to_string(Limits::max_tenant));
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
bool read_value(Ctx& c, Reader& r, X& out) {
  const Head head = r.next();
  if (head.family != Family::map) return c.wrong_type("map", head.family);
  uint64_t seen = 0;
  for (uint64_t i = 0; i < head.value; ++i) {
    const Head key = r.next();
    if (!detail::is_text(key.family)) {  // keys we cannot name are unknown keys: ignored
      r.skip_rest(key);
      r.skip_value();
      continue;
    }
    MatchVisitor matcher{c, r, r.text(key), seen};
    fields(out, matcher);
    if (c.failed()) return false;
    if (!matcher.matched) r.skip_value();
  }
  RequiredVisitor required{c, seen};
  fields(out, required);
  if (c.failed()) return false;
  return check_values(c, out);
}

bool read_value(Ctx& c, Reader& r, std::string& out) {
  const Head head = r.next();
  if (!detail::is_text(head.family)) return c.wrong_type("str", head.family);
  const std::string_view text = r.text(head);
  // Every str must be UTF-8: it ends up in provider JSON and in other-language peers that
  // refuse anything else. bin is accepted for encoders that cannot tell text from bytes.
  if (!is_valid_utf8(text)) return c.fail(Code::invalid_value, "is not valid UTF-8");
  if (!c.charge(string_heap(text.size()))) return false;
  out.assign(text);
  return true;
}

bool read_value(Ctx& c, Reader& r, bool& out) {
  const Head head = r.next();
  if (head.family != Family::boolean) return c.wrong_type("bool", head.family);
  out = head.value != 0;
  return true;
}

bool read_value(Ctx& c, Reader& r, double& out) {
  const Head head = r.next();
  switch (head.family) {
    case Family::float32: {
      const auto bits = static_cast<uint32_t>(head.value);
      float narrow = 0;
      std::memcpy(&narrow, &bits, sizeof(narrow));
      out = narrow;
      break;
    }
    case Family::float64:
      std::memcpy(&out, &head.value, sizeof(out));
      break;
    case Family::uint:
      out = static_cast<double>(head.value);
      break;
    case Family::sint:
      out = static_cast<double>(static_cast<int64_t>(head.value));
      break;
    default:
      return c.wrong_type("float", head.family);
  }
  if (!std::isfinite(out)) return c.fail(Code::invalid_value, "must be a finite number");
  return true;
}

template <class X>
requires std::is_integral_v<X>
bool read_value(Ctx& c, Reader& r, X& out) {
  using Range = std::numeric_limits<X>;
  const Head head = r.next();
  if (head.family != Family::uint && head.family != Family::sint) {
    return c.wrong_type("int", head.family);
  }
  const bool negative = head.family == Family::sint && static_cast<int64_t>(head.value) < 0;
  if (!negative) {
    if (head.value > static_cast<uint64_t>(Range::max())) {
      return c.fail(Code::invalid_value, "must be at most " + std::to_string(Range::max()));
    }
    out = static_cast<X>(head.value);
    return true;
  }
  if constexpr (std::is_signed_v<X>) {
    const auto value = static_cast<int64_t>(head.value);
    if (value < static_cast<int64_t>(Range::min())) {
      return c.fail(Code::invalid_value, "must be at least " + std::to_string(Range::min()));
    }
    out = static_cast<X>(value);
    return true;
  } else {
    return c.fail(Code::invalid_value, "must not be negative");
  }
}

bool read_value(Ctx& c, Reader& r, Priority& out) {
  uint64_t level = 0;
  if (!read_value(c, r, level)) return false;
  if (level >= kPriorityLevels) {
    return c.fail(Code::invalid_value, "must be 0 (interactive), 1 (normal) or 2 (batch)");
  }
  out = static_cast<Priority>(level);
  return true;
}

bool read_value(Ctx& c, Reader& r, ErrorKind& out) {
  const Head head = r.next();
  if (!detail::is_text(head.family)) return c.wrong_type("str", head.family);
  out = error_kind_from_string(r.text(head));  // a newer peer's kind reads as `unknown`
  return true;
}

template <class X>
bool read_value(Ctx& c, Reader& r, std::optional<X>& out) {
  out.emplace();
  return read_value(c, r, *out);
}

template <class X>
bool read_value(Ctx& c, Reader& r, std::vector<X>& out) {
  const Head head = r.next();
  if (head.family != Family::array) return c.wrong_type("array", head.family);
  // The pre-scan proved every element is present; the budget decides whether they may take
  // sizeof(X) each.
  if (!c.charge(heap_block(head.value * sizeof(X)))) return false;
  out.clear();
  out.resize(head.value);
  for (std::size_t i = 0; i < out.size(); ++i) {
    c.push_index(i);
    const bool ok = read_value(c, r, out[i]);
    c.pop();
    if (!ok) return false;
  }
  return true;
}

template <class X>
bool read_entry(Ctx& c, Reader& r, std::string_view key, std::map<std::string, X>& out) {
  if (!is_valid_utf8(key)) return c.fail(Code::invalid_value, "key is not valid UTF-8");
  if (!c.charge(kMapNode<X> + string_heap(key.size()))) return false;
  auto [it, inserted] = out.try_emplace(std::string(key));
  if (!inserted) return c.fail(Code::malformed, "duplicate key");
  return read_value(c, r, it->second);
}

template <class X>
bool read_value(Ctx& c, Reader& r, std::map<std::string, X>& out) {
  const Head head = r.next();
  if (head.family != Family::map) return c.wrong_type("map", head.family);
  out.clear();
  for (uint64_t i = 0; i < head.value; ++i) {
    const Head key = r.next();
    if (!detail::is_text(key.family)) {
      c.push_index(i);
      c.fail(Code::wrong_type,
             "expected str key, got " + std::string(detail::family_name(key.family)));
      c.pop();
      return false;
    }
    const std::string_view name = r.text(key);
    c.push_key(name);
    const bool ok = read_entry(c, r, name, out);
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
    // An image URL is the provider's to fetch (the gateway takes them; the adapters send them on).
    if (istarts_with(image, "http://") || istarts_with(image, "https://")) continue;
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
std::string encode(const ProviderHealth& v) {
  return encode_struct(v);
}
std::string encode(const QuotaStatus& v) {
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
    Reader reader(bytes);
    if (reader.peek() != Family::map) {
      return DecodeError{Code::wrong_type, "(message): expected map, got " +
                                               std::string(detail::family_name(reader.peek()))};
    }
    Ctx ctx(bytes.size());
    T value{};
    if (!read_value(ctx, reader, value)) return ctx.take_error();
    return value;
  } catch (const std::exception& e) {
    // bad_alloc when memory runs out even within the budget: a typed error, never an exception
    // out of the decoder.
    return DecodeError{Code::malformed, std::string("undecodable: ") + e.what()};
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
template Decoded<ProviderHealth> decode<ProviderHealth>(std::string_view);
template Decoded<QuotaStatus> decode<QuotaStatus>(std::string_view);
template Decoded<WorkerStatus> decode<WorkerStatus>(std::string_view);

std::string extract_job_id(std::string_view header) noexcept {
  try {
    if (validate_msgpack(header)) return {};
    Reader reader(header);
    const Head root = reader.next();
    if (root.family != Family::map) return {};
    for (uint64_t i = 0; i < root.value; ++i) {
      const Head key = reader.next();
      if (key.family != Family::str) {
        reader.skip_rest(key);
        reader.skip_value();
        continue;
      }
      if (reader.text(key) != "job_id") {
        reader.skip_value();
        continue;
      }
      const Head value = reader.next();
      if (value.family != Family::str) return {};
      const std::string_view id = reader.text(value);
      if (id.empty() || id.size() > Limits::max_job_id || !is_valid_utf8(id)) return {};
      return std::string(id);
    }
  } catch (...) {
    // Best effort by contract (only the returned string allocates): no job id.
  }
  return {};
}

}  // namespace dispatch::protocol
