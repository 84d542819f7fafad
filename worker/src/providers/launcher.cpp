#include "dispatch/worker/providers/launcher.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "dispatch/worker/providers/adapter.hpp"
#include "dispatch/worker/providers/error_classifier.hpp"

namespace dispatch::worker {

class ProviderAttemptLauncher::Attempt final : public TransferListener, public DecodeListener {
 public:
  Attempt(ProviderAttemptLauncher& launcher, AttemptHandle handle, AttemptListener& listener)
      : launcher_(launcher), handle_(handle), listener_(listener) {}

  // Reports `failure` from a zero-delay timer: start() never calls back inline.
  void fail_later(Failure failure) {
    pending_failure_ = std::move(failure);
    timer_ = launcher_.scheduler_.schedule_after(std::chrono::milliseconds(0), [this] {
      timer_ = kNoTimer;
      CallbackScope scope(*this);
      if (finished_) return;
      report_failure(std::move(*pending_failure_));
    });
  }

  // Keeps what the transfer needs, for now or for when a slot frees.
  void prepare(const ProviderConfig& provider, const Adapter& adapter, BuiltRequest built,
               bool stream, uint32_t connect_timeout_ms) {
    provider_ = &provider;
    adapter_ = &adapter;
    output_.notes = std::move(built.notes);
    request_ = std::move(built.http);
    stream_ = stream;
    connect_timeout_ms_ = connect_timeout_ms;
  }

  // Starts the prepared transfer; takes one of the provider's slots once the engine has it.
  void run() {
    DecoderOptions decoding;
    decoding.stream = stream_;
    decoding.max_body_bytes = launcher_.config_.max_response_bytes;
    decoder_ = adapter_->make_decoder(decoding, *provider_, launcher_.scheduler_.clock());
    TransferOptions transfer;
    transfer.connect_timeout_ms = connect_timeout_ms_;
    transfer_ = launcher_.engine_.start(std::move(request_), transfer, *this);
    running_ = true;
    holds_slot_ = true;
    ++launcher_.slots_[provider_->name].running;
  }

  void set_queued(bool queued) { queued_ = queued; }
  const ProviderConfig& provider() const { return *provider_; }

  // Stops at once without events. Destruction waits for the outermost callback to unwind.
  void stop() {
    finished_ = true;
    if (queued_) launcher_.dequeue(provider_->name, handle_);
    queued_ = false;
    end_transfer();
    if (timer_ != kNoTimer) launcher_.scheduler_.cancel(timer_);
    timer_ = kNoTimer;
  }

  bool busy() const { return depth_ > 0; }

  // TransferListener
  void on_response_start(int status, const HttpHeaders& headers) override {
    CallbackScope scope(*this);
    if (finished_) return;
    status_ = status;
    // Remaining-quota headers come with answers and refusals alike; the broker paces the fleet
    // by them (the policy reports them).
    output_.limits = parse_rate_limit_headers(headers, launcher_.scheduler_.clock().unix_ms());
    decoder_->on_headers(status, headers);
  }

  void on_body(std::string_view bytes) override {
    CallbackScope scope(*this);
    if (finished_) return;
    listener_.on_activity();
    if (finished_) return;
    decode_guarded([&] { decoder_->on_body(bytes, *this); });
    if (stream_error_) {
      report_failure(std::move(*stream_error_));
      return;
    }
    flush_delta();
  }

  void on_complete(const std::optional<TransportError>& error) override {
    CallbackScope scope(*this);
    if (finished_) return;
    running_ = false;  // the engine is done with it: nothing to cancel
    end_transfer();    // frees the slot before any event, so a retry queues behind the others
    const bool error_status = status_ != 0 && (status_ < 200 || status_ >= 300);
    if (error && !error_status) {
      report_failure(failure_from_transport(*error, *provider_));
      return;
    }
    // An error status with a cut body is still classified from its status and headers.
    Result<void, Failure> finished;
    decode_guarded([&] { finished = decoder_->finish(*this); });
    if (stream_error_) {
      report_failure(std::move(*stream_error_));
      return;
    }
    if (!finished) {
      report_failure(std::move(finished).error());
      return;
    }
    flush_delta();
    if (finished_) return;
    finished_ = true;
    finalise_output();
    listener_.on_complete(std::move(output_));
  }

  // DecodeListener
  void on_content(std::string_view text) override {
    if (!take_answer_bytes(text.size())) return;
    output_.content.append(text);
    delta_.content.append(text);
  }
  void on_thinking(std::string_view text) override {
    if (!take_answer_bytes(text.size())) return;
    output_.thinking.append(text);
    delta_.thinking.append(text);
  }
  void on_tool_call(const protocol::ToolCallDelta& delta) override {
    if (!take_answer_bytes(delta.id.size() + delta.name.size() + delta.arguments.size())) return;
    auto it = std::find_if(tool_calls_.begin(), tool_calls_.end(),
                           [&](const IndexedCall& c) { return c.index == delta.index; });
    if (it == tool_calls_.end()) {
      tool_calls_.push_back(IndexedCall{delta.index, {delta.id, delta.name, delta.arguments}});
    } else {
      if (it->call.id.empty()) it->call.id = delta.id;
      // Some servers repeat the whole name in every delta instead of sending fragments.
      if (!delta.name.empty() && delta.name != it->call.name) it->call.name += delta.name;
      it->call.arguments += delta.arguments;
    }
    if (!delta_.tool_calls.empty() && delta_.tool_calls.back().index == delta.index) {
      protocol::ToolCallDelta& last = delta_.tool_calls.back();
      if (last.id.empty()) last.id = delta.id;
      last.name += delta.name;
      last.arguments += delta.arguments;
    } else {
      delta_.tool_calls.push_back(delta);
    }
  }
  void on_usage(uint64_t prompt_tokens, uint64_t completion_tokens) override {
    output_.usage.prompt_tokens = prompt_tokens;
    output_.usage.completion_tokens = completion_tokens;
    output_.usage.total_tokens = prompt_tokens + completion_tokens;
  }
  void on_cached_tokens(uint64_t cached_tokens) override {
    output_.usage.cached_tokens = cached_tokens;
  }
  void on_finish(std::string_view normalised, std::string_view raw) override {
    output_.finish_reason = normalised;
    output_.raw_finish_reason = raw;
  }
  void on_metadata(std::string_view request_id, std::string_view model,
                   int64_t created_at_unix_s) override {
    if (!request_id.empty()) output_.request_id = request_id;
    if (!model.empty()) output_.model = model;
    if (created_at_unix_s != 0) output_.created_at = created_at_unix_s;
  }
  void on_terminator() override { output_.saw_terminator = true; }
  void on_malformed_event(std::string_view why) override {
    ++output_.skipped_events;
    spdlog::debug("provider {}: skipped a stream event: {}", provider_->name, why);
  }
  void on_stream_error(const Failure& failure) override {
    if (!stream_error_) stream_error_ = failure;
  }

 private:
  // Defers destruction while callbacks of this attempt are on the stack, so that events may
  // abort() or finish the attempt re-entrantly; the outermost scope releases it.
  class CallbackScope {
   public:
    explicit CallbackScope(Attempt& attempt) : attempt_(attempt) { ++attempt_.depth_; }
    ~CallbackScope() {
      if (--attempt_.depth_ == 0 && attempt_.finished_) {
        attempt_.launcher_.release(attempt_.handle_);  // destroys attempt_; touch nothing after
      }
    }
    CallbackScope(const CallbackScope&) = delete;
    CallbackScope& operator=(const CallbackScope&) = delete;

   private:
    Attempt& attempt_;
  };

  struct IndexedCall {
    uint32_t index;
    protocol::ToolCall call;
  };

  // Adapters do not throw on provider input; if one ever does, the attempt fails cleanly
  // instead of unwinding through curl's callbacks.
  template <typename Fn>
  void decode_guarded(Fn&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      if (!stream_error_) {
        Failure failure;
        failure.kind = protocol::ErrorKind::internal;
        failure.status = static_cast<uint16_t>(std::max(status_, 0));
        failure.message = std::string("decoding failed: ") + e.what();
        stream_error_ = std::move(failure);
      }
    }
  }

  // Counts answer text against worker.max_response_bytes; past it the attempt fails
  // (response_too_large) and the text is not kept.
  bool take_answer_bytes(std::size_t bytes) {
    if (stream_error_) return false;
    answer_bytes_ += bytes;
    if (answer_bytes_ <= launcher_.config_.max_response_bytes) return true;
    stream_error_ = response_too_large(launcher_.config_.max_response_bytes);
    return false;
  }

  void flush_delta() {
    if (delta_.content.empty() && delta_.thinking.empty() && delta_.tool_calls.empty()) return;
    protocol::Chunk chunk = std::move(delta_);
    delta_ = protocol::Chunk{};
    listener_.on_delta(chunk);
  }

  // Cancels the transfer if it still runs and gives its slot to the next waiting attempt.
  void end_transfer() {
    if (running_) launcher_.engine_.cancel(transfer_);
    running_ = false;
    if (holds_slot_) {
      holds_slot_ = false;
      launcher_.release_slot(provider_->name);
    }
  }

  void report_failure(Failure failure) {
    if (finished_) return;
    finished_ = true;
    if (!failure.limits.any()) failure.limits = output_.limits;
    end_transfer();
    spdlog::debug("attempt on provider {} failed: {} (status {})",
                  provider_ != nullptr ? provider_->name : "?", protocol::to_string(failure.kind),
                  failure.status);
    listener_.on_failed(std::move(failure), std::move(output_.notes));
  }

  void finalise_output() {
    std::stable_sort(tool_calls_.begin(), tool_calls_.end(),
                     [](const IndexedCall& a, const IndexedCall& b) { return a.index < b.index; });
    output_.tool_calls.reserve(tool_calls_.size());
    for (IndexedCall& entry : tool_calls_) {
      if (entry.call.arguments.empty()) entry.call.arguments = "{}";
      output_.tool_calls.push_back(std::move(entry.call));
    }
    tool_calls_.clear();
  }

  ProviderAttemptLauncher& launcher_;
  AttemptHandle handle_;
  AttemptListener& listener_;
  const ProviderConfig* provider_ = nullptr;
  const Adapter* adapter_ = nullptr;
  HttpRequest request_;  // until run()
  bool stream_ = true;
  uint32_t connect_timeout_ms_ = 0;
  std::unique_ptr<ResponseDecoder> decoder_;
  TransferId transfer_ = 0;
  bool queued_ = false;      // waiting for a slot of its provider
  bool holds_slot_ = false;  // counted in its provider's running transfers
  bool running_ = false;     // a transfer is in the engine
  bool finished_ = false;    // reported or stopped: no further events
  int depth_ = 0;
  int status_ = 0;
  TimerId timer_ = kNoTimer;
  std::optional<Failure> pending_failure_;
  std::optional<Failure> stream_error_;
  AttemptOutput output_;
  std::size_t answer_bytes_ = 0;  // content + thinking + tool-call text so far
  std::vector<IndexedCall> tool_calls_;
  protocol::Chunk delta_;
};

ProviderAttemptLauncher::ProviderAttemptLauncher(HttpEngine& engine, Scheduler& scheduler,
                                                 const WorkerConfig& config)
    : engine_(engine), scheduler_(scheduler), config_(config) {}

ProviderAttemptLauncher::~ProviderAttemptLauncher() {
  // Waiting attempts are dropped like running ones: no transfer, no event.
  closing_ = true;
  for (auto& [handle, attempt] : attempts_) attempt->stop();
  attempts_.clear();
}

AttemptHandle ProviderAttemptLauncher::start(const AttemptSpec& spec, AttemptListener& listener) {
  const AttemptHandle handle = next_handle_++;
  auto owned = std::make_unique<Attempt>(*this, handle, listener);
  Attempt& attempt = *owned;
  attempts_.emplace(handle, std::move(owned));

  const ProviderConfig* provider =
      spec.provider != nullptr ? spec.provider : config_.provider(spec.target.provider);
  const Adapter* adapter = provider != nullptr ? adapter_for_type(provider->type) : nullptr;
  if (provider == nullptr || adapter == nullptr) {
    Failure failure;
    failure.kind = protocol::ErrorKind::unsupported_provider;
    failure.message =
        provider == nullptr
            ? "provider '" + spec.target.provider + "' is not configured on this worker"
            : "provider '" + provider->name + "' has unknown type '" + provider->type + "'";
    attempt.fail_later(std::move(failure));
    return handle;
  }
  if (spec.request == nullptr || spec.target.model.empty()) {
    Failure failure;
    failure.kind = protocol::ErrorKind::invalid_request;
    failure.message = spec.request == nullptr ? "no request" : "model: empty";
    attempt.fail_later(std::move(failure));
    return handle;
  }
  // Either side may turn streaming off: the policy (spec) or the provider's config.
  const bool stream = spec.stream_upstream && provider->stream_upstream;
  auto built = adapter->build(*spec.request, spec.target.model, stream, *provider);
  if (!built) {
    attempt.fail_later(std::move(built).error());
    return handle;
  }
  if (!spec.traceparent.empty()) {
    built.value().http.headers.push_back({"traceparent", spec.traceparent});
  }
  attempt.prepare(*provider, *adapter, std::move(built).value(), stream, spec.connect_timeout_ms);
  ProviderSlots& slots = slots_[provider->name];
  if (provider->max_in_flight > 0 &&
      (slots.running >= provider->max_in_flight || !slots.waiting.empty())) {
    attempt.set_queued(true);
    slots.waiting.push_back(handle);
    spdlog::debug(
        "provider {}: {} transfers running (max_in_flight {}); attempt queued, {} waiting",
        provider->name, slots.running, provider->max_in_flight, slots.waiting.size());
    return handle;
  }
  launch(attempt);
  return handle;
}

void ProviderAttemptLauncher::launch(Attempt& attempt) {
  try {
    attempt.run();
  } catch (const std::exception& e) {
    Failure failure;
    failure.kind = protocol::ErrorKind::internal;
    failure.message = std::string("cannot start transfer: ") + e.what();
    attempt.fail_later(std::move(failure));
  }
}

void ProviderAttemptLauncher::release_slot(const std::string& provider) {
  ProviderSlots& slots = slots_[provider];
  if (slots.running > 0) --slots.running;
  if (closing_) return;
  // Runs inside the ending attempt's callbacks; starting a transfer there is fine (the engine
  // defers it) and reports nothing, so no event is re-entered here.
  while (!slots.waiting.empty()) {
    auto it = attempts_.find(slots.waiting.front());
    if (it == attempts_.end()) {  // cannot happen: stop() dequeues; kept harmless
      slots.waiting.pop_front();
      continue;
    }
    Attempt& next = *it->second;
    const uint32_t limit = next.provider().max_in_flight;
    if (limit > 0 && slots.running >= limit) break;
    slots.waiting.pop_front();
    next.set_queued(false);
    launch(next);
  }
}

void ProviderAttemptLauncher::dequeue(const std::string& provider, AttemptHandle handle) {
  auto slots = slots_.find(provider);
  if (slots == slots_.end()) return;
  std::deque<AttemptHandle>& waiting = slots->second.waiting;
  waiting.erase(std::remove(waiting.begin(), waiting.end(), handle), waiting.end());
}

std::size_t ProviderAttemptLauncher::running_transfers(const std::string& provider) const {
  auto it = slots_.find(provider);
  return it == slots_.end() ? 0 : it->second.running;
}

std::size_t ProviderAttemptLauncher::queued_attempts(const std::string& provider) const {
  auto it = slots_.find(provider);
  return it == slots_.end() ? 0 : it->second.waiting.size();
}

void ProviderAttemptLauncher::abort(AttemptHandle handle) {
  auto it = attempts_.find(handle);
  if (it == attempts_.end()) return;
  it->second->stop();
  // Inside one of its own callbacks the attempt is released when that callback unwinds.
  if (!it->second->busy()) attempts_.erase(it);
}

void ProviderAttemptLauncher::release(AttemptHandle handle) {
  attempts_.erase(handle);
}

}  // namespace dispatch::worker
