#pragma once

// Typed field readers for the API body parsers: each returns the value (or nullopt when the
// key is absent or null) or a RequestError naming the field's path.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/request_error.hpp"

namespace dispatch::formats::detail {

using nlohmann::json;

// The member `key` of `object`, or null when it is absent or JSON null.
const json* member(const json& object, std::string_view key);

Result<std::optional<double>, RequestError> read_number(const json& object, std::string_view key,
                                                        std::string_view path, double low,
                                                        double high);
Result<std::optional<uint32_t>, RequestError> read_uint32(const json& object, std::string_view key,
                                                          std::string_view path);
Result<std::optional<bool>, RequestError> read_bool(const json& object, std::string_view key,
                                                    std::string_view path);
Result<std::optional<std::string>, RequestError> read_string(const json& object,
                                                             std::string_view key,
                                                             std::string_view path);
// A string or an array of at most `max` strings (OpenAI's `stop`).
Result<std::vector<std::string>, RequestError> read_strings(const json& object,
                                                            std::string_view key,
                                                            std::string_view path, std::size_t max,
                                                            bool allow_single);
// An array of at most `max` elements; nullptr when absent or null.
Result<const json*, RequestError> read_array(const json& object, std::string_view key,
                                             std::string_view path, std::size_t max);

// Reads the optional array `key` of at most `max` elements, each with `read_one(element, path)`
// (a Result<T, RequestError>), appending to `out`; the first failure is returned as it is.
template <class T, class ReadOne>
Result<void, RequestError> read_each(const json& object, std::string_view key, std::size_t max,
                                     std::vector<T>& out, ReadOne read_one) {
  auto array = read_array(object, key, "", max);
  if (!array) return std::move(array).error();
  if (*array == nullptr) return {};
  for (std::size_t i = 0; i < (*array)->size(); ++i) {
    auto one = read_one((**array)[i], path_index(key, i));
    if (!one) return std::move(one).error();
    out.push_back(std::move(*one));
  }
  return {};
}

// JSON text of a schema or an argument object, compact.
std::string compact(const json& value);

}  // namespace dispatch::formats::detail

namespace dispatch::formats::detail {

// An image reference as the wire carries it: an http(s) URL (for providers that fetch it) or
// a base64 data: URL, checked; anything else is refused naming `param`.
Result<std::string, RequestError> checked_image(std::string_view url, const std::string& param);

}  // namespace dispatch::formats::detail
