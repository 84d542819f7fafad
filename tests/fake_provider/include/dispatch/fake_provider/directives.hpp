#pragma once

// Scripted behaviour for one request, written after the model name (`gpt-4o~latency_ms=200~
// tokens=20`) or in the `X-Fake-Directives: d1~d2` header. Each directive is `key` or
// `key=value`; the header's directives are applied after the model's (a later value wins).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace dispatch::fake_provider {

struct Directives {
  std::string base_model;  // the model name before the first `~`

  // Timing (milliseconds).
  std::optional<int64_t> latency_ms;      // delay before the response headers
  std::optional<int64_t> first_token_ms;  // stream: headers now, first content chunk after this
  std::optional<int64_t> chunk_delay_ms;  // between content chunks
  std::optional<int64_t> tokens;          // completion token count

  // Scripted errors.
  std::optional<int64_t> status;          // persistent error status (400..599)
  std::optional<int64_t> fail_first;      // only the first N requests fail (status, default 500)
  std::optional<int64_t> retry_after_s;   // retry-after: S
  std::optional<int64_t> retry_after_ms;  // retry-after-ms: N
  bool retry_after_date = false;          // retry-after: <HTTP date ~2 s ahead>
  bool context_length = false;
  bool content_filter = false;
  std::optional<int64_t> flap_ms;  // 503 for this long after start / last reset

  // Transport faults.
  bool reset = false;  // TCP RST before any response byte
  bool hang = false;   // read the request, never answer, keep the connection open

  // Stream faults (counted in content chunks).
  std::optional<int64_t> cut_after;         // close abruptly without the final chunk
  std::optional<int64_t> stall_after;       // stop sending, keep the connection open
  std::optional<int64_t> malformed_at;      // the Nth content event is unparsable
  std::optional<int64_t> error_mid_stream;  // in-stream error event after N chunks
  bool no_terminator = false;               // clean HTTP end, no format terminator
};

// Parses the directives of `model` and then those of `header` (may be empty). Returns the
// reason for the first unknown directive or bad value.
std::variant<Directives, std::string> parse_directives(std::string_view model,
                                                       std::string_view header);

}  // namespace dispatch::fake_provider
