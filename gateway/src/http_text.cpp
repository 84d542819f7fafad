#include "dispatch/gateway/http_text.hpp"

#include <fmt/format.h>

#include <ctime>

#include "dispatch/formats/http_errors.hpp"

namespace dispatch::gateway {

std::string_view http_date_now() {
  thread_local std::time_t cached_second = 0;
  thread_local char text[40] = {};
  const std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    cached_second = now;
    std::tm parts{};
    gmtime_r(&now, &parts);
    std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &parts);
  }
  return text;
}

std::string render_head(const ResponseHead& head) {
  std::string out;
  out.reserve(256);
  out += "HTTP/1.1 ";
  out += std::to_string(head.status);
  out += ' ';
  out += formats::status_reason(head.status);
  out += "\r\ndate: ";
  out += http_date_now();
  out += "\r\ncontent-type: ";
  out += head.content_type;
  out += "\r\n";
  if (head.content_length) {
    out += "content-length: ";
    out += std::to_string(*head.content_length);
    out += "\r\n";
  } else if (!head.http10) {
    out += "transfer-encoding: chunked\r\n";
  }
  for (const auto& [name, value] : head.headers) {
    out += name;
    out += ": ";
    // Values can carry a client's text (a model name): no control byte may split the head.
    for (const char c : value) {
      const auto byte = static_cast<unsigned char>(c);
      out += byte < 0x20 || byte == 0x7f ? '?' : c;
    }
    out += "\r\n";
  }
  const bool keep_alive = head.keep_alive && (head.content_length || !head.http10);
  if (!keep_alive) {
    out += "connection: close\r\n";
  } else if (head.http10) {
    out += "connection: keep-alive\r\n";
  }
  out += "\r\n";
  return out;
}

void append_chunk(std::string& out, std::string_view data) {
  if (data.empty()) return;
  out += fmt::format("{:x}\r\n", data.size());
  out += data;
  out += "\r\n";
}

}  // namespace dispatch::gateway
