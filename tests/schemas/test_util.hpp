#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::protocol::testing {

// msgpack bytes of a JSON value: the quickest way to write a hand-made message in a test.
// (nlohmann writes float32 when a double fits it exactly, which exercises that path too.)
inline std::string mp(const nlohmann::json& value) {
  const auto bytes = nlohmann::json::to_msgpack(value);
  return {bytes.begin(), bytes.end()};
}

// A string literal with embedded NULs, all of it: lit("\x81\x00").
template <std::size_t N>
std::string lit(const char (&bytes)[N]) {
  return std::string(bytes, N - 1);
}

// The JSON view of msgpack bytes, keys in wire order.
inline nlohmann::ordered_json as_json(std::string_view bytes) {
  return nlohmann::ordered_json::from_msgpack(bytes.begin(), bytes.end());
}

}  // namespace dispatch::protocol::testing
