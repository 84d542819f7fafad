#pragma once

// Helpers shared by the wire formats (private to the library).

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/fake_provider/errors.hpp"
#include "dispatch/fake_provider/reply.hpp"
#include "dispatch/fake_provider/wire_format.hpp"

namespace dispatch::fake_provider::detail {

using nlohmann::json;

// JSON Schema style type names: null, boolean, integer, number, string, array, object.
std::string_view json_type(const json& value);

// The member `key` of `object`, or nullptr when absent (`object` must be an object).
const json* member(const json& object, std::string_view key);
// As member(), but an explicit null counts as absent.
const json* present(const json& object, std::string_view key);

// Standard base64 (with padding). On failure `bad_index` is the offset of the first bad byte.
bool is_base64(std::string_view text, size_t* bad_index = nullptr);

// `data:image/<subtype>;base64,<base64>`
bool is_image_data_url(std::string_view url);

// Authorization: Bearer <key>. nullopt when absent or not Bearer; may be empty.
std::optional<std::string> bearer_token(const Headers& headers);

// text/event-stream framing.
std::string sse_data(std::string_view data);                          // "data: X\n\n"
std::string sse_event(std::string_view name, std::string_view data);  // "event: N\ndata: X\n\n"

// Appends `text` exactly as json(text).dump() writes it (throws as dump() does on invalid
// UTF-8), without building a json value for the common printable-ASCII case.
void append_json_string(std::string& out, std::string_view text);

// A JSON document serialised once with two placeholder values, then re-serialised with other
// values by splicing: a stream's chunks share everything but the delta and the finish reason,
// so each event costs one string instead of a DOM of maps plus a dump.
class SplicedJson {
 public:
  // `build(a, b)` returns the document with `a` and `b` as two of its values. nullopt when the
  // placeholders cannot be found exactly once each (the caller then dumps every document).
  static std::optional<SplicedJson> make(const std::function<json(json, json)>& build);
  // Appends the document with `a_json` and `b_json` (serialised JSON values) in the slots.
  void append(std::string& out, std::string_view a_json, std::string_view b_json) const;
  size_t fixed_size() const { return head_.size() + middle_.size() + tail_.size(); }

 private:
  std::string head_, middle_, tail_;
  bool b_first_ = false;
};

// 2024-05-01T12:34:56.123456789Z
std::string rfc3339_nanos(int64_t unix_ns);

// uuid-shaped id derived from (instance, seq) so ids are unique per server run.
std::string uuid_like(uint64_t instance, uint64_t seq);

// "req_<hex>" ids (OpenAI, Anthropic style).
std::string short_request_id(uint64_t instance, uint64_t seq);

// The value a numeric field has, if it is an integer (JSON integers and whole floats).
std::optional<int64_t> as_integer(const json& value);

// OpenAI / DashScope finish_reason.
std::string_view openai_finish(Finish finish);

json usage_openai(const ReplyPlan& plan);

}  // namespace dispatch::fake_provider::detail
