#include "adapter_common.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>

#include "text_util.hpp"

namespace dispatch::worker::detail {

Failure invalid_request(std::string message) {
  Failure failure;
  failure.kind = protocol::ErrorKind::invalid_request;
  failure.message = std::move(message);
  return failure;
}

std::optional<Failure> check_key(const ProviderConfig& provider, bool required) {
  if (!provider.api_key.empty()) return std::nullopt;
  if (!required && provider.api_key_env.empty()) return std::nullopt;
  Failure failure;
  failure.kind = protocol::ErrorKind::authentication;
  failure.code = "missing_api_key";
  failure.message =
      provider.api_key_env.empty()
          ? fmt::format("no API key: set api_key_env for provider '{}'", provider.name)
          : "no API key: set " + provider.api_key_env;
  return failure;
}

std::string join_url(std::string_view base, std::string_view path) {
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  std::string url(base);
  if (!path.empty() && path.front() != '/') url += '/';
  url += path;
  return url;
}

void set_header(HttpHeaders& headers, std::string name, std::string value) {
  std::erase_if(headers, [&](const HttpHeader& h) { return iequals(h.name, name); });
  headers.push_back(HttpHeader{std::move(name), std::move(value)});
}

void apply_extra_headers(HttpHeaders& headers, const ProviderConfig& provider) {
  for (const HttpHeader& header : provider.extra_headers) {
    set_header(headers, header.name, header.value);
  }
}

namespace {

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool is_valid_base64(std::string_view text) {
  if (text.empty()) return false;
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') {
    ++padding;
  }
  const std::string_view body = text.substr(0, text.size() - padding);
  return std::all_of(body.begin(), body.end(), [](char c) { return base64_value(c) >= 0; });
}

std::string decode_base64_prefix(std::string_view text, std::size_t max_bytes) {
  std::string out;
  uint32_t accumulator = 0;
  int bits = 0;
  for (char c : text) {
    const int value = base64_value(c);
    if (value < 0) break;
    accumulator = (accumulator << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((accumulator >> bits) & 0xFFu));
      if (out.size() >= max_bytes) break;
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> sniff_image_media_type(std::string_view base64) {
  const std::string head = decode_base64_prefix(base64.substr(0, 32), 16);
  const auto has = [&](std::size_t offset, std::string_view magic) {
    return head.size() >= offset + magic.size() && head.compare(offset, magic.size(), magic) == 0;
  };
  if (has(0, "\x89PNG\r\n\x1a\n")) return "image/png";
  if (has(0, "\xFF\xD8\xFF")) return "image/jpeg";
  if (has(0, "GIF87a") || has(0, "GIF89a")) return "image/gif";
  if (has(0, "RIFF") && has(8, "WEBP")) return "image/webp";
  return std::nullopt;
}

std::variant<Image, Failure> parse_image(std::string_view image, std::string_view where) {
  Image out;
  if (starts_with(image, "http://") || starts_with(image, "https://")) {
    out.url = std::string(image);
    return out;
  }
  std::string declared_type;
  if (starts_with(image, "data:")) {
    const std::size_t marker = image.find(";base64,");
    if (marker == std::string_view::npos) {
      return invalid_request(fmt::format("{}: a data: URL image must be base64 (;base64,)", where));
    }
    declared_type = std::string(image.substr(5, marker - 5));
    image.remove_prefix(marker + 8);
  }
  if (!is_valid_base64(image)) {
    return invalid_request(fmt::format("{}: image is not valid base64", where));
  }
  if (auto sniffed = sniff_image_media_type(image)) {
    out.media_type = std::move(*sniffed);
  } else if (starts_with(declared_type, "image/")) {
    out.media_type = declared_type;
  } else {
    return invalid_request(
        fmt::format("{}: unrecognised image format (expected png, jpeg, gif or webp)", where));
  }
  out.base64 = std::string(image);
  return out;
}

std::variant<Json, Failure> parse_json_object(std::string_view text, std::string_view where,
                                              bool empty_is_object) {
  if (trim(text).empty() && empty_is_object) return Json::object();
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return invalid_request(fmt::format("{}: not valid JSON", where));
  }
  if (!parsed.is_object()) {
    return invalid_request(fmt::format("{}: must be a JSON object", where));
  }
  return parsed;
}

std::variant<Json, Failure> tool_parameters(const protocol::Tool& tool, std::size_t index) {
  if (trim(tool.parameters).empty()) {
    return Json{{"type", "object"}, {"properties", Json::object()}};
  }
  return parse_json_object(tool.parameters, fmt::format("tools[{}].parameters", index));
}

std::variant<Json, Failure> openai_style_tools(const protocol::Request& request) {
  if (request.tools.empty()) return Json();
  Json tools = Json::array();
  for (std::size_t i = 0; i < request.tools.size(); ++i) {
    const protocol::Tool& tool = request.tools[i];
    if (tool.name.empty()) return invalid_request(fmt::format("tools[{}].name: empty", i));
    auto parameters = tool_parameters(tool, i);
    if (auto* failure = std::get_if<Failure>(&parameters)) return std::move(*failure);
    Json function = {{"name", tool.name}, {"parameters", std::move(std::get<Json>(parameters))}};
    if (!tool.description.empty()) function["description"] = tool.description;
    tools.push_back(Json{{"type", "function"}, {"function", std::move(function)}});
  }
  return tools;
}

std::variant<Json, Failure> openai_style_tool_choice(const protocol::Request& request) {
  const std::string& choice = request.tool_choice;
  if (choice.empty()) return Json();
  if (choice == "auto" || choice == "none" || choice == "required") return Json(choice);
  if (choice == "function") {
    if (request.tool_choice_function.empty()) {
      return invalid_request("tool_choice_function: empty while tool_choice is 'function'");
    }
    return Json{{"type", "function"}, {"function", {{"name", request.tool_choice_function}}}};
  }
  return invalid_request(fmt::format(
      "tool_choice: unknown value '{}' (expected auto, none, required or function)", choice));
}

std::optional<double> effective_temperature(const protocol::Request& request,
                                            const ProviderConfig& provider) {
  return request.temperature ? request.temperature : provider.temperature;
}

double clamp_temperature(double value, double low, double high, std::string_view range_text,
                         std::vector<std::string>& notes) {
  const double clamped = std::clamp(value, low, high);
  if (clamped != value) {
    notes.push_back(fmt::format("temperature {} clamped to {} ({})", format_number(value),
                                format_number(clamped), range_text));
  }
  return clamped;
}

std::string format_number(double value) {
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

std::string tool_name_for_call_id(const std::vector<protocol::Message>& messages,
                                  std::size_t before, const std::string& call_id) {
  for (std::size_t i = std::min(before, messages.size()); i-- > 0;) {
    for (const protocol::ToolCall& call : messages[i].tool_calls) {
      if (call.id == call_id) return call.name;
    }
  }
  return {};
}

std::string call_id_for_tool_name(const std::vector<protocol::Message>& messages,
                                  std::size_t before, const std::string& name) {
  for (std::size_t i = std::min(before, messages.size()); i-- > 0;) {
    if (messages[i].role != "assistant" || messages[i].tool_calls.empty()) continue;
    for (const protocol::ToolCall& call : messages[i].tool_calls) {
      if (call.name == name) return call.id;
    }
    return {};
  }
  return {};
}

std::string_view normalise_finish_reason(std::string_view raw) {
  if (raw == "stop" || raw == "end_turn" || raw == "stop_sequence") return protocol::finish::stop;
  if (raw == "length" || raw == "max_tokens" || raw == "model_context_window_exceeded") {
    return protocol::finish::length;
  }
  if (raw == "tool_calls" || raw == "tool_use" || raw == "function_call") {
    return protocol::finish::tool_calls;
  }
  if (raw == "content_filter" || raw == "refusal") return protocol::finish::content_filter;
  // pause_turn, Ollama's load/unload and values newer than this build: the answer ended.
  return protocol::finish::stop;
}

std::string dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string_view json_string(const Json& object, std::string_view key) {
  if (!object.is_object()) return {};
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get_ref<const std::string&>();
}

std::optional<uint64_t> json_uint(const Json& object, std::string_view key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) {
    const int64_t value = it->get<int64_t>();
    return value < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(value));
  }
  if (it->is_number_float()) {
    const double value = it->get<double>();
    return value < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(value));
  }
  return std::nullopt;
}

const Json* json_object(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it != object.end() && it->is_object() ? &*it : nullptr;
}

const Json* json_array(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it != object.end() && it->is_array() ? &*it : nullptr;
}

bool json_true(const Json& object, std::string_view key) {
  if (!object.is_object()) return false;
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

std::optional<std::string> json_text_or_dump(const Json& object, std::string_view key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end()) return std::nullopt;
  return it->is_string() ? it->get<std::string>() : dump(*it);
}

std::string dump(const JsonValue& value) {
  return dump(value.to_json());
}

std::string_view json_string(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  return member != nullptr && member->is_string() ? member->string() : std::string_view();
}

std::optional<uint64_t> json_uint(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  if (member == nullptr) return std::nullopt;
  switch (member->type()) {
    case JsonValue::Type::number_unsigned:
      return member->unsigned_value();
    case JsonValue::Type::number_integer: {
      const int64_t value = member->integer_value();
      return value < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(value));
    }
    case JsonValue::Type::number_float: {
      const double value = member->float_value();
      return value < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(value));
    }
    default:
      return std::nullopt;
  }
}

const JsonValue* json_object(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  return member != nullptr && member->is_object() ? member : nullptr;
}

const JsonValue* json_array(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  return member != nullptr && member->is_array() ? member : nullptr;
}

bool json_true(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  return member != nullptr && member->is_boolean() && member->boolean();
}

std::optional<std::string> json_text_or_dump(const JsonValue& object, std::string_view key) {
  const JsonValue* member = object.find(key);
  if (member == nullptr) return std::nullopt;
  return member->is_string() ? std::string(member->string()) : dump(*member);
}

namespace {

// Howard Hinnant's days_from_civil: proleptic Gregorian date -> days since 1970-01-01.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool read_int(std::string_view text, std::size_t pos, std::size_t len, int& out) {
  if (pos + len > text.size()) return false;
  auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + pos + len, out);
  return ec == std::errc() && ptr == text.data() + pos + len;
}

}  // namespace

int64_t parse_rfc3339_unix_s(std::string_view text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (text.size() < 20 || !read_int(text, 0, 4, year) || text[4] != '-' ||
      !read_int(text, 5, 2, month) || text[7] != '-' || !read_int(text, 8, 2, day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !read_int(text, 11, 2, hour) ||
      text[13] != ':' || !read_int(text, 14, 2, minute) || text[16] != ':' ||
      !read_int(text, 17, 2, second)) {
    return 0;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return 0;
  }
  std::size_t pos = 19;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) != 0) ++pos;
  }
  int64_t offset_s = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int off_h = 0, off_m = 0;
    if (!read_int(text, pos + 1, 2, off_h) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !read_int(text, pos + 4, 2, off_m)) {
      return 0;
    }
    offset_s = (off_h * 3600 + off_m * 60) * (text[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return 0;
  }
  if (pos != text.size()) return 0;
  const int64_t days =
      days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
  return days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
}

// ---- DecoderBase ----

void DecoderBase::on_headers(int status, const HttpHeaders& headers) {
  status_ = status;
  if (status < 200 || status >= 300) {
    mode_ = Mode::error;
    // Only these matter for classification; keeping them all would cost memory per attempt.
    for (const HttpHeader& header : headers) {
      if (iequals(header.name, "retry-after") || iequals(header.name, "retry-after-ms") ||
          iequals(header.name, "x-should-retry")) {
        headers_.push_back(header);
      }
    }
  } else if (!stream_) {
    mode_ = Mode::whole;
  } else {
    const std::string* content_type = find_header(headers, "content-type");
    const bool json_body = content_type != nullptr && icontains(*content_type, "application/json");
    mode_ = json_body && switch_to_whole_on_json() ? Mode::whole : Mode::stream;
  }
  for (std::string_view name : {"x-request-id", "request-id"}) {
    if (const std::string* id = find_header(headers, name); id != nullptr && !id->empty()) {
      headers_.push_back(HttpHeader{"request-id", *id});
      break;
    }
  }
}

void DecoderBase::emit_header_metadata(DecodeSink& sink) {
  if (header_metadata_sent_) return;
  header_metadata_sent_ = true;
  if (const std::string* id = find_header(headers_, "request-id")) sink.on_metadata(*id, "", 0);
}

void DecoderBase::on_body(std::string_view bytes, DecodeSink& sink) {
  if (stopped_) return;
  switch (mode_) {
    case Mode::stream:
      emit_header_metadata(sink);
      feed_stream(bytes, sink);
      return;
    case Mode::whole:
      if (buffer_.size() + bytes.size() > kMaxWholeBodyBytes) {
        Failure failure;
        failure.kind = protocol::ErrorKind::internal;
        failure.status = static_cast<uint16_t>(status_);
        failure.message = fmt::format("response too large (over {} MiB)", kMaxWholeBodyBytes >> 20);
        fail_stream(sink, failure);
        buffer_.clear();
        buffer_.shrink_to_fit();
        return;
      }
      buffer_.append(bytes);
      return;
    case Mode::error:
    case Mode::pending: {
      // The message is at the start; the rest of an oversized error body is dropped.
      const std::size_t room = kMaxErrorBodyBytes - std::min(kMaxErrorBodyBytes, buffer_.size());
      buffer_.append(bytes.substr(0, room));
      return;
    }
  }
}

std::optional<Failure> DecoderBase::finish(DecodeSink& sink) {
  if (stopped_) return std::nullopt;
  switch (mode_) {
    case Mode::stream:
      emit_header_metadata(sink);
      end_stream(sink);
      return std::nullopt;
    case Mode::whole: {
      emit_header_metadata(sink);
      const Json body = Json::parse(buffer_, nullptr, /*allow_exceptions=*/false);
      const std::size_t size = buffer_.size();
      buffer_.clear();
      if (body.is_discarded() || !body.is_object()) {
        Failure failure;
        failure.kind = protocol::ErrorKind::server_error;
        failure.status = static_cast<uint16_t>(status_);
        failure.message = fmt::format("unparsable response body ({} bytes)", size);
        return failure;
      }
      try {
        std::optional<Failure> failure = decode_whole(body, sink);
        // A complete JSON document is its own end marker.
        if (!failure) sink.on_terminator();
        return failure;
      } catch (const Json::exception& e) {
        Failure failure;
        failure.kind = protocol::ErrorKind::server_error;
        failure.status = static_cast<uint16_t>(status_);
        failure.message = std::string("unexpected response shape: ") + e.what();
        return failure;
      }
    }
    case Mode::error:
    case Mode::pending: {
      const Json body = Json::parse(buffer_, nullptr, /*allow_exceptions=*/false);
      const bool is_json = !body.is_discarded();
      ProviderError error = extract_error(is_json ? &body : nullptr, buffer_);
      error.status = static_cast<uint16_t>(status_);
      if (error.message.empty() && !is_json) {
        // Not JSON (an HTML page from a proxy, plain text): a short excerpt helps the user.
        constexpr std::size_t kExcerpt = 200;
        error.message = std::string(trim(std::string_view(buffer_).substr(0, kExcerpt)));
      }
      return classify(error);
    }
  }
  return std::nullopt;
}

Failure DecoderBase::classify(const ProviderError& error) const {
  return classify_provider_error(error, headers_, clock_.unix_ms(), provider_.api_key);
}

void DecoderBase::fail_stream(DecodeSink& sink, const Failure& failure) {
  if (stopped_) return;
  stopped_ = true;
  sink.on_stream_error(failure);
}

void DecoderBase::fail_if_overflowed(bool overflowed, std::string_view what, DecodeSink& sink) {
  if (!overflowed) return;
  Failure failure;
  failure.kind = protocol::ErrorKind::internal;
  failure.message = "stream " + std::string(what) + " too large";
  fail_stream(sink, failure);
}

void DecoderBase::malformed(DecodeSink& sink, std::string_view why) {
  sink.on_malformed_event(why);
}

}  // namespace dispatch::worker::detail
