#include "json_writer.hpp"

#include <fmt/format.h>

#include <cmath>

namespace dispatch::worker::detail {
namespace {

// How many bytes of a UTF-8 sequence starting at p[0] are acceptable, in the ranges of RFC 3629
// (no overlongs, no surrogates, at most U+10FFFF) that nlohmann's decoder checks: the whole
// sequence when `complete` is set, else the prefix up to the first byte that cannot follow
// (0 when p[0] cannot start a sequence).
struct Utf8Scan {
  std::size_t length = 0;
  bool complete = false;
};

Utf8Scan scan_utf8(const unsigned char* p, const unsigned char* end) {
  const unsigned char b0 = p[0];
  std::size_t need = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {0, false};
  }
  std::size_t have = 1;
  while (have < need && p + have < end) {
    const unsigned char b = p[have];
    const bool ok = have == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++have;
  }
  return {have, have == need};
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Walks `text` as nlohmann's dump does and hands each output piece to `emit`: plain runs as
// they are, escapes, and U+FFFD for each invalid sequence (the byte that broke a sequence is
// read again as the start of the next one).
template <class Emit>
void escape_json(std::string_view text, Emit&& emit) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* const end = p + text.size();
  const auto* run = p;
  const auto flush = [&] {
    if (run != p) emit(std::string_view(reinterpret_cast<const char*>(run), p - run));
  };
  while (p != end) {
    const unsigned char c = *p;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++p;
      continue;
    }
    if (c >= 0x80) {
      const Utf8Scan scan = scan_utf8(p, end);
      if (scan.complete) {
        p += scan.length;
        continue;
      }
      flush();
      emit(kReplacement);
      p += scan.length == 0 ? 1 : scan.length;
      run = p;
      continue;
    }
    flush();
    switch (c) {
      case '"':
        emit("\\\"");
        break;
      case '\\':
        emit("\\\\");
        break;
      case '\b':
        emit("\\b");
        break;
      case '\f':
        emit("\\f");
        break;
      case '\n':
        emit("\\n");
        break;
      case '\r':
        emit("\\r");
        break;
      case '\t':
        emit("\\t");
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        emit(std::string_view(escaped, sizeof escaped));
        break;
      }
    }
    ++p;
    run = p;
  }
  flush();
}

}  // namespace

std::size_t json_escaped_size(std::string_view text) noexcept {
  std::size_t size = 0;
  escape_json(text, [&](std::string_view piece) { size += piece.size(); });
  return size;
}

JsonWriter::JsonWriter(std::size_t capacity) {
  out_.reserve(capacity);
}

void JsonWriter::before_value() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (has_member_.empty()) return;
  if (has_member_.back()) out_.push_back(',');
  has_member_.back() = true;
}

void JsonWriter::open(char bracket) {
  before_value();
  out_.push_back(bracket);
  has_member_.push_back(false);
}

void JsonWriter::close(char bracket) {
  has_member_.pop_back();
  out_.push_back(bracket);
}

JsonWriter& JsonWriter::begin_object() {
  open('{');
  return *this;
}
JsonWriter& JsonWriter::end_object() {
  close('}');
  return *this;
}
JsonWriter& JsonWriter::begin_array() {
  open('[');
  return *this;
}
JsonWriter& JsonWriter::end_array() {
  close(']');
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  before_value();
  out_.push_back('"');
  write_escaped(name);
  out_.append("\":");
  after_key_ = true;
  return *this;
}

void JsonWriter::write_escaped(std::string_view text) {
  escape_json(text, [&](std::string_view piece) { out_.append(piece); });
}

JsonWriter& JsonWriter::value(std::string_view text) {
  before_value();
  out_.push_back('"');
  write_escaped(text);
  out_.push_back('"');
  return *this;
}

JsonWriter& JsonWriter::value(bool flag) {
  before_value();
  out_.append(flag ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::unsigned_value(uint64_t number) {
  before_value();
  fmt::format_to(std::back_inserter(out_), "{}", number);
  return *this;
}

JsonWriter& JsonWriter::value(double number) {
  if (!std::isfinite(number)) return null();
  before_value();
  const std::size_t start = out_.size();
  // fmt's shortest round-trip form, as nlohmann's; a whole number keeps its ".0".
  fmt::format_to(std::back_inserter(out_), "{}", number);
  if (std::string_view(out_).substr(start).find_first_of(".eE") == std::string_view::npos) {
    out_.append(".0");
  }
  return *this;
}

JsonWriter& JsonWriter::null() {
  before_value();
  out_.append("null");
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view json) {
  before_value();
  out_.append(json);
  return *this;
}

}  // namespace dispatch::worker::detail
