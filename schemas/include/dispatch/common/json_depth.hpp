#pragma once

// One bound on how deeply JSON from outside may nest, for every component that parses it
// (provider answers and request tool arguments in the worker, batch lines in the CLI).
// nlohmann parses any depth, but serialising a DOM and converting one are recursive: ~200 KB of
// nested brackets exhausted the stack and killed the process. No real answer, schema or batch
// line comes near the bound.

#include <cstddef>
#include <string_view>

namespace dispatch {

inline constexpr std::size_t kMaxJsonDepth = 256;

// True when `text` nests arrays and objects at most `max_depth` deep. Skips strings; `text` need
// not be valid JSON. Linear, allocates nothing: run it before handing the text to a parser.
bool json_depth_within(std::string_view text, std::size_t max_depth = kMaxJsonDepth) noexcept;

}  // namespace dispatch
