#include "dispatch/worker/providers/error_classifier.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "dispatch/common/strings.hpp"
#include "dispatch/worker/config.hpp"

namespace dispatch::worker {

using protocol::ErrorKind;

namespace {

// Codes, types and message fragments are compared case-insensitively: providers are not
// consistent ("DataInspectionFailed" vs "data_inspection_failed").
bool any_contains(std::string_view haystack, std::initializer_list<std::string_view> needles) {
  return std::any_of(needles.begin(), needles.end(),
                     [&](std::string_view needle) { return icontains(haystack, needle); });
}

bool mentions(const ProviderError& e, std::initializer_list<std::string_view> needles) {
  return any_contains(e.code, needles) || any_contains(e.type, needles);
}

bool is_context_length(const ProviderError& e) {
  return mentions(e, {"context_length_exceeded", "context_length"}) ||
         any_contains(e.message,
                      {"context_length_exceeded", "prompt is too long", "maximum context length",
                       "range of input length", "context window", "context length"});
}

bool is_content_filter(const ProviderError& e) {
  return mentions(e, {"content_policy_violation", "content_filter", "datainspectionfailed",
                      "data_inspection_failed"}) ||
         any_contains(e.message, {"content management policy", "content_policy_violation",
                                  "content filter", "safety filter", "safety system"});
}

// Billing problems look like rate limits on the wire but waiting does not fix them.
bool is_quota_exhausted(const ProviderError& e) {
  return mentions(e, {"insufficient_quota", "arrearage", "billing_hard_limit"});
}

// Used when there is no status (an error event in a 200 stream) or the status says little.
std::optional<ErrorKind> kind_from_code(const ProviderError& e) {
  if (is_context_length(e)) return ErrorKind::context_length_exceeded;
  if (is_content_filter(e)) return ErrorKind::content_filtered;
  if (is_quota_exhausted(e)) return ErrorKind::rate_limited;
  if (mentions(e, {"overloaded"})) return ErrorKind::overloaded;
  if (mentions(e, {"rate_limit", "throttling", "too_many_requests"})) {
    return ErrorKind::rate_limited;
  }
  if (mentions(e, {"authentication", "permission", "invalid_api_key", "invalidapikey",
                   "unauthorized", "accessdenied"})) {
    return ErrorKind::authentication;
  }
  if (mentions(e, {"not_found", "notfound", "model_not_found"})) {
    return ErrorKind::model_not_available;
  }
  if (mentions(e, {"timeout"})) return ErrorKind::timeout;
  if (mentions(e, {"invalid_request", "invalidparameter", "request_too_large", "bad_request"})) {
    return ErrorKind::invalid_request;
  }
  if (mentions(e, {"api_error", "server_error", "internalerror", "internal_error"})) {
    return ErrorKind::server_error;
  }
  return std::nullopt;
}

ErrorKind kind_from_status(const ProviderError& e) {
  const uint16_t status = e.status;
  if (status == 0) return kind_from_code(e).value_or(ErrorKind::server_error);
  if (is_quota_exhausted(e)) return ErrorKind::rate_limited;
  if (mentions(e, {"overloaded_error"})) return ErrorKind::overloaded;
  switch (status) {
    case 400:
    case 422:
      if (is_context_length(e)) return ErrorKind::context_length_exceeded;
      if (is_content_filter(e)) return ErrorKind::content_filtered;
      return ErrorKind::invalid_request;
    case 401:
    case 403:
      return ErrorKind::authentication;
    case 404:
      return ErrorKind::model_not_available;
    case 408:
      return ErrorKind::timeout;
    case 409:
      return ErrorKind::server_error;
    case 413:
      return ErrorKind::invalid_request;
    case 429:
      return ErrorKind::rate_limited;
    case 503:
    case 529:
      return ErrorKind::overloaded;
    default:
      break;
  }
  if (status >= 500) return ErrorKind::server_error;
  if (status >= 400) {
    if (is_context_length(e)) return ErrorKind::context_length_exceeded;
    if (is_content_filter(e)) return ErrorKind::content_filtered;
    return ErrorKind::invalid_request;
  }
  // 1xx/3xx as a final answer: the endpoint is not a provider API (e.g. a redirecting proxy).
  return ErrorKind::server_error;
}

std::optional<double> parse_non_negative_number(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  if (!std::isfinite(value) || value < 0) return std::nullopt;
  return value;
}

// A month of waiting is "never" for any caller; the cap keeps the conversion defined.
constexpr double kMaxRetryAfterMs = 30.0 * 24 * 3600 * 1000;

uint64_t capped_retry_after_ms(double ms) {
  return static_cast<uint64_t>(std::llround(std::min(ms, kMaxRetryAfterMs)));
}

std::optional<int64_t> parse_http_date_unix_s(const std::string& text) {
  // IMF-fixdate, then the two obsolete forms RFC 9110 says recipients must accept.
  static constexpr std::array<const char*, 3> kFormats = {
      "%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"};
  for (const char* format : kFormats) {
    std::tm tm{};
    const char* end = strptime(text.c_str(), format, &tm);
    if (end != nullptr && trim(std::string_view(end)).empty()) return timegm(&tm);
  }
  return std::nullopt;
}

// The engine's text is "<curl_easy_strerror>: <error buffer>", and curl's error buffer often
// ends with the same generic text again ("Couldn't connect to server: Failed to connect to
// 127.0.0.1 port 9 after 0 ms: Couldn't connect to server"). Keeps the specific part once.
std::string curl_detail(const TransportError& error) {
  const std::string_view generic = curl_easy_strerror(static_cast<CURLcode>(error.curl_code));
  std::string_view text = trim(error.message);
  if (!generic.empty() && text.starts_with(generic)) {
    std::string_view rest = text.substr(generic.size());
    if (rest.starts_with(": ")) rest.remove_prefix(2);
    if (!trim(rest).empty()) text = trim(rest);
  }
  if (text.size() > generic.size() + 2 && text.substr(text.size() - generic.size()) == generic &&
      text.substr(text.size() - generic.size() - 2, 2) == ": ") {
    text.remove_suffix(generic.size() + 2);
  }
  return std::string(text);
}

// A URL fit to show: no "user:password@" (a credential some write into base URLs).
std::string displayable_url(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  const std::size_t host_start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  const std::size_t host_end = std::min(url.find('/', host_start), url.size());
  const std::size_t at = url.rfind('@', host_end - 1);
  if (at == std::string_view::npos || at < host_start || host_end == host_start) {
    return std::string(url);
  }
  return std::string(url.substr(0, host_start)) + std::string(url.substr(at + 1));
}

bool is_loopback_url(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  std::string_view host = scheme_end == std::string_view::npos ? url : url.substr(scheme_end + 3);
  host = host.substr(0, host.find('/'));
  if (const std::size_t at = host.rfind('@'); at != std::string_view::npos) {
    host.remove_prefix(at + 1);
  }
  return host.starts_with("127.") || host.starts_with("[::1]") ||
         iequals(host.substr(0, host.find(':')), "localhost");
}

// curl 7.88 reports every failed connect as "Couldn't connect to server" without the errno.
// On loopback that is a refused connection (nothing listens); elsewhere it may also be an
// unreachable host.
std::string connect_failure_reason(std::string_view detail, std::string_view base_url) {
  if (icontains(detail, "refused")) return "connection refused";
  if (icontains(detail, "no route to host")) return "no route to host";
  if (icontains(detail, "unreachable")) return "network unreachable";
  return is_loopback_url(base_url) ? "connection refused"
                                   : "connection refused or host unreachable";
}

std::string transport_sentence(const TransportError& error, const ProviderConfig& provider) {
  const std::string where =
      fmt::format("{} at {}", provider.name, displayable_url(provider.base_url));
  const std::string detail = curl_detail(error);
  switch (static_cast<CURLcode>(error.curl_code)) {
    case CURLE_COULDNT_CONNECT:
      return fmt::format("cannot connect to {}: {} (is the server running?)", where,
                         connect_failure_reason(detail, provider.base_url));
    case CURLE_COULDNT_RESOLVE_HOST:
      return fmt::format("cannot connect to {}: host name not found (check the base URL)", where);
    case CURLE_COULDNT_RESOLVE_PROXY:
      return fmt::format("cannot connect to {}: proxy host name not found ({})", where, detail);
    case CURLE_OPERATION_TIMEDOUT:
      if (icontains(detail, "connection timed out") || icontains(detail, "resolving timed out")) {
        return fmt::format("cannot connect to {}: {}", where, detail);
      }
      return fmt::format("request to {} timed out: {}", where, detail);
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
      return fmt::format("TLS with {} failed: {}", where, detail);
    case CURLE_GOT_NOTHING:
      return fmt::format("{} closed the connection without answering", where);
    case CURLE_PARTIAL_FILE:
      return fmt::format("the answer from {} was cut off: {}", where, detail);
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return fmt::format("connection to {} broke: {}", where, detail);
    default:
      if (detail.empty()) return fmt::format("request to {} failed", where);
      return fmt::format("request to {} failed: {}", where, detail);
  }
}

// A Go duration as OpenAI writes it ("1m30.5s", "120ms", "6m0s"), or plain seconds.
std::optional<double> parse_duration_ms(std::string_view text) {
  text = trim(text);
  if (auto seconds = parse_non_negative_number(text)) return *seconds * 1000.0;
  double total_ms = 0;
  bool any = false;
  while (!text.empty()) {
    double value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || !std::isfinite(value) || value < 0) return std::nullopt;
    text.remove_prefix(static_cast<std::size_t>(ptr - text.data()));
    std::size_t unit_length = 0;
    while (unit_length < text.size() && std::isalpha(static_cast<unsigned char>(text[unit_length])))
      ++unit_length;
    const std::string_view unit = text.substr(0, unit_length);
    text.remove_prefix(unit_length);
    double scale = 0;
    if (unit == "h")
      scale = 3'600'000;
    else if (unit == "m")
      scale = 60'000;
    else if (unit == "s")
      scale = 1'000;
    else if (unit == "ms")
      scale = 1;
    else if (unit == "us")
      scale = 0.001;
    else if (unit == "ns")
      scale = 0.000001;
    else
      return std::nullopt;
    total_ms += value * scale;
    any = true;
  }
  if (!any) return std::nullopt;
  return total_ms;
}

// An RFC 3339 time ("2024-05-01T12:00:30Z", fraction and offset allowed) as ms from now.
std::optional<double> parse_rfc3339_from_now_ms(const std::string& text, int64_t now_unix_ms) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == nullptr) return std::nullopt;
  double fraction = 0;
  if (*end == '.') {
    const char* start = end;
    while (std::isdigit(static_cast<unsigned char>(*++end))) {
    }
    fraction = std::strtod(std::string(start, end).c_str(), nullptr);
  }
  int64_t offset_s = 0;
  if (*end == '+' || *end == '-') {
    int hours = 0;
    int minutes = 0;
    if (std::sscanf(end + 1, "%2d:%2d", &hours, &minutes) != 2) return std::nullopt;
    offset_s = (*end == '+' ? 1 : -1) * (hours * 3600 + minutes * 60);
  } else if (*end != 'Z' && *end != 'z') {
    return std::nullopt;
  }
  const double at_ms = (static_cast<double>(timegm(&tm) - offset_s) + fraction) * 1000.0;
  return std::max(0.0, at_ms - static_cast<double>(now_unix_ms));
}

std::optional<uint64_t> header_count(const HttpHeaders& headers, std::string_view name) {
  const std::string* value = find_header(headers, name);
  if (value == nullptr) return std::nullopt;
  auto number = parse_non_negative_number(*value);
  if (!number || *number > 1e15) return std::nullopt;
  return static_cast<uint64_t>(*number);
}

}  // namespace

RateLimitHeaders parse_rate_limit_headers(const HttpHeaders& headers, int64_t now_unix_ms) {
  RateLimitHeaders limits;
  const auto as_ms = [](std::optional<double> ms) -> std::optional<uint64_t> {
    if (!ms) return std::nullopt;
    return capped_retry_after_ms(*ms);
  };
  const auto reset = [&](std::string_view name, bool rfc3339) -> std::optional<uint64_t> {
    const std::string* value = find_header(headers, name);
    if (value == nullptr) return std::nullopt;
    return as_ms(rfc3339 ? parse_rfc3339_from_now_ms(std::string(trim(*value)), now_unix_ms)
                         : parse_duration_ms(*value));
  };
  limits.limit_requests = header_count(headers, "x-ratelimit-limit-requests");
  limits.remaining_requests = header_count(headers, "x-ratelimit-remaining-requests");
  limits.reset_requests_ms = reset("x-ratelimit-reset-requests", false);
  limits.limit_tokens = header_count(headers, "x-ratelimit-limit-tokens");
  limits.remaining_tokens = header_count(headers, "x-ratelimit-remaining-tokens");
  limits.reset_tokens_ms = reset("x-ratelimit-reset-tokens", false);
  if (!limits.remaining_requests) {
    limits.limit_requests = header_count(headers, "anthropic-ratelimit-requests-limit");
    limits.remaining_requests = header_count(headers, "anthropic-ratelimit-requests-remaining");
    limits.reset_requests_ms = reset("anthropic-ratelimit-requests-reset", true);
  }
  if (!limits.remaining_tokens) {
    limits.limit_tokens = header_count(headers, "anthropic-ratelimit-tokens-limit");
    limits.remaining_tokens = header_count(headers, "anthropic-ratelimit-tokens-remaining");
    limits.reset_tokens_ms = reset("anthropic-ratelimit-tokens-reset", true);
  }
  return limits;
}

std::optional<uint64_t> parse_retry_after(const HttpHeaders& headers, int64_t now_unix_ms) {
  if (const std::string* ms = find_header(headers, "retry-after-ms")) {
    if (auto value = parse_non_negative_number(*ms)) return capped_retry_after_ms(*value);
  }
  const std::string* header = find_header(headers, "retry-after");
  if (header == nullptr) return std::nullopt;
  if (auto seconds = parse_non_negative_number(*header))
    return capped_retry_after_ms(*seconds * 1000.0);
  if (auto date_s = parse_http_date_unix_s(std::string(trim(*header)))) {
    const int64_t delta_ms = *date_s * 1000 - now_unix_ms;
    return delta_ms <= 0 ? 0 : capped_retry_after_ms(static_cast<double>(delta_ms));
  }
  return std::nullopt;
}

Failure classify_provider_error(const ProviderError& error, const HttpHeaders& headers,
                                int64_t now_unix_ms, std::span<const std::string> secrets) {
  Failure failure;
  failure.kind = kind_from_status(error);
  failure.status = error.status;
  failure.code = scrub_secrets(error.code.empty() ? error.type : error.code, secrets);
  failure.message = scrub_secrets(error.message, secrets);
  if (failure.message.empty()) {
    failure.message = error.status != 0 ? "HTTP " + std::to_string(error.status)
                                        : std::string("error event in stream");
  }
  failure.retry_after_ms = parse_retry_after(headers, now_unix_ms);
  failure.limits = parse_rate_limit_headers(headers, now_unix_ms);
  if (const std::string* should_retry = find_header(headers, "x-should-retry")) {
    const std::string_view value = trim(*should_retry);
    if (iequals(value, "true") || iequals(value, "false")) {
      failure.should_retry_header = true;
      failure.should_retry = iequals(value, "true");
    }
  }
  if (is_quota_exhausted(error)) {
    failure.should_retry_header = true;
    failure.should_retry = false;
  }
  return failure;
}

Failure response_too_large(std::size_t limit) {
  Failure failure;
  failure.kind = ErrorKind::invalid_request;
  failure.code = "response_too_large";
  failure.message = fmt::format(
      "the answer is larger than worker.max_response_bytes ({} bytes); ask for a shorter one "
      "(max_tokens) or raise the limit",
      limit);
  return failure;
}

Failure failure_from_transport(const TransportError& error, std::span<const std::string> secrets) {
  Failure failure;
  failure.kind = error.kind;
  failure.status = 0;
  if (error.curl_code != 0) failure.code = "curl_" + std::to_string(error.curl_code);
  failure.message = scrub_secrets(error.message, secrets);
  if (failure.message.empty()) failure.message = std::string(protocol::to_string(error.kind));
  return failure;
}

Failure failure_from_transport(const TransportError& error, const ProviderConfig& provider) {
  const std::vector<std::string> secrets = provider.secrets();
  Failure failure = failure_from_transport(error, secrets);
  // A cancelled transfer is never reported (see the launcher); nothing to explain there.
  if (error.kind == protocol::ErrorKind::cancelled) return failure;
  failure.message = scrub_secrets(transport_sentence(error, provider), secrets);
  return failure;
}

std::string scrub_secrets(std::string_view text, std::string_view api_key) {
  if (api_key.empty()) return scrub_secrets(text, std::span<const std::string>());
  const std::string key(api_key);
  return scrub_secrets(text, std::span<const std::string>(&key, 1));
}

std::string scrub_secrets(std::string_view text, std::span<const std::string> secrets) {
  std::string out(text);
  // Values shorter than this would scrub ordinary words; real keys are far longer.
  constexpr std::size_t kMinSecretLength = 6;
  // Longest first: a header value may contain the key, or another value.
  std::vector<std::string_view> by_length(secrets.begin(), secrets.end());
  std::sort(by_length.begin(), by_length.end(),
            [](std::string_view a, std::string_view b) { return a.size() > b.size(); });
  for (std::string_view secret : by_length) {
    if (secret.size() < kMinSecretLength) break;
    for (std::size_t pos = out.find(secret); pos != std::string::npos;
         pos = out.find(secret, pos + 3)) {
      out.replace(pos, secret.size(), "***");
    }
  }
  auto is_token_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.' ||
           c == '~' || c == '+' || c == '/' || c == '=';
  };
  std::string result;
  result.reserve(out.size());
  std::size_t i = 0;
  while (i < out.size()) {
    if (i + 7 <= out.size() && iequals(std::string_view(out).substr(i, 7), "bearer ")) {
      std::size_t end = i + 7;
      while (end < out.size() && is_token_char(out[end])) ++end;
      if (end > i + 7) {
        result.append(out, i, 7);
        result += "***";
        i = end;
        continue;
      }
    }
    const bool word_start = i == 0 || !is_token_char(out[i - 1]);
    if (word_start && out.compare(i, 3, "sk-") == 0) {
      std::size_t end = i + 3;
      while (end < out.size() && is_token_char(out[end]) && out[end] != '.' && out[end] != '/') {
        ++end;
      }
      // Short "sk-" words are prose ("sk-learn"); keys are long.
      if (end - i >= 3 + 8) {
        result += "sk-***";
        i = end;
        continue;
      }
    }
    result += out[i];
    ++i;
  }
  return result;
}

}  // namespace dispatch::worker
