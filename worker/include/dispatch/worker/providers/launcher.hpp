#pragma once

// Joins the adapters to the HTTP engine: one AttemptLauncher::start() builds the provider's
// request, runs the transfer, decodes the answer as it arrives and reports in unified terms.
// Single-threaded like the engine: call everything on the loop thread.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>

#include "dispatch/worker/attempt.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/http_engine.hpp"
#include "dispatch/worker/scheduler.hpp"

namespace dispatch::worker {

// Semantics beyond AttemptLauncher's contract:
// - The provider comes from spec.provider, else from config by spec.target.provider; a name
//   this worker does not serve (or a type with no adapter) fails with unsupported_provider.
// - Deltas decoded from one network read are merged into one on_delta (content, thinking and
//   tool-call fragments in arrival order per field), after on_activity. A non-streamed answer
//   arrives as one on_delta just before on_complete.
// - A body that ends cleanly at the HTTP level is on_complete with saw_terminator as observed:
//   the policy decides what an unterminated stream means. A whole (non-streamed) body that
//   decoded is complete by itself and counts as terminated. A transport error is on_failed with
//   the engine's classification (network, timeout); an error event inside a 200 stream is
//   on_failed with the provider's classified error, and the transfer is cancelled.
// - Tool calls are assembled by index: id first-wins, name and arguments concatenated; an
//   empty arguments string becomes "{}". usage.total_tokens = prompt + completion.
// - Events may call start() and abort() re-entrantly.
// - providers.NAME.max_in_flight > 0 bounds the HTTP transfers to that provider (by name) that
//   this launcher runs at once. A further attempt is built at once (a request that cannot be
//   built still fails at once) and then waits, FIFO per provider, until a transfer of that
//   provider ends; it sends nothing and reports nothing while it waits. abort() takes a waiting
//   attempt out of the queue (no event follows, as ever); the destructor drops waiting ones
//   without events. The wait is part of the attempt as the policy sees it: its first-token
//   timer and the job's deadline run from start(), so an attempt that waits past
//   first_token_timeout_ms is aborted by the policy (which then fails over) while still queued.
class ProviderAttemptLauncher final : public AttemptLauncher {
 public:
  ProviderAttemptLauncher(HttpEngine& engine, Scheduler& scheduler, const WorkerConfig& config);
  ~ProviderAttemptLauncher() override;  // aborts what is still running, without events
  ProviderAttemptLauncher(const ProviderAttemptLauncher&) = delete;
  ProviderAttemptLauncher& operator=(const ProviderAttemptLauncher&) = delete;

  AttemptHandle start(const AttemptSpec& spec, AttemptListener& listener) override;
  void abort(AttemptHandle handle) override;

  // Attempts not yet ended, the queued ones included.
  std::size_t active_attempts() const { return attempts_.size(); }
  // Transfers running to / attempts waiting for the provider of that name.
  std::size_t running_transfers(const std::string& provider) const;
  std::size_t queued_attempts(const std::string& provider) const;

  class Attempt;  // one attempt, queued or running (launcher.cpp)

 private:
  friend class Attempt;
  struct ProviderSlots {
    std::size_t running = 0;            // transfers in the engine
    std::deque<AttemptHandle> waiting;  // for a slot, oldest first
  };

  void release(AttemptHandle handle);
  void launch(Attempt& attempt);
  void release_slot(const std::string& provider);
  void dequeue(const std::string& provider, AttemptHandle handle);

  HttpEngine& engine_;
  Scheduler& scheduler_;
  const WorkerConfig& config_;
  AttemptHandle next_handle_ = 1;
  std::unordered_map<AttemptHandle, std::unique_ptr<Attempt>> attempts_;
  std::unordered_map<std::string, ProviderSlots> slots_;  // by provider name
  bool closing_ = false;                                  // destructor: a freed slot starts nothing
};

}  // namespace dispatch::worker
