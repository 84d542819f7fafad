#pragma once

// HTTP/1.1 response text, rendered by hand: a response head is a few string appends, cheaper
// than a serializer on the hot path.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dispatch::gateway {

struct ResponseHead {
  int status = 200;
  std::string_view content_type = "application/json";
  // Set: a whole body of this length. Unset: a stream, chunked unless `http10` (then it ends
  // when the connection closes).
  std::optional<std::size_t> content_length;
  bool keep_alive = true;
  bool http10 = false;
  std::vector<std::pair<std::string_view, std::string>> headers;
};

std::string render_head(const ResponseHead& head);

// `data` as one chunk of a chunked body (nothing for empty data: that would end the body).
void append_chunk(std::string& out, std::string_view data);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// The current time as an HTTP date, recomputed at most once a second per thread.
std::string_view http_date_now();

}  // namespace dispatch::gateway
