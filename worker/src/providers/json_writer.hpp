#pragma once

// Writes a provider's request body straight into its final string, without a JSON DOM. A DOM
// costs a map node and a string per member - 500 bytes for an empty tool call, a thousand times
// the request's own bytes for a request of many small elements - where the text costs what it
// is. The output is what nlohmann::json::dump(-1, ' ', false, replace) writes for the same
// value: strings escaped the same way (invalid UTF-8 becomes U+FFFD), numbers in the same form.

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dispatch::worker::detail {

// Bytes of `text` once escaped as the inside of a JSON string (without the quotes).
std::size_t json_escaped_size(std::string_view text) noexcept;

class JsonWriter {
 public:
  // `capacity`: reserved up front (an estimate of the whole body), so the string never grows by
  // doubling - which would hold the old and the new buffer at once.
  explicit JsonWriter(std::size_t capacity = 0);

  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  // A member name inside an object; its value is the next thing written.
  JsonWriter& key(std::string_view name);

  JsonWriter& value(std::string_view text);
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(bool flag);
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool>) JsonWriter& value(T number) { return unsigned_value(number); }
  // Non-finite numbers are written as null, as nlohmann does.
  JsonWriter& value(double number);
  JsonWriter& null();
  // Text that is already one valid JSON value (checked by the caller), copied as is.
  JsonWriter& raw(std::string_view json);

  // key(name) then value(v).
  template <class T>
  JsonWriter& member(std::string_view name, const T& v) {
    key(name);
    return value(v);
  }

  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  JsonWriter& unsigned_value(uint64_t number);
  void before_value();
  void open(char bracket);
  void close(char bracket);
  void write_escaped(std::string_view text);

  std::string out_;
  std::vector<bool> has_member_;  // per open container: something was written in it
  bool after_key_ = false;
};

}  // namespace dispatch::worker::detail
