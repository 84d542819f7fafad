#include "dispatch/gateway/readiness.hpp"

#include <algorithm>

namespace dispatch::gateway {

Readiness judge_readiness(const std::optional<protocol::StatusReply>& status,
                          std::chrono::milliseconds timeout) {
  Readiness out;
  if (!status) {
    out.reason = "the broker did not answer within " + std::to_string(timeout.count()) + " ms";
    return out;
  }
  out.workers = static_cast<std::size_t>(std::count_if(
      status->workers.begin(), status->workers.end(),
      [](const protocol::WorkerStatus& worker) { return worker.state != "draining"; }));
  if (out.workers == 0) {
    out.reason = status->workers.empty() ? "no worker is registered at the broker"
                                         : "every registered worker is draining";
    return out;
  }
  out.ready = true;
  return out;
}

ReadinessProbe::ReadinessProbe(Fetch fetch, std::chrono::milliseconds fetch_timeout,
                               const Clock& clock, std::chrono::milliseconds ttl)
    : fetch_(std::move(fetch)),
      fetch_timeout_(fetch_timeout),
      clock_(clock),
      ttl_(ttl),
      thread_([this] { run(); }) {}

ReadinessProbe::~ReadinessProbe() {
  shutdown();
}

void ReadinessProbe::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wanted_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void ReadinessProbe::check(Done done) {
  fetch_status(
      [done = std::move(done), timeout = fetch_timeout_](const Answer& answer, bool stopping) {
        if (stopping) return done(Readiness{false, "the gateway is stopping", 0});
        done(judge_readiness(*answer, timeout));
      });
}

void ReadinessProbe::fetch_status(StatusDone done) {
  Answer fresh;
  bool stopping = false;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      stopping = true;
    } else if (cached_ && clock_.now() - cached_at_ < ttl_) {
      fresh = cached_;
    } else {
      waiting_.push_back(std::move(done));
    }
  }
  if (stopping || fresh) {
    done(fresh, stopping);
  } else {
    wanted_.notify_one();
  }
}

uint64_t ReadinessProbe::fetches() const {
  std::lock_guard lock(mutex_);
  return fetches_;
}

void ReadinessProbe::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wanted_.wait(lock, [this] { return stopping_ || !waiting_.empty(); });
    if (stopping_) break;
    ++fetches_;
    lock.unlock();
    const Answer answer = std::make_shared<const std::optional<protocol::StatusReply>>(fetch_());
    lock.lock();
    cached_ = answer;
    cached_at_ = clock_.now();
    std::vector<StatusDone> callers;
    callers.swap(waiting_);
    lock.unlock();
    for (auto& done : callers) done(answer, false);
    lock.lock();
  }
  // Shutting down: nobody is left waiting for an answer that will not come.
  std::vector<StatusDone> callers;
  callers.swap(waiting_);
  lock.unlock();
  for (auto& done : callers) done(nullptr, true);
}

}  // namespace dispatch::gateway
