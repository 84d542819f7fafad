#pragma once

// HTTP values shared by the transport (curl engine) and the provider adapters.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch::worker {

struct HttpHeader {
  std::string name;  // response headers: lower-cased by the engine
  std::string value;
};
using HttpHeaders = std::vector<HttpHeader>;

// Case-insensitive lookup; nullptr when absent.
const std::string* find_header(const HttpHeaders& headers, std::string_view name);

struct HttpRequest {
  std::string method = "POST";
  std::string url;
  HttpHeaders headers;  // may hold secrets (keys): never log them
  std::string body;
};

struct TransferOptions {
  uint32_t connect_timeout_ms = 5000;
  // Hard cap on the whole transfer enforced by curl (0 = none); the policy keeps its own
  // first-token / idle / total timers and aborts earlier.
  uint32_t total_timeout_ms = 0;
};

// A transfer that failed below HTTP, classified once into the error taxonomy:
// network (refused, reset, DNS, TLS, cut body), timeout (connect / curl cap), cancelled, internal.
struct TransportError {
  protocol::ErrorKind kind = protocol::ErrorKind::network;
  int curl_code = 0;
  std::string message;  // curl's error text, never containing request headers
};

}  // namespace dispatch::worker
