#include "dispatch/fake_provider/attempt_log.hpp"

namespace dispatch::fake_provider {
namespace {

template <typename T>
nlohmann::json optional_json(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json to_json(const AttemptRecord& record) {
  nlohmann::json j{
      {"seq", record.seq},
      {"t_ms", record.t_ms},
      {"unix_ms", record.unix_ms},
      {"format", record.format},
      {"path", record.path},
      {"model", record.model},
      {"header_directives", record.header_directives},
      {"stream", record.stream},
      {"outcome", record.outcome},
      {"status", record.status},
      {"request_id", record.request_id},
      {"headers_ms", optional_json(record.headers_ms)},
      {"first_chunk_ms", optional_json(record.first_chunk_ms)},
      {"end_ms", optional_json(record.end_ms)},
      {"chunks_sent", record.chunks_sent},
      {"prompt_tokens", optional_json(record.prompt_tokens)},
      {"completion_tokens", optional_json(record.completion_tokens)},
  };
  if (record.client_closed_ms) j["client_closed_ms"] = *record.client_closed_ms;
  if (!record.traceparent.empty()) j["traceparent"] = record.traceparent;
  return j;
}

AttemptId AttemptLog::begin(AttemptRecord record) {
  std::lock_guard lock(mutex_);
  record.seq = next_seq_++;
  const AttemptId id{generation_, record.seq};
  records_.push_back(std::move(record));
  while (records_.size() > capacity_) records_.pop_front();
  return id;
}

size_t AttemptLog::index_of(AttemptId id) const {
  if (id.generation != generation_ || records_.empty()) return records_.size();
  const uint64_t first = records_.front().seq;
  if (id.seq < first || id.seq - first >= records_.size()) return records_.size();
  return static_cast<size_t>(id.seq - first);
}

void AttemptLog::update(AttemptId id, const std::function<void(AttemptRecord&)>& change) {
  std::lock_guard lock(mutex_);
  if (const size_t index = index_of(id); index < records_.size()) change(records_[index]);
}

nlohmann::json AttemptLog::to_json(std::optional<std::string_view> model_filter) const {
  std::lock_guard lock(mutex_);
  nlohmann::json attempts = nlohmann::json::array();
  for (const auto& record : records_) {
    if (model_filter && record.model != *model_filter) continue;
    attempts.push_back(fake_provider::to_json(record));
  }
  return nlohmann::json{{"attempts", std::move(attempts)}};
}

void AttemptLog::clear() {
  std::lock_guard lock(mutex_);
  records_.clear();
  ++generation_;
  next_seq_ = 1;
}

}  // namespace dispatch::fake_provider
