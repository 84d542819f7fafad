#include "dispatch/protocol/peek.hpp"

#include <limits>
#include <msgpack.hpp>

namespace dispatch::protocol {

namespace {

// Follows the parse events of one msgpack value and remembers the unsigned value of `key` in
// the top-level map. Stops the parse (returns false) as soon as the answer is known.
class KeyFinder : public msgpack::null_visitor {
 public:
  explicit KeyFinder(std::string_view key) : key_(key) {}

  std::optional<uint64_t> found() const { return found_; }
  std::optional<uint32_t> found_array() const { return found_array_; }

  bool start_map(uint32_t /*pairs*/) {
    ++depth_;
    return true;
  }
  bool end_map() {
    --depth_;
    return depth_ > 0;  // the top-level map is done: the key is not there
  }
  bool start_array(uint32_t elements) {
    if (depth_ == 0) return false;  // not a map
    if (in_value_ && depth_ == 1) {
      found_array_ = elements;
      return false;
    }
    ++depth_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  // Key and value events of nested maps (depth > 1) do not concern the top-level pairs.
  bool start_map_key() {
    if (depth_ == 1) in_key_ = true;
    return true;
  }
  bool end_map_key() {
    if (depth_ == 1) in_key_ = false;
    return true;
  }
  bool start_map_value() {
    if (depth_ == 1) in_value_ = matched_;
    return true;
  }
  bool end_map_value() {
    if (depth_ != 1) return true;
    if (in_value_) return false;  // the key's value was not an unsigned integer
    matched_ = false;
    return true;
  }
  bool visit_str(const char* data, uint32_t size) {
    if (depth_ == 0) return false;  // not a map
    if (in_key_ && depth_ == 1) matched_ = std::string_view(data, size) == key_;
    return true;
  }
  bool visit_positive_integer(uint64_t value) {
    if (depth_ == 0) return false;
    if (in_value_ && depth_ == 1) {
      found_ = value;
      return false;
    }
    return true;
  }

 private:
  std::string_view key_;
  int depth_ = 0;
  bool in_key_ = false;
  bool in_value_ = false;
  bool matched_ = false;
  std::optional<uint64_t> found_;
  std::optional<uint32_t> found_array_;
};

}  // namespace

std::optional<uint64_t> peek_unsigned(std::string_view map_bytes, std::string_view key) noexcept {
  try {
    KeyFinder finder(key);
    std::size_t offset = 0;
    (void)msgpack::parse(map_bytes.data(), map_bytes.size(), offset, finder);
    return finder.found();
  } catch (...) {
    return std::nullopt;  // by contract: no value
  }
}

std::optional<uint32_t> peek_array_length(std::string_view map_bytes,
                                          std::string_view key) noexcept {
  try {
    KeyFinder finder(key);
    std::size_t offset = 0;
    (void)msgpack::parse(map_bytes.data(), map_bytes.size(), offset, finder);
    return finder.found_array();
  } catch (...) {
    return std::nullopt;  // by contract: no value
  }
}

std::optional<uint32_t> peek_request_timeout_ms(std::string_view request_bytes) noexcept {
  const auto value = peek_unsigned(request_bytes, "timeout_ms");
  if (!value || *value == 0 || *value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  return static_cast<uint32_t>(*value);
}

std::optional<uint32_t> peek_request_max_tokens(std::string_view request_bytes) noexcept {
  const auto value = peek_unsigned(request_bytes, "max_tokens");
  if (!value || *value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  return static_cast<uint32_t>(*value);
}

}  // namespace dispatch::protocol
