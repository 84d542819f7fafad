#pragma once

// Incremental parsers for streamed HTTP bodies. Bytes arrive in arbitrary pieces: an event or a
// line may be split across feed() calls, or many may arrive in one. Buffers are bounded.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace dispatch::worker {

struct SseEvent {
  std::string event;  // "" when no event: field (the WHATWG default type is "message")
  std::string data;   // data: lines joined with '\n'
  std::string id;
};

// Server-Sent Events per the WHATWG rules: lines end in \n, \r\n or \r; a line starting with ':'
// is a comment; "field:value" with one optional space after the colon stripped (so DashScope's
// "data:{...}" works); an empty line dispatches the event (if it has data); unknown fields are
// ignored; a trailing event without its blank line is not dispatched (the stream was cut).
class SseParser {
 public:
  using EventCallback = std::function<void(const SseEvent&)>;
  explicit SseParser(std::size_t max_event_bytes = 8u << 20) : max_event_bytes_(max_event_bytes) {}
  // Returns false once an event or line exceeds the bound; the parser then ignores input.
  bool feed(std::string_view bytes, const EventCallback& on_event);
  bool overflowed() const { return overflowed_; }
  // True when bytes of an undispatched event are buffered (a cut stream).
  bool has_partial_event() const;

 private:
  void process_line(std::string_view line, const EventCallback& on_event);
  std::size_t max_event_bytes_;
  std::string line_;
  SseEvent pending_;
  bool pending_has_data_ = false;
  bool pending_any_field_ = false;
  bool last_was_cr_ = false;
  bool overflowed_ = false;
};

// Newline-delimited JSON (Ollama): one value per '\n'-terminated line; blank lines skipped.
class NdjsonParser {
 public:
  using LineCallback = std::function<void(std::string_view line)>;
  explicit NdjsonParser(std::size_t max_line_bytes = 8u << 20) : max_line_bytes_(max_line_bytes) {}
  bool feed(std::string_view bytes, const LineCallback& on_line);
  // A last line without '\n' at end of body (Ollama ends its stream with one): deliver it.
  void finish(const LineCallback& on_line);
  bool overflowed() const { return overflowed_; }

 private:
  std::size_t max_line_bytes_;
  std::string line_;
  bool overflowed_ = false;
};

}  // namespace dispatch::worker
