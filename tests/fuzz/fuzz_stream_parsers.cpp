// Fuzz harness: the worker's incremental stream parsers (SSE for OpenAI, Anthropic and DashScope;
// NDJSON for Ollama), which read whatever a provider, or something posing as one, sends.
//
// Input: byte 0 picks the parser (bit 0), a small event bound that the input can overflow (bit
// 1), and the size of the pieces the body is fed in (bits 2-7); the rest is the body. Oracle:
// feeding the body whole and feeding it in pieces yields the same events, the same overflow and
// the same "cut stream" verdict — bytes arrive from the network in arbitrary pieces.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/worker/stream_parsers.hpp"

namespace {

using dispatch::worker::NdjsonParser;
using dispatch::worker::SseEvent;
using dispatch::worker::SseParser;

struct Outcome {
  std::vector<std::string> events;  // SSE: "event\x1f" "data\x1f" "id"; NDJSON: the line
  bool overflowed = false;
  bool partial = false;
  bool operator==(const Outcome&) const = default;
};

Outcome run_sse(std::string_view body, std::size_t piece, std::size_t bound) {
  SseParser parser(bound);
  Outcome out;
  const auto on_event = [&](const SseEvent& e) {
    out.events.push_back(e.event + '\x1f' + e.data + '\x1f' + e.id);
  };
  for (std::size_t at = 0; at < body.size(); at += piece) {
    if (!parser.feed(body.substr(at, piece), on_event)) break;
  }
  out.overflowed = parser.overflowed();
  out.partial = parser.has_partial_event();
  return out;
}

Outcome run_ndjson(std::string_view body, std::size_t piece, std::size_t bound) {
  NdjsonParser parser(bound);
  Outcome out;
  const auto on_line = [&](std::string_view line) { out.events.emplace_back(line); };
  bool fed = true;
  for (std::size_t at = 0; at < body.size() && fed; at += piece) {
    fed = parser.feed(body.substr(at, piece), on_line);
  }
  if (fed) parser.finish(on_line);
  out.overflowed = parser.overflowed();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool sse = (data[0] & 1) == 0;
  const std::size_t bound = (data[0] & 2) != 0 ? 64 : (8u << 20);
  const std::size_t piece = static_cast<std::size_t>(data[0] >> 2) + 1;  // 1..64 bytes
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t whole = body.size() + 1;
  const Outcome at_once = sse ? run_sse(body, whole, bound) : run_ndjson(body, whole, bound);
  const Outcome in_pieces = sse ? run_sse(body, piece, bound) : run_ndjson(body, piece, bound);
  if (!(at_once == in_pieces)) {
    std::fprintf(stderr, "%s: %zu events whole, %zu in %zu-byte pieces (overflow %d/%d)\n",
                 sse ? "SSE" : "NDJSON", at_once.events.size(), in_pieces.events.size(), piece,
                 at_once.overflowed, in_pieces.overflowed);
    std::abort();
  }
  return 0;
}
