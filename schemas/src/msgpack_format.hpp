#pragma once

// The msgpack format as one table indexed by the type byte, shared by the structural pre-scan
// (wire.cpp) and the decoder (codec.cpp): both read a value's head the same way, so what the
// pre-scan proved about the bytes is exactly what the decoder relies on. Private to the
// protocol library.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace dispatch::protocol::detail {

enum class Family : uint8_t {
  nil,
  boolean,
  uint,  // positive fixint, uint 8..64
  sint,  // negative fixint, int 8..64 (whose value may still be >= 0)
  float32,
  float64,
  str,
  bin,
  ext,
  array,
  map,
  reserved,  // 0xc1, never used by msgpack
};

struct TypeByte {
  Family family = Family::reserved;
  // Bytes after the type byte that hold the value (ints, floats) or the length / element
  // count (str, bin, ext, array, map), big-endian. 0 for the fix forms.
  uint8_t width = 0;
  // Fix forms: the value, length or count the type byte itself carries (fixext: data bytes).
  uint8_t inline_value = 0;
};

// The forms whose value or length follows the type byte.
struct SizedForm {
  uint8_t byte;
  Family family;
  uint8_t width;
};
inline constexpr SizedForm kSizedForms[] = {
    {0xc4, Family::bin, 1},     {0xc5, Family::bin, 2},     {0xc6, Family::bin, 4},
    {0xc7, Family::ext, 1},     {0xc8, Family::ext, 2},     {0xc9, Family::ext, 4},
    {0xca, Family::float32, 4}, {0xcb, Family::float64, 8}, {0xcc, Family::uint, 1},
    {0xcd, Family::uint, 2},    {0xce, Family::uint, 4},    {0xcf, Family::uint, 8},
    {0xd0, Family::sint, 1},    {0xd1, Family::sint, 2},    {0xd2, Family::sint, 4},
    {0xd3, Family::sint, 8},    {0xd9, Family::str, 1},     {0xda, Family::str, 2},
    {0xdb, Family::str, 4},     {0xdc, Family::array, 2},   {0xdd, Family::array, 4},
    {0xde, Family::map, 2},     {0xdf, Family::map, 4},
};

constexpr std::array<TypeByte, 256> make_type_table() {
  std::array<TypeByte, 256> t{};  // every entry not set below stays `reserved`
  const auto fix = [&](unsigned first, unsigned last, Family family, unsigned mask) {
    for (unsigned b = first; b <= last; ++b) t[b] = {family, 0, static_cast<uint8_t>(b & mask)};
  };
  fix(0x00, 0x7f, Family::uint, 0x7f);
  fix(0x80, 0x8f, Family::map, 0x0f);
  fix(0x90, 0x9f, Family::array, 0x0f);
  fix(0xa0, 0xbf, Family::str, 0x1f);
  fix(0xe0, 0xff, Family::sint, 0xff);  // negative fixint: read_head sign-extends the byte
  t[0xc0] = {Family::nil, 0, 0};
  t[0xc2] = {Family::boolean, 0, 0};
  t[0xc3] = {Family::boolean, 0, 1};
  for (const SizedForm& form : kSizedForms) t[form.byte] = {form.family, form.width, 0};
  const uint8_t fixext_sizes[] = {1, 2, 4, 8, 16};  // 0xd4..0xd8
  for (unsigned i = 0; i < 5; ++i) t[0xd4 + i] = {Family::ext, 0, fixext_sizes[i]};
  return t;
}

inline constexpr std::array<TypeByte, 256> kTypeBytes = make_type_table();

// The type names error messages use ("expected str, got int").
constexpr std::string_view family_name(Family family) noexcept {
  constexpr std::string_view names[] = {"nil", "bool", "int", "int",   "float", "float",
                                        "str", "bin",  "ext", "array", "map",   "reserved"};
  return names[static_cast<std::size_t>(family)];
}

// Families whose head carries a length or count rather than the value itself.
constexpr bool has_length(Family family) noexcept {
  return family == Family::str || family == Family::bin || family == Family::ext ||
         family == Family::array || family == Family::map;
}

constexpr bool is_text(Family family) noexcept {
  return family == Family::str || family == Family::bin;
}

inline uint64_t read_be(const unsigned char* p, std::size_t width) noexcept {
  uint64_t value = 0;
  for (std::size_t i = 0; i < width; ++i) value = (value << 8) | p[i];
  return value;
}

// One value's head: its family and the number after the type byte — an int's or float's bits
// (a signed int already sign-extended), or a length / element count. For ext the count is of
// data bytes; one ext type byte precedes them.
struct Head {
  Family family = Family::nil;
  uint64_t value = 0;
};

// Reads the head at `p`; the caller has checked that `kTypeBytes[*p].width` bytes follow.
inline Head read_head(const unsigned char* p) noexcept {
  const TypeByte& type = kTypeBytes[*p];
  if (type.width == 0) {
    const bool negative_fixint = type.family == Family::sint;
    return {type.family, negative_fixint ? static_cast<uint64_t>(static_cast<int8_t>(*p))
                                         : uint64_t{type.inline_value}};
  }
  uint64_t value = read_be(p + 1, type.width);
  if (type.family == Family::sint && type.width < 8) {
    const unsigned shift = 64 - 8 * type.width;  // sign-extend the width's top bit
    value = static_cast<uint64_t>(static_cast<int64_t>(value << shift) >> shift);
  }
  return {type.family, value};
}

}  // namespace dispatch::protocol::detail
