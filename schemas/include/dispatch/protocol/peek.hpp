#pragma once

// Targeted reads of one field of an encoded message without decoding it. The broker forwards
// Request payloads undecoded (decoding is the worker's job) but needs one or two of their
// values; these walk the msgpack bytes once, allocate nothing per element, and stop at the
// field.

#include <cstdint>
#include <optional>
#include <string_view>

namespace dispatch::protocol {

// The value of `key` in the top-level msgpack map `map_bytes` when it is a non-negative integer;
// nullopt when the bytes are not a map, the key is absent or nil, or its value is anything else
// (including a negative number). Meant for input that passed validate_msgpack(); never throws.
std::optional<uint64_t> peek_unsigned(std::string_view map_bytes, std::string_view key) noexcept;

// The element count of `key` in the top-level map when its value is an array; nullopt
// otherwise (same contract as peek_unsigned).
std::optional<uint32_t> peek_array_length(std::string_view map_bytes,
                                          std::string_view key) noexcept;

// Request.timeout_ms of an encoded Request; nullopt when absent, 0 or not a uint32 (the worker
// then applies its configured default).
std::optional<uint32_t> peek_request_timeout_ms(std::string_view request_bytes) noexcept;

// Request.max_tokens of an encoded Request; nullopt when absent or not a uint32 (the broker's
// quota estimate then reserves its default answer size).
std::optional<uint32_t> peek_request_max_tokens(std::string_view request_bytes) noexcept;

}  // namespace dispatch::protocol
