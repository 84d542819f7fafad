#include "fields.hpp"

#include <fmt/format.h>

#include <limits>

#include "dispatch/common/strings.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/protocol/text.hpp"

namespace dispatch::formats::detail {

const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::optional<double>, RequestError> read_number(const json& object, std::string_view key,
                                                        std::string_view path, double low,
                                                        double high) {
  const json* value = member(object, key);
  if (value == nullptr) return std::optional<double>();
  const std::string where = path_key(path, key);
  if (!value->is_number()) return wrong_type(where, "a number");
  const double number = value->get<double>();
  if (!(number >= low && number <= high)) {
    return invalid_field(where, fmt::format("must be between {} and {}", low, high));
  }
  return std::optional<double>(number);
}

Result<std::optional<uint32_t>, RequestError> read_uint32(const json& object, std::string_view key,
                                                          std::string_view path) {
  const json* value = member(object, key);
  if (value == nullptr) return std::optional<uint32_t>();
  const std::string where = path_key(path, key);
  if (!value->is_number_integer() || (!value->is_number_unsigned() && value->get<int64_t>() < 0)) {
    return invalid_field(where, "must be a non-negative integer", "invalid_type");
  }
  if (value->get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return invalid_field(where, "is too large");
  }
  return std::optional<uint32_t>(value->get<uint32_t>());
}

Result<std::optional<bool>, RequestError> read_bool(const json& object, std::string_view key,
                                                    std::string_view path) {
  const json* value = member(object, key);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return wrong_type(path_key(path, key), "true or false");
  return std::optional<bool>(value->get<bool>());
}

Result<std::optional<std::string>, RequestError> read_string(const json& object,
                                                             std::string_view key,
                                                             std::string_view path) {
  const json* value = member(object, key);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return wrong_type(path_key(path, key), "a string");
  return std::optional<std::string>(value->get<std::string>());
}

Result<std::vector<std::string>, RequestError> read_strings(const json& object,
                                                            std::string_view key,
                                                            std::string_view path, std::size_t max,
                                                            bool allow_single) {
  std::vector<std::string> out;
  const json* value = member(object, key);
  if (value == nullptr) return out;
  const std::string where = path_key(path, key);
  const auto expected = allow_single ? "a string or an array of strings" : "an array of strings";
  if (allow_single && value->is_string()) {
    out.push_back(value->get<std::string>());
    return out;
  }
  if (!value->is_array()) return wrong_type(where, expected);
  if (value->size() > max) {
    return invalid_field(where, fmt::format("has more than {} entries", max), "too_large");
  }
  for (const auto& item : *value) {
    if (!item.is_string()) return wrong_type(where, expected);
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<const json*, RequestError> read_array(const json& object, std::string_view key,
                                             std::string_view path, std::size_t max) {
  const json* value = member(object, key);
  if (value == nullptr) return value;
  const std::string where = path_key(path, key);
  if (!value->is_array()) return wrong_type(where, "an array");
  if (value->size() > max) {
    return invalid_field(where, fmt::format("has more than {} entries", max), "too_large");
  }
  return value;
}

std::string compact(const json& value) {
  return dump_line(value);
}

}  // namespace dispatch::formats::detail

namespace dispatch::formats::detail {

Result<std::string, RequestError> checked_image(std::string_view url, const std::string& param) {
  if (istarts_with(url, "https://") || istarts_with(url, "http://")) return std::string(url);
  if (!istarts_with(url, "data:")) {
    return invalid_field(param, "must be a data: URL or an http(s) URL", "invalid_image");
  }
  const auto marker = url.find(";base64,");
  // The decoder reads the data from the first ','; a media type holding one ("image,png") made
  // an image the gateway admitted and the decoder refused (found by fuzzing:
  // tests/fuzz/corpus/formats/crash-media-type-comma).
  if (marker == std::string_view::npos || url.find(',') != marker + 7) {
    return invalid_field(param, "must be a base64 data: URL (data:<type>;base64,<data>)",
                         "invalid_image");
  }
  if (!protocol::is_base64(url.substr(marker + 8))) {
    return invalid_field(param, ": the image data is not base64", "invalid_image");
  }
  return std::string(url);
}

}  // namespace dispatch::formats::detail
