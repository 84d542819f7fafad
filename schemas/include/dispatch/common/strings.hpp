#pragma once

// ASCII string helpers shared by every component. Locale-independent on purpose: protocol
// names, HTTP header names and JSON keys are ASCII, and std::tolower's answer would depend on
// the process's locale.

#include <cstddef>
#include <string>
#include <string_view>

namespace dispatch {

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
constexpr bool is_ascii_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

std::string to_lower(std::string_view text);
bool iequals(std::string_view a, std::string_view b) noexcept;
bool istarts_with(std::string_view text, std::string_view prefix) noexcept;
bool icontains(std::string_view haystack, std::string_view needle) noexcept;
// Without leading and trailing ASCII white space.
std::string_view trim(std::string_view text) noexcept;

// At most `max` bytes of `text` (bytes, not characters: for bounded copies of peer input whose
// text is checked elsewhere; use truncate_utf8 in protocol/text.hpp for text users read).
std::string clip(std::string_view text, std::size_t max);
// The same, marked with "..." when something was cut.
std::string clip_marked(std::string_view text, std::size_t max);

// Printable, bounded rendering of untrusted bytes for a log line or an error message: bytes
// outside printable ASCII become '?', and "..." marks a cut.
std::string printable(std::string_view bytes, std::size_t max = 32);

// Lowercase hex of every byte.
std::string to_hex(std::string_view bytes);

}  // namespace dispatch
