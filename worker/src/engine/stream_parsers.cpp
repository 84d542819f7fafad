#include "dispatch/worker/stream_parsers.hpp"

#include <cstring>

namespace dispatch::worker {
namespace {

// Position of the first '\r' or '\n' in [begin, end), or end. Two memchr passes beat a byte
// loop by a wide margin: provider streams end lines in '\n', so the '\r' scan is over one line.
const char* find_line_end(const char* begin, const char* end) {
  const auto* lf = static_cast<const char*>(std::memchr(begin, '\n', end - begin));
  const char* limit = lf != nullptr ? lf : end;
  const auto* cr = static_cast<const char*>(std::memchr(begin, '\r', limit - begin));
  return cr != nullptr ? cr : limit;
}

bool is_blank(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

}  // namespace

bool SseParser::has_partial_event() const {
  return !overflowed_ && (!line_.empty() || pending_any_field_);
}

bool SseParser::feed(std::string_view bytes, const EventCallback& on_event) {
  if (overflowed_) return false;
  const char* pos = bytes.data();
  const char* const end = pos + bytes.size();
  // A "\r\n" split across two feeds: the '\r' already ended the line.
  if (last_was_cr_ && pos != end) {
    if (*pos == '\n') ++pos;
    last_was_cr_ = false;
  }
  while (pos != end) {
    const char* line_end = find_line_end(pos, end);
    if (line_end == end) {
      // Unterminated tail: keep it for the next feed, within the bound.
      if (line_.size() + (end - pos) + pending_.data.size() > max_event_bytes_) {
        overflowed_ = true;
        return false;
      }
      line_.append(pos, end);
      break;
    }
    const std::string_view piece(pos, static_cast<std::size_t>(line_end - pos));
    if (line_.size() + piece.size() + pending_.data.size() > max_event_bytes_) {
      overflowed_ = true;
      return false;
    }
    if (line_.empty()) {
      process_line(piece, on_event);  // whole line inside this feed: no copy
    } else {
      line_.append(piece);
      process_line(line_, on_event);
      line_.clear();
    }
    if (overflowed_) return false;
    pos = line_end + 1;
    if (*line_end == '\r') {
      if (pos == end) {
        last_was_cr_ = true;
      } else if (*pos == '\n') {
        ++pos;
      }
    }
  }
  return true;
}

void SseParser::process_line(std::string_view line, const EventCallback& on_event) {
  if (line.empty()) {
    if (pending_has_data_) on_event(pending_);
    // The last event ID persists across events (WHATWG); type and data do not.
    pending_.event.clear();
    pending_.data.clear();
    pending_has_data_ = false;
    pending_any_field_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment, e.g. DashScope's ":HTTP_STATUS/200"

  std::string_view field = line;
  std::string_view value;
  if (const auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  pending_any_field_ = true;
  if (field == "data") {
    if (pending_has_data_) pending_.data.push_back('\n');
    pending_.data.append(value);
    pending_has_data_ = true;
    if (pending_.data.size() > max_event_bytes_) overflowed_ = true;
  } else if (field == "event") {
    pending_.event.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) pending_.id.assign(value);
  }
  // "retry" and unknown fields are ignored: reconnection is the policy's business.
}

bool NdjsonParser::feed(std::string_view bytes, const LineCallback& on_line) {
  if (overflowed_) return false;
  const char* pos = bytes.data();
  const char* const end = pos + bytes.size();
  while (pos != end) {
    const auto* newline = static_cast<const char*>(std::memchr(pos, '\n', end - pos));
    if (newline == nullptr) {
      if (line_.size() + static_cast<std::size_t>(end - pos) > max_line_bytes_) {
        overflowed_ = true;
        return false;
      }
      line_.append(pos, end);
      break;
    }
    std::string_view line(pos, static_cast<std::size_t>(newline - pos));
    if (line_.size() + line.size() > max_line_bytes_) {
      overflowed_ = true;
      return false;
    }
    if (!line_.empty()) {
      line_.append(line);
      line = line_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!is_blank(line)) on_line(line);
    line_.clear();
    pos = newline + 1;
  }
  return true;
}

void NdjsonParser::finish(const LineCallback& on_line) {
  if (overflowed_) return;
  std::string_view line = line_;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!is_blank(line)) on_line(line);
  line_.clear();
}

}  // namespace dispatch::worker
