#include "format_common.hpp"

#include <cmath>
#include <cstdio>
#include <ctime>

#include "formats.hpp"

namespace dispatch::fake_provider {

std::string_view format_name(Format format) {
  switch (format) {
    case Format::openai:
      return "openai";
    case Format::anthropic:
      return "anthropic";
    case Format::ollama:
      return "ollama";
    case Format::dashscope_compatible:
      return "dashscope-compatible";
    case Format::dashscope:
      return "dashscope";
  }
  return "unknown";
}

const WireFormat& wire_format(Format format) {
  switch (format) {
    case Format::openai:
      return openai_format();
    case Format::anthropic:
      return anthropic_format();
    case Format::ollama:
      return ollama_format();
    case Format::dashscope_compatible:
      return dashscope_compatible_format();
    case Format::dashscope:
      return dashscope_format();
  }
  return openai_format();
}

namespace {

// Models the listings advertise; any other name is accepted for chat too.
constexpr std::string_view kListedModels[] = {"gpt-4o",          "gpt-4o-mini", "claude-sonnet-4-5",
                                              "llama3.2:latest", "qwen-plus",   "qwen3-max"};

}  // namespace

std::string openai_models_body(int64_t created_unix_s) {
  nlohmann::json data = nlohmann::json::array();
  for (std::string_view id : kListedModels) {
    data.push_back({{"id", id},
                    {"object", "model"},
                    {"created", created_unix_s},
                    {"owned_by", "fake-provider"}});
  }
  return nlohmann::json{{"object", "list"}, {"data", std::move(data)}}.dump();
}

std::string anthropic_models_body() {
  nlohmann::json data = nlohmann::json::array();
  for (std::string_view id : kListedModels) {
    data.push_back({{"type", "model"},
                    {"id", id},
                    {"display_name", id},
                    {"created_at", "2025-01-01T00:00:00Z"}});
  }
  return nlohmann::json{{"data", data},
                        {"has_more", false},
                        {"first_id", data.front()["id"]},
                        {"last_id", data.back()["id"]}}
      .dump();
}

std::string ollama_tags_body(int64_t unix_ns) {
  nlohmann::json models = nlohmann::json::array();
  for (std::string_view id : kListedModels) {
    const std::string name =
        id.find(':') == std::string_view::npos ? std::string(id) + ":latest" : std::string(id);
    models.push_back(
        {{"name", name},
         {"model", name},
         {"modified_at", detail::rfc3339_nanos(unix_ns)},
         {"size", 2019393189},
         {"digest", "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"},
         {"details",
          {{"format", "gguf"},
           {"family", "llama"},
           {"families", {"llama"}},
           {"parameter_size", "3.2B"},
           {"quantization_level", "Q4_K_M"}}}});
  }
  return nlohmann::json{{"models", std::move(models)}}.dump();
}

namespace {
std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}
}  // namespace

void Headers::add(std::string name, std::string value) {
  entries_.emplace_back(lower(name), std::move(value));
}

std::optional<std::string_view> Headers::get(std::string_view name) const {
  const std::string wanted = lower(name);
  for (const auto& [key, value] : entries_) {
    if (key == wanted) return std::string_view(value);
  }
  return std::nullopt;
}

namespace detail {

std::string_view json_type(const json& value) {
  switch (value.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    case json::value_t::string:
      return "string";
    case json::value_t::array:
      return "array";
    case json::value_t::object:
      return "object";
    default:
      return "unknown";
  }
}

const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const json* present(const json& object, std::string_view key) {
  const json* value = member(object, key);
  return value == nullptr || value->is_null() ? nullptr : value;
}

bool is_base64(std::string_view text, size_t* bad_index) {
  const auto fail = [&](size_t at) {
    if (bad_index != nullptr) *bad_index = at;
    return false;
  };
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alphabet = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      ++padding;
      if (padding > 2) return fail(i);
    } else if (!alphabet || padding > 0) {
      return fail(i);
    }
  }
  if (text.size() % 4 != 0) return fail(text.size());
  return true;
}

bool is_image_data_url(std::string_view url) {
  constexpr std::string_view prefix = "data:image/";
  if (url.substr(0, prefix.size()) != prefix) return false;
  const size_t marker = url.find(";base64,");
  if (marker == std::string_view::npos || marker == prefix.size()) return false;
  const std::string_view payload = url.substr(marker + 8);
  return !payload.empty() && is_base64(payload);
}

std::optional<std::string> bearer_token(const Headers& headers) {
  const auto value = headers.get("authorization");
  if (!value) return std::nullopt;
  constexpr std::string_view scheme = "bearer";
  if (value->size() < scheme.size() || lower(value->substr(0, scheme.size())) != scheme) {
    return std::nullopt;
  }
  std::string_view token = value->substr(scheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return std::string(token);
}

std::string sse_data(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 8);
  out.append("data: ").append(data).append("\n\n");
  return out;
}

void append_json_string(std::string& out, std::string_view text) {
  for (const char c : text) {
    if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') {
      out += json(text).dump();
      return;
    }
  }
  out.push_back('"');
  out.append(text);
  out.push_back('"');
}

std::optional<SplicedJson> SplicedJson::make(const std::function<json(json, json)>& build) {
  // Control characters are escaped by dump(), so these cannot come out of ordinary values.
  const json a_placeholder =
      "\x01"
      "fake-provider-slot-a"
      "\x01";
  const json b_placeholder =
      "\x01"
      "fake-provider-slot-b"
      "\x01";
  const std::string text = build(a_placeholder, b_placeholder).dump();
  const std::string a = a_placeholder.dump();
  const std::string b = b_placeholder.dump();
  const size_t a_at = text.find(a);
  const size_t b_at = text.find(b);
  if (a_at == std::string::npos || b_at == std::string::npos || text.rfind(a) != a_at ||
      text.rfind(b) != b_at) {
    return std::nullopt;
  }
  SplicedJson out;
  out.b_first_ = b_at < a_at;
  const size_t first_at = std::min(a_at, b_at);
  const size_t first_len = out.b_first_ ? b.size() : a.size();
  const size_t second_at = std::max(a_at, b_at);
  const size_t second_len = out.b_first_ ? a.size() : b.size();
  out.head_ = text.substr(0, first_at);
  out.middle_ = text.substr(first_at + first_len, second_at - first_at - first_len);
  out.tail_ = text.substr(second_at + second_len);
  return out;
}

void SplicedJson::append(std::string& out, std::string_view a_json, std::string_view b_json) const {
  out.append(head_);
  out.append(b_first_ ? b_json : a_json);
  out.append(middle_);
  out.append(b_first_ ? a_json : b_json);
  out.append(tail_);
}

std::string sse_event(std::string_view name, std::string_view data) {
  std::string out;
  out.reserve(name.size() + data.size() + 16);
  out.append("event: ").append(name).append("\ndata: ").append(data).append("\n\n");
  return out;
}

std::string rfc3339_nanos(int64_t unix_ns) {
  const time_t seconds = static_cast<time_t>(unix_ns / 1'000'000'000);
  const int64_t nanos = unix_ns % 1'000'000'000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<long long>(nanos));
  return buffer;
}

std::string uuid_like(uint64_t instance, uint64_t seq) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%08llx-%04llx-4%03llx-8000-%012llx",
                static_cast<unsigned long long>(instance & 0xffffffffULL),
                static_cast<unsigned long long>((instance >> 32) & 0xffffULL),
                static_cast<unsigned long long>((instance >> 48) & 0xfffULL),
                static_cast<unsigned long long>(seq & 0xffffffffffffULL));
  return buffer;
}

std::string short_request_id(uint64_t instance, uint64_t seq) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "req_%08llx%06llx",
                static_cast<unsigned long long>(instance & 0xffffffffULL),
                static_cast<unsigned long long>(seq & 0xffffffULL));
  return buffer;
}

std::optional<int64_t> as_integer(const json& value) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double d = value.get<double>();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9e15) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

std::string_view openai_finish(Finish finish) {
  switch (finish) {
    case Finish::length:
      return "length";
    case Finish::tool_calls:
      return "tool_calls";
    case Finish::stop:
    case Finish::stop_sequence:
    case Finish::load:
      return "stop";
  }
  return "stop";
}

json usage_openai(const ReplyPlan& plan) {
  return json{{"prompt_tokens", plan.prompt_tokens},
              {"completion_tokens", plan.completion_tokens},
              {"total_tokens", plan.prompt_tokens + plan.completion_tokens}};
}

}  // namespace detail
}  // namespace dispatch::fake_provider
