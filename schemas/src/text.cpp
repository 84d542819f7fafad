#include "dispatch/protocol/text.hpp"

#include <array>
#include <cstdint>
#include <cstring>

#include "dispatch/common/strings.hpp"

namespace dispatch::protocol {
namespace {

// Length of the well-formed sequence at `p`, or 0 with `consumed` = the bytes of its maximal
// ill-formed subpart (at least 1), following Unicode's "U+FFFD substitution of maximal subparts".
std::size_t sequence_length(const unsigned char* p, std::size_t remaining,
                            std::size_t& consumed) noexcept {
  const unsigned char lead = p[0];
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // overlong
    if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // overlong
    if (lead == 0xF4) high = 0x8F;  // past U+10FFFF
  } else {
    consumed = 1;
    return 0;
  }
  for (std::size_t i = 1; i < length; ++i) {
    if (i >= remaining) {
      consumed = i;
      return 0;
    }
    const unsigned char c = p[i];
    const unsigned char lo = i == 1 ? low : 0x80;
    const unsigned char hi = i == 1 ? high : 0xBF;
    if (c < lo || c > hi) {
      consumed = i;
      return 0;
    }
  }
  return length;
}

// Most strings on the wire are ASCII; skipping 8 bytes at a time keeps validation cheap for
// multi-megabyte content.
std::size_t ascii_prefix(const unsigned char* p, std::size_t n) noexcept {
  std::size_t i = 0;
  while (i + 8 <= n) {
    uint64_t word = 0;
    std::memcpy(&word, p + i, 8);
    if ((word & 0x8080808080808080ULL) != 0) break;
    i += 8;
  }
  while (i < n && p[i] < 0x80) ++i;
  return i;
}

constexpr std::array<int8_t, 256> make_base64_table() {
  std::array<int8_t, 256> table{};
  for (auto& entry : table) entry = -1;
  constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}
constexpr auto kBase64 = make_base64_table();

}  // namespace

bool is_valid_utf8(std::string_view text) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    i += ascii_prefix(p + i, n - i);
    if (i >= n) break;
    std::size_t consumed = 0;
    const std::size_t length = sequence_length(p + i, n - i, consumed);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string make_valid_utf8(std::string_view text) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size() + 8);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const std::size_t ascii = ascii_prefix(p + i, n - i);
    out.append(text.substr(i, ascii));
    i += ascii;
    if (i >= n) break;
    std::size_t consumed = 0;
    const std::size_t length = sequence_length(p + i, n - i, consumed);
    if (length == 0) {
      out.append(kReplacement);
      i += consumed;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string_view truncate_utf8(std::string_view text, std::size_t max_bytes) noexcept {
  if (text.size() <= max_bytes) return text;
  std::size_t cut = max_bytes;
  // Back up over continuation bytes (10xxxxxx) so the cut lands before a lead byte.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

std::string_view strip_data_url(std::string_view image) noexcept {
  if (!istarts_with(image, "data:")) return image;
  const std::size_t comma = image.find(',');
  if (comma == std::string_view::npos) return image;
  const std::string_view meta = image.substr(0, comma);
  constexpr std::string_view kBase64Marker = ";base64";
  if (meta.size() < kBase64Marker.size() ||
      !istarts_with(meta.substr(meta.size() - kBase64Marker.size()), kBase64Marker)) {
    return image;  // not base64 data (e.g. percent-encoded): left for the caller to reject
  }
  return image.substr(comma + 1);
}

bool is_base64(std::string_view text) noexcept {
  if (text.empty()) return false;
  std::size_t end = text.size();
  std::size_t padding = 0;
  while (end > 0 && text[end - 1] == '=' && padding < 2) {
    --end;
    ++padding;
  }
  if (end == 0) return false;
  for (std::size_t i = 0; i < end; ++i) {
    if (kBase64[static_cast<unsigned char>(text[i])] < 0) return false;
  }
  return true;
}

std::string_view sniff_image_media_type(std::string_view base64) noexcept {
  // 16 base64 characters decode to the 12 bytes the WebP signature needs.
  std::array<unsigned char, 12> bytes{};
  std::size_t decoded = 0;
  uint32_t accumulator = 0;
  int bits = 0;
  for (std::size_t i = 0; i < base64.size() && decoded < bytes.size(); ++i) {
    const int8_t value = kBase64[static_cast<unsigned char>(base64[i])];
    if (value < 0) break;
    accumulator = (accumulator << 6) | static_cast<uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes[decoded++] = static_cast<unsigned char>((accumulator >> bits) & 0xFF);
    }
  }
  auto starts = [&](std::string_view magic, std::size_t at = 0) {
    if (decoded < at + magic.size()) return false;
    return std::memcmp(bytes.data() + at, magic.data(), magic.size()) == 0;
  };
  if (starts("\x89PNG")) return "image/png";
  if (starts("\xFF\xD8\xFF")) return "image/jpeg";
  if (starts("GIF8")) return "image/gif";
  if (starts("RIFF") && starts("WEBP", 8)) return "image/webp";
  return "";
}

}  // namespace dispatch::protocol
