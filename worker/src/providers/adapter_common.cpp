#include "adapter_common.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>

#include "dispatch/common/strings.hpp"

namespace dispatch::worker::detail {

Failure invalid_request(std::string message) {
  Failure failure;
  failure.kind = protocol::ErrorKind::invalid_request;
  failure.message = std::move(message);
  return failure;
}

Result<void, Failure> check_key(const ProviderConfig& provider, bool required) {
  if (!provider.api_key.empty()) return {};
  if (!required && provider.api_key_env.empty()) return {};
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

HttpRequest json_post(std::string url, std::string_view accept, HttpHeaders format_headers,
                      const ProviderConfig& provider, std::string body) {
  HttpRequest request;
  request.method = "POST";
  request.url = std::move(url);
  request.headers.push_back({"Content-Type", "application/json"});
  request.headers.push_back({"Accept", std::string(accept)});
  for (HttpHeader& header : format_headers) request.headers.push_back(std::move(header));
  apply_extra_headers(request.headers, provider);
  request.body = std::move(body);
  return request;
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

// A tool's schema when it gives none.
constexpr std::string_view kEmptySchema = R"({"type":"object","properties":{}})";

}  // namespace

std::optional<std::string_view> sniff_image_media_type(std::string_view base64) {
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

Result<Image, Failure> parse_image(std::string_view image, std::string_view where) {
  Image out;
  if (istarts_with(image, "http://") || istarts_with(image, "https://")) {
    out.url = image;
    return out;
  }
  std::string_view declared_type;
  if (image.starts_with("data:")) {
    const std::size_t marker = image.find(";base64,");
    if (marker == std::string_view::npos) {
      return invalid_request(fmt::format("{}: a data: URL image must be base64 (;base64,)", where));
    }
    declared_type = image.substr(5, marker - 5);
    image.remove_prefix(marker + 8);
  }
  if (!is_valid_base64(image)) {
    return invalid_request(fmt::format("{}: image is not valid base64", where));
  }
  if (auto sniffed = sniff_image_media_type(image)) {
    out.media_type = *sniffed;
  } else if (declared_type.starts_with("image/")) {
    out.media_type = declared_type;
  } else {
    return invalid_request(
        fmt::format("{}: unrecognised image format (expected png, jpeg, gif or webp)", where));
  }
  out.base64 = image;
  return out;
}

Json parse_json(std::string_view text) {
  if (!json_depth_within(text)) return Json(Json::value_t::discarded);
  return Json::parse(text, nullptr, /*allow_exceptions=*/false);
}

Result<std::string_view, Failure> json_object_text(std::string_view text, std::string_view where,
                                                   bool empty_is_object) {
  text = trim(text);
  if (text.empty() && empty_is_object) return std::string_view("{}");
  // Refused as every JSON from outside is (parse_json): a provider would have to recurse it.
  if (!json_depth_within(text)) {
    return invalid_request(
        fmt::format("{}: JSON nested deeper than {} levels", where, kMaxJsonDepth));
  }
  // accept() runs the parser without building anything: a schema of a million elements costs
  // its text, not a DOM of it.
  if (!Json::accept(text)) return invalid_request(fmt::format("{}: not valid JSON", where));
  if (text.front() != '{') return invalid_request(fmt::format("{}: must be a JSON object", where));
  return text;
}

Result<std::string_view, Failure> tool_parameters(const protocol::Tool& tool, std::size_t index) {
  if (trim(tool.parameters).empty()) return kEmptySchema;
  return json_object_text(tool.parameters, fmt::format("tools[{}].parameters", index));
}

Result<void, Failure> check_tools(const protocol::Request& request) {
  for (std::size_t i = 0; i < request.tools.size(); ++i) {
    if (request.tools[i].name.empty()) {
      return invalid_request(fmt::format("tools[{}].name: empty", i));
    }
    if (auto parameters = tool_parameters(request.tools[i], i); !parameters) {
      return parameters.error();
    }
  }
  return {};
}

Result<void, Failure> write_openai_style_tools(JsonWriter& out, const protocol::Request& request) {
  if (request.tools.empty()) return {};
  out.key("tools").begin_array();
  for (std::size_t i = 0; i < request.tools.size(); ++i) {
    const protocol::Tool& tool = request.tools[i];
    if (tool.name.empty()) return invalid_request(fmt::format("tools[{}].name: empty", i));
    auto parameters = tool_parameters(tool, i);
    if (!parameters) return parameters.error();
    out.begin_object().member("type", "function").key("function").begin_object();
    out.member("name", tool.name);
    if (!tool.description.empty()) out.member("description", tool.description);
    out.key("parameters").raw(*parameters).end_object().end_object();
  }
  out.end_array();
  return {};
}

Result<void, Failure> check_tool_choice(const protocol::Request& request) {
  const std::string& choice = request.tool_choice;
  if (choice.empty() || choice == "auto" || choice == "none" || choice == "required") return {};
  if (choice == "function") {
    if (request.tool_choice_function.empty()) {
      return invalid_request("tool_choice_function: empty while tool_choice is 'function'");
    }
    return {};
  }
  return invalid_request(fmt::format(
      "tool_choice: unknown value '{}' (expected auto, none, required or function)", choice));
}

void write_openai_style_tool_choice(JsonWriter& out, const protocol::Request& request) {
  const std::string& choice = request.tool_choice;
  if (choice.empty()) return;
  out.key("tool_choice");
  if (choice != "function") {
    out.value(choice);
    return;
  }
  out.begin_object().member("type", "function").key("function").begin_object();
  out.member("name", request.tool_choice_function).end_object().end_object();
}

Result<void, Failure> check_response_format(const protocol::Request& request) {
  const std::string& format = request.response_format;
  if (format.empty() || format == "text" || format == "json_object" || format == "json_schema") {
    return {};
  }
  return invalid_request(fmt::format(
      "response_format: unknown value '{}' (expected text, json_object or json_schema)", format));
}

Failure unknown_role(std::size_t index, std::string_view role) {
  return invalid_request(fmt::format("messages[{}].role: unknown role '{}'", index, role));
}

Result<void, Failure> check_images_only_in_user(const protocol::Message& message,
                                                std::size_t index) {
  if (message.images.empty() || message.role == "user") return {};
  return invalid_request(
      fmt::format("messages[{}]: images are only supported in user messages", index));
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

namespace {

// A count a provider sent as a float (12.0, 1e3) as an integer; nullopt when negative or beyond
// uint64 (converting such a double is undefined behaviour: 1e42 tokens was found by fuzzing).
std::optional<uint64_t> uint_from_double(double value) {
  constexpr double kTwoTo64 = 18446744073709551616.0;
  if (!(value >= 0.0) || value >= kTwoTo64) return std::nullopt;
  return static_cast<uint64_t>(value);
}

}  // namespace

std::optional<uint64_t> json_uint(const Json& object, std::string_view key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) {
    const int64_t value = it->get<int64_t>();
    return value < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(value));
  }
  if (it->is_number_float()) return uint_from_double(it->get<double>());
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
    case JsonValue::Type::number_float:
      return uint_from_double(member->float_value());
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
  } else if (!options_.stream) {
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

void DecoderBase::emit_header_metadata(DecodeListener& listener) {
  if (header_metadata_sent_) return;
  header_metadata_sent_ = true;
  if (const std::string* id = find_header(headers_, "request-id")) listener.on_metadata(*id, "", 0);
}

void DecoderBase::on_body(std::string_view bytes, DecodeListener& listener) {
  if (stopped_) return;
  switch (mode_) {
    case Mode::stream:
      emit_header_metadata(listener);
      feed_stream(bytes, listener);
      return;
    case Mode::whole:
      buffer_whole(bytes, listener);
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

void DecoderBase::buffer_whole(std::string_view bytes, DecodeListener& listener) {
  if (buffer_.size() + bytes.size() > options_.max_body_bytes) {
    fail_stream(listener, response_too_large(options_.max_body_bytes));
    buffer_.clear();
    buffer_.shrink_to_fit();
    return;
  }
  buffer_.append(bytes);
}

Result<void, Failure> DecoderBase::finish(DecodeListener& listener) {
  if (stopped_) return {};
  switch (mode_) {
    case Mode::stream:
      emit_header_metadata(listener);
      end_stream(listener);
      return {};
    case Mode::whole:
      emit_header_metadata(listener);
      return finish_whole(listener);
    case Mode::error:
    case Mode::pending:
      return finish_error();
  }
  return {};
}

Result<void, Failure> DecoderBase::finish_whole(DecodeListener& listener) {
  const Json body = parse_json(buffer_);
  const std::size_t size = buffer_.size();
  buffer_.clear();
  Failure failure;
  failure.kind = protocol::ErrorKind::server_error;
  failure.status = static_cast<uint16_t>(status_);
  if (body.is_discarded() || !body.is_object()) {
    failure.message = fmt::format("unparsable response body ({} bytes)", size);
    return failure;
  }
  try {
    Result<void, Failure> decoded = decode_whole(body, listener);
    // A complete JSON document is its own end marker.
    if (decoded) listener.on_terminator();
    return decoded;
  } catch (const Json::exception& e) {
    failure.message = std::string("unexpected response shape: ") + e.what();
    return failure;
  }
}

Failure DecoderBase::finish_error() const {
  const Json body = parse_json(buffer_);
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

Failure DecoderBase::classify(const ProviderError& error) const {
  return classify_provider_error(error, headers_, clock_.unix_ms(), provider_.secrets());
}

void DecoderBase::fail_stream(DecodeListener& listener, const Failure& failure) {
  if (stopped_) return;
  stopped_ = true;
  listener.on_stream_error(failure);
}

void DecoderBase::fail_if_overflowed(bool overflowed, std::string_view what,
                                     DecodeListener& listener) {
  if (!overflowed) return;
  Failure failure;
  failure.kind = protocol::ErrorKind::internal;
  failure.message = "stream " + std::string(what) + " too large";
  fail_stream(listener, failure);
}

void DecoderBase::malformed(DecodeListener& listener, std::string_view why) {
  listener.on_malformed_event(why);
}

}  // namespace dispatch::worker::detail
