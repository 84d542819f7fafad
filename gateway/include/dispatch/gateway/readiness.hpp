#pragma once

// GET /readyz: ready when the broker answered a status request within its timeout and at
// least one worker is registered. GET /status.json (and the status page polling it) serves the
// same broker answer. The answer is cached for `ttl`, and callers who ask while a status request
// is out share it, so probes and open status pages cannot flood the broker however often they
// come.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::gateway {

struct Readiness {
  bool ready = false;
  std::string reason;       // why not, for the 503 body
  std::size_t workers = 0;  // registered and not draining
};

// The verdict on one status answer (nullopt: the broker did not answer in time).
Readiness judge_readiness(const std::optional<protocol::StatusReply>& status,
                          std::chrono::milliseconds timeout);

class ReadinessProbe {
 public:
  using Fetch = std::function<std::optional<protocol::StatusReply>()>;  // blocks ≤ its timeout
  using Done = std::function<void(const Readiness&)>;
  // The broker's answer: nullopt when it did not answer within the fetch timeout.
  using Answer = std::shared_ptr<const std::optional<protocol::StatusReply>>;
  // `stopping`: the gateway is shutting down and no answer will come (`answer` is then null).
  using StatusDone = std::function<void(const Answer& answer, bool stopping)>;

  ReadinessProbe(Fetch fetch, std::chrono::milliseconds fetch_timeout, const Clock& clock,
                 std::chrono::milliseconds ttl = std::chrono::milliseconds(1000));
  ~ReadinessProbe();
  ReadinessProbe(const ReadinessProbe&) = delete;
  ReadinessProbe& operator=(const ReadinessProbe&) = delete;

  // `done` runs at once (on this thread) with a fresh cached answer, else on the probe's
  // thread after the one status request that every waiting caller shares.
  void check(Done done);
  // The same, with the broker's answer itself (for GET /status.json).
  void fetch_status(StatusDone done);
  uint64_t fetches() const;
  // Stops the thread; callers still waiting get a not-ready answer. Idempotent.
  void shutdown();

 private:
  void run();

  Fetch fetch_;
  std::chrono::milliseconds fetch_timeout_;
  const Clock& clock_;
  std::chrono::milliseconds ttl_;
  mutable std::mutex mutex_;
  std::condition_variable wanted_;
  std::vector<StatusDone> waiting_;
  Answer cached_;
  Clock::time_point cached_at_{};
  uint64_t fetches_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after everything it uses exists
};

}  // namespace dispatch::gateway
