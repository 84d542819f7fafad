#pragma once

// Every provider request ("attempt") the fake has seen, for tests to assert on through
// GET /_fake/log. An attempt is recorded when it starts and updated as its outcome becomes
// known. Thread-safe. Bounded: the oldest records are dropped beyond `capacity`.

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace dispatch::fake_provider {

struct AttemptRecord {
  uint64_t seq = 0;
  double t_ms = 0;  // ms since the server started, when the request was read
  int64_t unix_ms = 0;
  std::string format;  // openai | anthropic | ollama | dashscope-compatible | dashscope
  std::string path;
  std::string model;  // full model string, directives included
  std::string header_directives;
  std::string traceparent;  // the request's W3C `traceparent` header, "" when it had none
  bool stream = false;
  std::string outcome = "pending";
  int status = 0;  // 0 until a status line is sent (and for reset / hang)
  std::string request_id;
  // ms since the server started (same origin as t_ms).
  std::optional<double> headers_ms;
  std::optional<double> first_chunk_ms;
  std::optional<double> end_ms;
  std::optional<double> client_closed_ms;
  int64_t chunks_sent = 0;  // content chunks written
  std::optional<int64_t> prompt_tokens;
  std::optional<int64_t> completion_tokens;
};

// Identifies a record across resets: a reset starts a new generation and renumbers from 1.
struct AttemptId {
  uint64_t generation = 0;
  uint64_t seq = 0;
};

class AttemptLog {
 public:
  explicit AttemptLog(size_t capacity) : capacity_(capacity) {}

  // Assigns the next seq (from 1 after a reset) and stores the record.
  AttemptId begin(AttemptRecord record);
  // Applies `change` to the record if it is still held (not dropped nor reset).
  void update(AttemptId id, const std::function<void(AttemptRecord&)>& change);
  // {"attempts":[...]}; with `model_filter`, only the records for that exact model string.
  nlohmann::json to_json(std::optional<std::string_view> model_filter) const;
  void clear();

 private:
  // Position of the record in records_, or records_.size() when it is not held.
  size_t index_of(AttemptId id) const;

  const size_t capacity_;
  mutable std::mutex mutex_;
  uint64_t generation_ = 0;
  uint64_t next_seq_ = 1;
  std::deque<AttemptRecord> records_;  // ascending seq
};

nlohmann::json to_json(const AttemptRecord& record);

}  // namespace dispatch::fake_provider
