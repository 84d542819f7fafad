#include "dispatch/formats/http_errors.hpp"

#include "dispatch/formats/json_text.hpp"

namespace dispatch::formats {

using protocol::ErrorKind;

namespace {

// Retry-After for failures a later attempt may not meet: one second is short enough for an
// interactive client and long enough for a queue or a rate window to move.
constexpr int kRetryAfterSeconds = 1;

int status_for(const protocol::Error& error) {
  switch (error.kind) {
    case ErrorKind::invalid_request:
    case ErrorKind::context_length_exceeded:
    case ErrorKind::content_filtered:
      return 400;
    case ErrorKind::model_not_available:
      return 404;
    case ErrorKind::rate_limited:
      return 429;
    case ErrorKind::queue_full:
      return error.code == "draining" ? 503 : 429;
    case ErrorKind::unsupported_provider:
    case ErrorKind::overloaded:
    case ErrorKind::cancelled:
      return 503;
    case ErrorKind::network:
      return error.code == "broker_unreachable" ? 503 : 502;
    case ErrorKind::authentication:
    case ErrorKind::server_error:
    case ErrorKind::stream_interrupted:
      return 502;
    case ErrorKind::timeout:
      return 504;
    case ErrorKind::internal:
    case ErrorKind::unknown:
      return 500;
  }
  return 500;
}

}  // namespace

HttpError http_error_from(const RequestError& error) {
  return HttpError{error.status, error.message, error.param, error.code, 0};
}

HttpError http_error_from(const protocol::Error& error) {
  HttpError out;
  out.status = status_for(error);
  out.message = error.message;
  if (!error.provider.empty()) {
    out.message += " (" + error.provider + (error.model.empty() ? "" : "/" + error.model) + ")";
  }
  out.code = error.code.empty() ? std::string(protocol::to_string(error.kind)) : error.code;
  if (out.status == 429 || out.status == 503) out.retry_after_s = kRetryAfterSeconds;
  if (error.kind == ErrorKind::overloaded) out.anthropic_status = 529;
  return out;
}

HttpError http_error(int status, std::string message, std::string code) {
  HttpError out{status, std::move(message), "", std::move(code), 0};
  if (status == 429 || status == 503) out.retry_after_s = kRetryAfterSeconds;
  return out;
}

std::string_view anthropic_error_type(int status) noexcept {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return status < 500 ? "invalid_request_error" : "api_error";
  }
}

std::string_view openai_error_type(int status) noexcept {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 504:
      return "timeout_error";
    default:
      return status < 500 ? "invalid_request_error" : "server_error";
  }
}

std::string_view status_reason(int status) noexcept {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 529:
      return "Overloaded";
    default:
      return "Unknown";
  }
}

namespace {

json openai_error_object(const HttpError& error) {
  return json{{"message", error.message},
              {"type", openai_error_type(error.status)},
              {"param", error.param.empty() ? json(nullptr) : json(error.param)},
              {"code", error.code.empty() ? json(nullptr) : json(error.code)}};
}

json anthropic_error_object(const HttpError& error, std::string_view request_id) {
  json out{
      {"type", "error"},
      {"error",
       {{"type", anthropic_error_type(error.status_for_anthropic())}, {"message", error.message}}}};
  if (!request_id.empty()) out["request_id"] = request_id;
  return out;
}

}  // namespace

std::string openai_error_body(const HttpError& error) {
  return dump_line(json{{"error", openai_error_object(error)}});
}

std::string anthropic_error_body(const HttpError& error, std::string_view request_id) {
  return dump_line(anthropic_error_object(error, request_id));
}

std::string openai_error_event(const HttpError& error) {
  return "data: " + openai_error_body(error) + "\n\n";
}

std::string anthropic_error_event(const HttpError& error, std::string_view request_id) {
  return "event: error\ndata: " + anthropic_error_body(error, request_id) + "\n\n";
}

}  // namespace dispatch::formats
