#pragma once

// A reusable, read-only JSON document for stream events. Every streamed answer is a sequence of
// small JSON objects (8 or more per job), and building an nlohmann DOM for each one (a std::map
// node and a std::string per member) was the largest single cost of the worker. JsonDocument
// parses into a flat vector of nodes that lives as long as the decoder, with strings as views
// into the event text (or into one reused buffer when they contain escapes), so a parse after
// the first allocates nothing.
//
// Acceptance and values are nlohmann's: the fast parser handles the common subset and, on
// anything it is not sure about (floats it cannot convert, integers beyond 64 bits, deep
// nesting, lone surrogates, a byte-order mark, ...), hands the text to nlohmann::json::parse and
// converts that DOM, so an event is malformed exactly when nlohmann rejects it — or when it
// nests deeper than kMaxJsonDepth (dispatch/common/json_depth.hpp), which nlohmann accepts but
// the worker refuses: converting the document is recursive.
// Lookups return the last member of a repeated name, as nlohmann's parser keeps.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/json_depth.hpp"

namespace dispatch::worker::detail {

class FastParser;  // json_view.cpp

class JsonValue {
 public:
  enum class Type : uint8_t {
    null,
    boolean,
    number_unsigned,
    number_integer,
    number_float,
    string,
    array,
    object
  };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_object() const { return type_ == Type::object; }
  bool is_array() const { return type_ == Type::array; }
  bool is_string() const { return type_ == Type::string; }
  bool is_boolean() const { return type_ == Type::boolean; }
  bool is_number() const {
    return type_ == Type::number_unsigned || type_ == Type::number_integer ||
           type_ == Type::number_float;
  }

  bool boolean() const { return boolean_; }
  uint64_t unsigned_value() const { return number_.u; }
  int64_t integer_value() const { return number_.i; }
  double float_value() const { return number_.d; }
  std::string_view string() const { return text_; }
  // The member name when this value is inside an object.
  std::string_view key() const { return key_; }

  // Elements of an array or members of an object.
  std::size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  const JsonValue& front() const { return *(this + 1); }
  // Linear in `i`: stream events hold a handful of elements.
  const JsonValue& operator[](std::size_t i) const;
  // The last member named `key`, or null (also when this is not an object).
  const JsonValue* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }

  class Iterator {
   public:
    explicit Iterator(const JsonValue* at) : at_(at) {}
    const JsonValue& operator*() const { return *at_; }
    const JsonValue* operator->() const { return at_; }
    Iterator& operator++() {
      at_ += at_->subtree_;
      return *this;
    }
    bool operator==(const Iterator& other) const { return at_ == other.at_; }
    bool operator!=(const Iterator& other) const { return at_ != other.at_; }

   private:
    const JsonValue* at_;
  };
  Iterator begin() const { return Iterator(this + 1); }
  Iterator end() const { return Iterator(this + subtree_); }

  // The same value as an nlohmann DOM (for the rare paths that re-serialise a subtree).
  nlohmann::json to_json() const;

 private:
  friend class JsonDocument;
  friend class FastParser;

  Type type_ = Type::null;
  bool boolean_ = false;
  uint32_t count_ = 0;  // elements or members
  uint32_t subtree_ =
      1;  // nodes in this subtree, itself included: the distance to the next sibling
  std::string_view key_;
  std::string_view text_;
  union {
    uint64_t u;
    int64_t i;
    double d;
  } number_{0};
};

class JsonDocument {
 public:
  // Parses `text`; returns the root, or null when nlohmann would reject the text. Values view
  // `text` and this document: both must outlive their use, and the next parse invalidates them.
  const JsonValue* parse(std::string_view text);

  // Which parser produced the last root (tests check that the fast path is taken).
  bool last_parse_was_fast() const { return last_fast_; }

 private:
  // False when the fast parser is not sure (then nlohmann decides).
  bool parse_fast(std::string_view text);
  void append_tree(const nlohmann::json& root);

  std::vector<JsonValue> nodes_;
  std::string unescaped_;    // strings with escapes, decoded; reserved at a parse's first escape
  nlohmann::json fallback_;  // the slow path's DOM, which the nodes then view
  bool last_fast_ = false;
};

// The document stream decoders parse into: one per thread, so that a new attempt's decoder
// allocates nothing for it. Safe because a thread decodes one event at a time and no decoder
// keeps a value past the event it came from.
JsonDocument& event_document();

}  // namespace dispatch::worker::detail
