#include "json_view.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <limits>

namespace dispatch::worker::detail {
namespace {

// Containers nested deeper than this go to nlohmann (which has no limit); events never nest so.
constexpr std::size_t kMaxFastDepth = 64;
static_assert(kMaxFastDepth <= kMaxJsonDepth);
constexpr std::size_t kInitialNodes = 32;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Length of the well-formed UTF-8 sequence at `p` (RFC 3629: no overlongs, no surrogates, at
// most U+10FFFF, the same ranges nlohmann's lexer checks), or 0.
std::size_t utf8_sequence(const unsigned char* p, const unsigned char* end) {
  const unsigned char b0 = p[0];
  auto cont = [&](std::size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return p + i < end && p[i] >= lo && p[i] <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (b0 == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (b0 == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b0 >= 0xF1 && b0 <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b0 == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The fast parser's cursor. Every method returns false for "not sure": the caller then lets
// nlohmann decide, so nothing here needs to explain why a text is bad.
class Scanner {
 public:
  Scanner(std::string_view text, std::string& unescaped)
      : pos_(text.data()),
        end_(text.data() + text.size()),
        text_size_(text.size()),
        unescaped_(unescaped) {}

  void skip_space() {
    while (pos_ != end_ && is_space(*pos_)) ++pos_;
  }
  bool at_end() const { return pos_ == end_; }
  bool peek(char c) const { return pos_ != end_ && *pos_ == c; }
  bool consume(char c) {
    if (!peek(c)) return false;
    ++pos_;
    return true;
  }
  char current() const { return pos_ != end_ ? *pos_ : '\0'; }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - pos_) < word.size() ||
        std::string_view(pos_, word.size()) != word) {
      return false;
    }
    pos_ += word.size();
    return true;
  }

  // At the opening quote. Views the text when there is no escape, else the unescaped buffer.
  bool string(std::string_view& out) {
    ++pos_;
    const char* const start = pos_;
    while (true) {
      if (pos_ == end_) return false;
      const auto c = static_cast<unsigned char>(*pos_);
      if (c == '"') {
        out = std::string_view(start, static_cast<std::size_t>(pos_ - start));
        ++pos_;
        return true;
      }
      if (c == '\\') break;
      if (c < 0x20) return false;
      if (!plain_byte(c)) return false;
    }
    // Escapes: copy what was scanned, then decode into the buffer. Decoded text is never longer
    // than the text, so reserving the text's size at the parse's first escape keeps every view
    // into the buffer valid (texts without escapes never touch it).
    if (unescaped_.empty()) unescaped_.reserve(text_size_);
    const std::size_t begin = unescaped_.size();
    unescaped_.append(start, pos_);
    while (true) {
      if (pos_ == end_) return false;
      const auto c = static_cast<unsigned char>(*pos_);
      if (c == '"') {
        ++pos_;
        out = std::string_view(unescaped_.data() + begin, unescaped_.size() - begin);
        return true;
      }
      if (c == '\\') {
        if (!escape()) return false;
        continue;
      }
      if (c < 0x20) return false;
      const char* const from = pos_;
      if (!plain_byte(c)) return false;
      unescaped_.append(from, pos_);
    }
  }

  // A number per RFC 8259, typed as nlohmann types it (no fraction or exponent: unsigned, or
  // signed when negative; otherwise a double).
  bool number(JsonValue::Type& type, uint64_t& u, int64_t& i, double& d) {
    const char* const start = pos_;
    const bool negative = consume('-');
    if (pos_ == end_) return false;
    if (*pos_ == '0') {
      ++pos_;
    } else if (*pos_ >= '1' && *pos_ <= '9') {
      while (pos_ != end_ && *pos_ >= '0' && *pos_ <= '9') ++pos_;
    } else {
      return false;
    }
    const char* const int_end = pos_;
    bool is_float = false;
    if (consume('.')) {
      is_float = true;
      if (!digits()) return false;
    }
    if (peek('e') || peek('E')) {
      ++pos_;
      is_float = true;
      if (!consume('+')) consume('-');
      if (!digits()) return false;
    }
    if (is_float) {
      const auto [ptr, ec] = std::from_chars(start, pos_, d);
      if (ec != std::errc() || ptr != pos_ || !std::isfinite(d)) return false;
      type = JsonValue::Type::number_float;
      return true;
    }
    const char* const digits_begin = negative ? start + 1 : start;
    // 19 digits always fit; longer ones (which nlohmann may turn into doubles) go to it.
    if (int_end - digits_begin > 19) return false;
    uint64_t value = 0;
    for (const char* p = digits_begin; p != int_end; ++p) value = value * 10 + (*p - '0');
    if (!negative) {
      type = JsonValue::Type::number_unsigned;
      u = value;
      return true;
    }
    if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    type = JsonValue::Type::number_integer;
    i = -static_cast<int64_t>(value);
    return true;
  }

 private:
  bool digits() {
    const char* const from = pos_;
    while (pos_ != end_ && *pos_ >= '0' && *pos_ <= '9') ++pos_;
    return pos_ != from;
  }

  // Advances over one ASCII byte or one well-formed UTF-8 sequence.
  bool plain_byte(unsigned char c) {
    if (c < 0x80) {
      ++pos_;
      return true;
    }
    const std::size_t n = utf8_sequence(reinterpret_cast<const unsigned char*>(pos_),
                                        reinterpret_cast<const unsigned char*>(end_));
    if (n == 0) return false;
    pos_ += n;
    return true;
  }

  bool hex4(uint32_t& out) {
    if (end_ - pos_ < 4) return false;
    out = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex_digit(pos_[k]);
      if (h < 0) return false;
      out = (out << 4) | static_cast<uint32_t>(h);
    }
    pos_ += 4;
    return true;
  }

  bool escape() {
    ++pos_;  // the backslash
    if (pos_ == end_) return false;
    const char c = *pos_++;
    switch (c) {
      case '"':
        unescaped_.push_back('"');
        return true;
      case '\\':
        unescaped_.push_back('\\');
        return true;
      case '/':
        unescaped_.push_back('/');
        return true;
      case 'b':
        unescaped_.push_back('\b');
        return true;
      case 'f':
        unescaped_.push_back('\f');
        return true;
      case 'n':
        unescaped_.push_back('\n');
        return true;
      case 'r':
        unescaped_.push_back('\r');
        return true;
      case 't':
        unescaped_.push_back('\t');
        return true;
      case 'u':
        break;
      default:
        return false;
    }
    uint32_t cp = 0;
    if (!hex4(cp)) return false;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      uint32_t low = 0;
      if (!literal("\\u") || !hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(unescaped_, cp);
    return true;
  }

  const char* pos_;
  const char* const end_;
  const std::size_t text_size_;
  std::string& unescaped_;
};

}  // namespace

const JsonValue& JsonValue::operator[](std::size_t i) const {
  const JsonValue* at = this + 1;
  for (std::size_t k = 0; k < i; ++k) at += at->subtree_;
  return *at;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  if (type_ != Type::object) return nullptr;
  const JsonValue* found = nullptr;
  const JsonValue* at = this + 1;
  for (uint32_t k = 0; k < count_; ++k, at += at->subtree_) {
    if (at->key_ == key) found = at;
  }
  return found;
}

nlohmann::json JsonValue::to_json() const {
  switch (type_) {
    case Type::null:
      return nullptr;
    case Type::boolean:
      return boolean_;
    case Type::number_unsigned:
      return number_.u;
    case Type::number_integer:
      return number_.i;
    case Type::number_float:
      return number_.d;
    case Type::string:
      return std::string(text_);
    case Type::array: {
      nlohmann::json out = nlohmann::json::array();
      for (const JsonValue& element : *this) out.push_back(element.to_json());
      return out;
    }
    case Type::object: {
      nlohmann::json out = nlohmann::json::object();
      for (const JsonValue& member : *this) out[std::string(member.key_)] = member.to_json();
      return out;
    }
  }
  return nullptr;
}

// The fast path of JsonDocument::parse: one pass over the text, the containers being filled on
// a stack of fixed depth. Anything the Scanner is not sure about returns false and nlohmann
// decides.
class FastParser {
 public:
  FastParser(std::string_view text, std::vector<JsonValue>& nodes, std::string& unescaped)
      : in_(text, unescaped), nodes_(nodes) {}

  bool parse() {
    if (!value({})) return false;
    while (depth_ > 0) {
      if (!continue_container()) return false;
    }
    in_.skip_space();
    return in_.at_end();
  }

 private:
  // Reads one value into a new node; a container stays open for continue_container().
  bool value(std::string_view key) {
    in_.skip_space();
    JsonValue node;
    node.key_ = key;
    const char c = in_.current();
    if (c == '{' || c == '[') {
      if (depth_ == open_.size()) return false;
      node.type_ = c == '{' ? JsonValue::Type::object : JsonValue::Type::array;
      in_.consume(c);
      open_[depth_++] = static_cast<uint32_t>(nodes_.size());
      nodes_.push_back(node);
      return true;
    }
    if (!scalar(c, node)) return false;
    nodes_.push_back(node);
    return true;
  }

  bool scalar(char c, JsonValue& node) {
    switch (c) {
      case '"':
        node.type_ = JsonValue::Type::string;
        return in_.string(node.text_);
      case 't':
        node.type_ = JsonValue::Type::boolean;
        node.boolean_ = true;
        return in_.literal("true");
      case 'f':
        node.type_ = JsonValue::Type::boolean;
        return in_.literal("false");
      case 'n':
        return in_.literal("null");
      default:
        return in_.number(node.type_, node.number_.u, node.number_.i, node.number_.d);
    }
  }

  // Closes the innermost open container, or reads its next element or member.
  bool continue_container() {
    const uint32_t index = open_[depth_ - 1];
    const bool is_object = nodes_[index].type_ == JsonValue::Type::object;
    in_.skip_space();
    if (in_.consume(is_object ? '}' : ']')) {
      nodes_[index].subtree_ = static_cast<uint32_t>(nodes_.size() - index);
      --depth_;
      return true;
    }
    if (nodes_[index].count_ > 0) {
      if (!in_.consume(',')) return false;
      in_.skip_space();
    }
    ++nodes_[index].count_;
    std::string_view key;
    if (is_object) {
      if (!in_.peek('"') || !in_.string(key)) return false;
      in_.skip_space();
      if (!in_.consume(':')) return false;
    }
    return value(key);
  }

  Scanner in_;
  std::vector<JsonValue>& nodes_;
  std::array<uint32_t, kMaxFastDepth> open_{};  // indexes of the containers being filled
  std::size_t depth_ = 0;
};

bool JsonDocument::parse_fast(std::string_view text) {
  nodes_.clear();
  unescaped_.clear();
  // One allocation per document for the usual event (a chunk is 15-25 nodes).
  if (nodes_.capacity() == 0) nodes_.reserve(kInitialNodes);
  return FastParser(text, nodes_, unescaped_).parse();
}

void JsonDocument::append_tree(const nlohmann::json& root) {
  // Iterative: nlohmann accepts any depth, and a provider's event must not exhaust the stack.
  struct Open {
    const nlohmann::json* container;
    nlohmann::json::const_iterator next;
    std::size_t index;
  };
  std::vector<Open> open;
  const auto append = [&](const nlohmann::json& value, std::string_view key) {
    const std::size_t index = nodes_.size();
    JsonValue& node = nodes_.emplace_back();
    node.key_ = key;
    switch (value.type()) {
      case nlohmann::json::value_t::boolean:
        node.type_ = JsonValue::Type::boolean;
        node.boolean_ = value.get<bool>();
        break;
      case nlohmann::json::value_t::number_unsigned:
        node.type_ = JsonValue::Type::number_unsigned;
        node.number_.u = value.get<uint64_t>();
        break;
      case nlohmann::json::value_t::number_integer:
        node.type_ = JsonValue::Type::number_integer;
        node.number_.i = value.get<int64_t>();
        break;
      case nlohmann::json::value_t::number_float:
        node.type_ = JsonValue::Type::number_float;
        node.number_.d = value.get<double>();
        break;
      case nlohmann::json::value_t::string:
        node.type_ = JsonValue::Type::string;
        node.text_ = value.get_ref<const std::string&>();
        break;
      case nlohmann::json::value_t::array:
      case nlohmann::json::value_t::object:
        node.type_ = value.is_object() ? JsonValue::Type::object : JsonValue::Type::array;
        node.count_ = static_cast<uint32_t>(value.size());
        open.push_back(Open{&value, value.cbegin(), index});
        break;
      default:  // null (discarded values never reach here)
        break;
    }
  };
  append(root, {});
  while (!open.empty()) {
    Open& top = open.back();
    if (top.next == top.container->cend()) {
      nodes_[top.index].subtree_ = static_cast<uint32_t>(nodes_.size() - top.index);
      open.pop_back();
      continue;
    }
    const auto it = top.next++;
    // Keys view the map's own strings, which live as long as fallback_.
    const std::string_view key =
        top.container->is_object() ? std::string_view(it.key()) : std::string_view();
    append(*it, key);  // may grow `open`: `top` is not used after this
  }
}

const JsonValue* JsonDocument::parse(std::string_view text) {
  last_fast_ = parse_fast(text);
  if (last_fast_) return nodes_.data();  // the fast parser nests at most kMaxFastDepth
  if (!json_depth_within(text)) return nullptr;
  fallback_ = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (fallback_.is_discarded()) return nullptr;
  nodes_.clear();
  append_tree(fallback_);
  return nodes_.data();
}

JsonDocument& event_document() {
  thread_local JsonDocument document;
  return document;
}

}  // namespace dispatch::worker::detail
