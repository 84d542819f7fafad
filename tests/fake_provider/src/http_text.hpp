#pragma once

// Raw HTTP/1.1 response framing. The server writes responses itself (Beast only parses
// requests) so that faults can stop at any byte: a cut before the final chunk, a body shorter
// than its Content-Length, a stream that never ends.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/fake_provider/wire_format.hpp"

namespace dispatch::fake_provider::detail {

struct ResponseHead {
  int status = 200;
  std::string content_type = "application/json";
  std::optional<size_t> content_length;  // nullopt: Transfer-Encoding: chunked
  bool keep_alive = true;
  HeaderList headers;
};

std::string render_head(const ResponseHead& head, int64_t unix_s);

// One chunk of a chunked body (empty data renders nothing: the last chunk is kLastChunk).
std::string chunk(std::string_view data);
// chunk(data) appended to `out` (no temporary string).
void append_chunk(std::string& out, std::string_view data);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// RFC 7231 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string http_date(int64_t unix_s);

// Percent-decodes a query value ('+' stays '+': model names may contain it).
std::string percent_decode(std::string_view text);

// The value of `key` in a query string "a=1&b=2".
std::optional<std::string> query_value(std::string_view query, std::string_view key);

}  // namespace dispatch::fake_provider::detail
