#pragma once

// Text helpers the protocol relies on: msgpack `str` values must be UTF-8 (a Python or Node peer
// fails to decode anything else), and images travel as bare base64.

#include <cstddef>
#include <string>
#include <string_view>

namespace dispatch::protocol {

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view text) noexcept;

// `text` with every ill-formed sequence replaced by U+FFFD. The encoder applies it to every
// string it writes, so a peer never receives a `str` it cannot decode.
std::string make_valid_utf8(std::string_view text);

// The longest prefix of at most `max_bytes` that does not cut a UTF-8 sequence in two — for
// shortening provider error bodies before they go into a message.
std::string_view truncate_utf8(std::string_view text, std::size_t max_bytes) noexcept;

// "data:image/png;base64,iVBOR…" -> "iVBOR…"; anything without a data: prefix is returned as is.
std::string_view strip_data_url(std::string_view image) noexcept;

// Standard base64 alphabet (A–Z a–z 0–9 + /) with at most two '=' at the end; non-empty.
bool is_base64(std::string_view text) noexcept;

// Media type guessed from the first bytes of base64 image data ("image/png", "image/jpeg",
// "image/gif", "image/webp"), or "" when unknown. Anthropic needs a media type; the wire only
// carries the base64 text, so adapters sniff it.
std::string_view sniff_image_media_type(std::string_view base64) noexcept;

}  // namespace dispatch::protocol
