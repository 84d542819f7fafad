#include "dispatch/broker/core.hpp"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <span>
#include <utility>

namespace dispatch::broker {

namespace {

using protocol::Command;
using protocol::ErrorKind;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// Provider names are routing keys chosen by clients: bounded so a hostile client cannot make
// the broker keep arbitrarily large keys.
constexpr std::size_t kMaxProviderName = 128;
constexpr std::size_t kMaxWorkerProviders = 1'000;
// Distinct provider names with their own status counters; the rest are summed under
// kOtherProviders so random names cannot grow the status reply without bound.
constexpr std::size_t kMaxCountedProviders = 1'024;
constexpr std::string_view kOtherProviders = "(other)";
// A Ready's strings are informational; cap what we keep.
constexpr std::size_t kMaxInfoString = 256;

uint64_t ms_between(Clock::time_point from, Clock::time_point to) {
  if (to <= from) return 0;
  return static_cast<uint64_t>(duration_cast<milliseconds>(to - from).count());
}

std::string clip(std::string_view s, std::size_t max) {
  return std::string(s.substr(0, std::min(s.size(), max)));
}

// Attempts beyond the first on a target already tried = retries; an answer (or final failure)
// from a target other than the first = a fallback happened.
void count_attempts(protocol::ProviderCounters& counters,
                    const std::vector<protocol::Attempt>& attempts, std::string_view final_provider,
                    std::string_view final_model) {
  if (attempts.empty()) return;
  // Attempts lists are short (retry_count x targets); quadratic is cheaper than hashing here.
  constexpr std::size_t kMaxCounted = 256;
  const std::size_t n = std::min(attempts.size(), kMaxCounted);
  for (std::size_t i = 1; i < n; ++i) {
    for (std::size_t k = 0; k < i; ++k) {
      if (attempts[k].provider == attempts[i].provider && attempts[k].model == attempts[i].model) {
        ++counters.retried;
        break;
      }
    }
  }
  std::string_view provider = final_provider;
  std::string_view model = final_model;
  if (provider.empty()) {
    provider = attempts.back().provider;
    model = attempts.back().model;
  }
  if (provider != attempts.front().provider || model != attempts.front().model) {
    ++counters.fell_over;
  }
}

}  // namespace

std::string route_hex(std::string_view route) {
  static constexpr char kDigits[] = "0123456789abcdef";
  constexpr std::size_t kMaxBytes = 16;
  std::string out;
  const std::size_t n = std::min(route.size(), kMaxBytes);
  out.reserve(n * 2 + 2);
  for (std::size_t i = 0; i < n; ++i) {
    const auto byte = static_cast<unsigned char>(route[i]);
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0xf]);
  }
  if (route.size() > kMaxBytes) out += "..";
  return out;
}

BrokerCore::BrokerCore(BrokerConfig config, std::string broker_id, const Clock& clock,
                       Transport& transport)
    : config_(std::move(config)),
      broker_id_(std::move(broker_id)),
      clock_(clock),
      transport_(transport),
      started_(clock.now()),
      next_tick_(started_ +
                 std::max<Clock::duration>(config_.heartbeat_interval / 2, milliseconds(1))),
      frontend_replies_(config_.hostile_replies_per_second, config_.hostile_replies_per_second),
      backend_replies_(config_.hostile_replies_per_second, config_.hostile_replies_per_second),
      hostile_log_(config_.log_lines_per_second, config_.log_lines_per_second * 2),
      zombie_log_(config_.log_lines_per_second, config_.log_lines_per_second * 2),
      worker_log_(config_.log_lines_per_second * 4, config_.log_lines_per_second * 20) {
  if (config_.heartbeat_interval <= milliseconds(0)) config_.heartbeat_interval = milliseconds(1);
  if (config_.liveness == 0) config_.liveness = 1;
}

BrokerCore::~BrokerCore() = default;

const detail::Job* BrokerCore::find_job(std::string_view job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const detail::Worker* BrokerCore::find_worker(std::string_view route) const {
  auto it = workers_.find(route);
  return it == workers_.end() ? nullptr : it->second.get();
}

// ---------------------------------------------------------------------------------------------
// Input

std::optional<protocol::FrameView> BrokerCore::parse(Side side, std::string_view route,
                                                     const Frames& frames) {
  // One more than any command has, so that an overlong message is reported as such without
  // looking at (or allocating for) the rest.
  constexpr std::size_t kMaxViews = 5;
  std::array<std::string_view, kMaxViews> views;
  const std::size_t n = std::min(frames.size(), kMaxViews);
  for (std::size_t i = 0; i < n; ++i) views[i] = view(frames[i]);
  auto parsed = protocol::parse_frames(std::span<const std::string_view>(views.data(), n));
  if (!parsed) {
    hostile(side, route, parsed.error());
    return std::nullopt;
  }
  return parsed.value();
}

void BrokerCore::on_frontend(std::string_view route, Frames frames) {
  auto parsed = parse(Side::frontend, route, frames);
  if (parsed) {
    const protocol::FrameView& message = *parsed;
    switch (message.command) {
      case Command::submit:
        on_submit(route, message, frames);
        break;
      case Command::cancel:
        on_cancel(route, message);
        break;
      case Command::heartbeat: {
        auto heartbeat = protocol::decode<protocol::Heartbeat>(message.header);
        if (!heartbeat) {
          hostile(Side::frontend, route, heartbeat.error());
          break;
        }
        send_client(route, Command::heartbeat,
                    protocol::encode(protocol::Heartbeat{broker_id_, 0}));
        break;
      }
      case Command::status:
        if (auto error = protocol::validate_msgpack(message.header)) {
          hostile(Side::frontend, route, *error);
          break;
        }
        send_client(route, Command::status, protocol::encode(status()));
        break;
      default:
        unexpected(Side::frontend, route, message.command);
        break;
    }
  }
  process_lost_workers();
}

void BrokerCore::on_backend(std::string_view route, Frames frames) {
  auto found = workers_.find(route);
  Worker* worker = found == workers_.end() ? nullptr : found->second.get();
  // Any message is a sign of life, even one we cannot use: the process is there.
  if (worker != nullptr) worker->last_heard = clock_.now();

  auto parsed = parse(Side::backend, route, frames);
  if (parsed) {
    const protocol::FrameView& message = *parsed;
    if (message.command == Command::ready) {
      on_ready(route, message);
    } else if (worker == nullptr) {
      // After a broker restart every worker is unknown: tell it to start over with `ready`.
      // A disconnect is not answered (two peers must not echo disconnects forever).
      if (message.command != Command::disconnect && message.command != Command::rejected &&
          backend_replies_.allow(clock_.now())) {
        if (worker_log_.allow(clock_.now())) {
          spdlog::info("backend: {} from unknown worker {}: sent disconnect",
                       protocol::to_string(message.command), route_hex(route));
        }
        transport_.send_to_worker(
            route, make_frames(Command::disconnect,
                               protocol::encode(protocol::Disconnect{
                                   "unknown worker (broker " + broker_id_ + "): send ready"})));
      }
    } else {
      switch (message.command) {
        case Command::credit:
          on_credit(*worker, message);
          break;
        case Command::heartbeat: {
          auto heartbeat = protocol::decode<protocol::Heartbeat>(message.header);
          if (!heartbeat) hostile(Side::backend, route, heartbeat.error());
          break;
        }
        case Command::disconnect: {
          auto disconnect = protocol::decode<protocol::Disconnect>(message.header);
          std::string reason = "worker disconnected";
          if (disconnect && !disconnect.value().reason.empty()) {
            reason += ": " + clip(disconnect.value().reason, kMaxInfoString);
          }
          lose_worker(route, reason);
          break;
        }
        case Command::chunk:
        case Command::reset:
          on_stream_event(*worker, message, std::move(frames));
          break;
        case Command::result:
        case Command::error:
          on_job_end(*worker, message, std::move(frames));
          break;
        default:
          unexpected(Side::backend, route, message.command);
          break;
      }
    }
  }
  process_lost_workers();
}

void BrokerCore::on_submit(std::string_view route, const protocol::FrameView& message,
                           Frames& frames) {
  auto decoded = protocol::decode<protocol::Submit>(message.header);
  if (!decoded) {
    hostile(Side::frontend, route, decoded.error(), protocol::extract_job_id(message.header));
    return;
  }
  protocol::Submit& submit = decoded.value();
  if (submit.provider.empty() || submit.provider.size() > kMaxProviderName) {
    hostile(Side::frontend, route,
            protocol::DecodeError{
                protocol::DecodeError::Code::invalid_value,
                "provider: must be 1.." + std::to_string(kMaxProviderName) + " bytes"},
            submit.job_id);
    return;
  }
  if (static_cast<std::size_t>(submit.priority) >= protocol::kPriorityLevels) {
    hostile(
        Side::frontend, route,
        protocol::DecodeError{protocol::DecodeError::Code::invalid_value, "priority: out of range"},
        submit.job_id);
    return;
  }
  if (auto error = protocol::validate_msgpack(message.payload)) {
    error->message = "payload: " + error->message;
    hostile(Side::frontend, route, *error, submit.job_id);
    return;
  }

  if (auto it = jobs_.find(submit.job_id); it != jobs_.end()) {
    // A resubmit: same job. Answers go to whoever asked last (a reconnected client).
    Job& job = *it->second;
    ++counters_.duplicates;
    if (job.client_route != route) job.client_route = std::string(route);
    send_client(route, Command::accepted,
                protocol::encode(protocol::Accepted{job.id, broker_id_, true}));
    if (job.state == detail::JobState::finished && !job.final_frames.empty()) {
      const std::string_view command = view(job.final_frames[1]);
      transport_.send_to_client(
          route, command == protocol::to_string(Command::result) ? Command::result : Command::error,
          share_frames(job.final_frames));
    }
    return;
  }

  if (draining_) {
    ++counters_.rejected_draining;
    send_client(
        route, Command::rejected,
        protocol::encode(protocol::Rejected{submit.job_id, ErrorKind::queue_full, "draining",
                                            "broker is shutting down; resubmit later"}));
    return;
  }
  if (queued_total_ >= config_.queue_limit) {
    // The bound is on waiting jobs: one a free worker takes at once does not wait.
    auto ps = providers_.find(submit.provider);
    const bool dispatches_now =
        ps != providers_.end() && ps->second->queue.empty() && !ps->second->available.empty();
    if (!dispatches_now) {
      ++counters_.rejected_queue_full;
      send_client(
          route, Command::rejected,
          protocol::encode(protocol::Rejected{
              submit.job_id, ErrorKind::queue_full, "queue_full",
              "broker queue is full (" + std::to_string(config_.queue_limit) + " jobs waiting)"}));
      return;
    }
  }

  auto owned = std::make_unique<Job>();
  Job& job = *owned;
  job.id = std::move(submit.job_id);
  job.client_route = std::string(route);
  job.provider = std::move(submit.provider);
  job.priority = submit.priority;
  job.stream = submit.stream;
  job.queue_timeout =
      submit.queue_timeout_ms == 0 ? config_.queue_timeout : milliseconds(submit.queue_timeout_ms);
  job.request = keep_frame(frames[3]);
  jobs_.emplace(job.id, std::move(owned));
  ++counters_.jobs_accepted;
  ++provider_counters(job.provider).submitted;

  // Accepted goes out before the job can be dispatched, so the client always sees it first.
  send_client(route, Command::accepted,
              protocol::encode(protocol::Accepted{job.id, broker_id_, false}));
  enqueue(job, false);
  dispatch_provider(*job.queued_provider);
}

void BrokerCore::on_cancel(std::string_view route, const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::Cancel>(message.header);
  if (!decoded) {
    hostile(Side::frontend, route, decoded.error(), protocol::extract_job_id(message.header));
    return;
  }
  auto it = jobs_.find(decoded.value().job_id);
  if (it == jobs_.end() || it->second->state == detail::JobState::finished) {
    spdlog::debug("cancel of unknown or finished job {} ignored", decoded.value().job_id);
    return;
  }
  Job& job = *it->second;
  if (job.state == detail::JobState::queued) {
    ProviderState* ps = job.queued_provider;
    fail_job(job, ErrorKind::cancelled, "cancelled", "cancelled by the client before it started");
    if (ps != nullptr) maybe_forget_provider(*ps);
    return;
  }
  if (!job.cancel_requested && job.worker != nullptr) {
    // The worker aborts and answers `error` kind cancelled, which is relayed like any error.
    job.cancel_requested = true;
    send_worker(*job.worker,
                make_frames(Command::cancel, protocol::encode(protocol::Cancel{job.id})));
  }
}

void BrokerCore::on_ready(std::string_view route, const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::Ready>(message.header);
  if (!decoded) {
    hostile(Side::backend, route, decoded.error());
    return;
  }
  protocol::Ready& ready = decoded.value();
  // A ready from a registered worker means it (re)started its session. The deliveries it lists
  // in `jobs` are still running there (a worker that reconnected because it thought us dead,
  // e.g. while one of us was starved of CPU): they stay with it, on the new connection, with
  // the same delivery number. Whatever else we think it runs may be gone, so those jobs are
  // redelivered (late answers from the old delivery are dropped by delivery number).
  detail::StringMap<uint32_t> held;
  held.reserve(ready.jobs.size());
  for (const protocol::HeldJob& job : ready.jobs) held.emplace(job.job_id, job.delivery);
  std::vector<Job*> kept;
  const auto keep_held = [&](Worker& previous) {
    if (held.empty() || previous.worker_id != clip(ready.worker_id, kMaxInfoString)) return;
    for (Job* job = previous.in_flight.front(); job != nullptr;) {
      Job* next = job->next;
      auto it = held.find(job->id);
      if (it != held.end() && it->second == job->delivery) {
        previous.in_flight.erase(*job);
        job->worker = nullptr;
        kept.push_back(job);
      }
      job = next;
    }
  };
  if (auto same = workers_.find(route); same != workers_.end()) {
    keep_held(*same->second);
    lose_worker(route, "sent ready again");
  }
  if (!ready.worker_id.empty()) {
    auto previous = worker_routes_.find(ready.worker_id);
    if (previous != worker_routes_.end() && previous->second != route) {
      const std::string old_route = previous->second;
      if (auto old = workers_.find(old_route); old != workers_.end()) keep_held(*old->second);
      lose_worker(old_route, "reconnected on a new connection");
    }
  }
  Worker& worker = register_worker(route, std::move(ready));
  for (Job* job : kept) {
    job->worker = &worker;
    worker.in_flight.push_back(*job);
    // A cancel sent on the old connection may have been lost with it.
    if (job->cancel_requested) {
      send_worker(worker,
                  make_frames(Command::cancel, protocol::encode(protocol::Cancel{job->id})));
    }
  }
  if (!kept.empty()) {
    counters_.jobs_kept += kept.size();
    spdlog::info("worker {} still runs {} job(s): kept on its new connection", worker.worker_id,
                 kept.size());
  }
  update_availability(worker);
  // A welcome: a worker that reconnected because it heard nothing from us learns at once that
  // we are alive, instead of a heartbeat interval later (when it may be about to give up again).
  send_worker(worker,
              make_frames(Command::heartbeat,
                          protocol::encode(protocol::Heartbeat{
                              broker_id_, static_cast<uint32_t>(worker.in_flight.size())})));
  // Deliveries it holds that are no longer its own (redelivered elsewhere after we lost it, or
  // finished) only cost provider calls: stop them. A queued job is left alone - it may come back
  // to this worker, which then replaces the old run by the new delivery.
  for (const auto& [job_id, delivery] : held) {
    if (worker.lost || worker.detached) break;
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) continue;
    const Job& job = *it->second;
    if (job.state == detail::JobState::queued) continue;
    if (job.state == detail::JobState::running && job.worker == &worker) continue;
    send_worker(worker, make_frames(Command::cancel, protocol::encode(protocol::Cancel{job_id})));
  }
  dispatch_worker(worker);
}

void BrokerCore::on_credit(Worker& worker, const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::Credit>(message.header);
  if (!decoded) {
    hostile(Side::backend, worker.route, decoded.error());
    return;
  }
  const uint32_t capacity = decoded.value().capacity;
  if ((capacity == 0) != (worker.capacity == 0)) {
    spdlog::info("worker {} is now {} (capacity {})", worker.worker_id,
                 capacity == 0 ? "draining" : "ready", capacity);
  }
  worker.capacity = capacity;
  update_availability(worker);
  dispatch_worker(worker);
}

void BrokerCore::on_stream_event(Worker& worker, const protocol::FrameView& message,
                                 Frames frames) {
  std::string job_id;
  uint32_t delivery = 0;
  if (message.command == Command::chunk) {
    auto decoded = protocol::decode<protocol::ChunkHeader>(message.header);
    if (!decoded) {
      hostile(Side::backend, worker.route, decoded.error());
      return;
    }
    job_id = std::move(decoded.value().chunk.job_id);
    delivery = decoded.value().delivery;
  } else {
    auto decoded = protocol::decode<protocol::ResetHeader>(message.header);
    if (!decoded) {
      hostile(Side::backend, worker.route, decoded.error());
      return;
    }
    job_id = std::move(decoded.value().reset.job_id);
    delivery = decoded.value().delivery;
  }
  auto it = jobs_.find(job_id);
  Job* job = it == jobs_.end() ? nullptr : it->second.get();
  if (job == nullptr || job->worker != &worker || job->delivery != delivery) {
    ++counters_.zombie_messages;
    if (zombie_log_.allow(clock_.now())) {
      spdlog::warn(
          "dropped {} of job {} delivery {} from worker {}: not its current delivery "
          "({} similar suppressed)",
          protocol::to_string(message.command), job_id, delivery, worker.worker_id,
          zombie_log_.take_suppressed());
    }
    return;
  }
  // A reset voids what the client has seen; only chunks after it would need another reset.
  job->client_saw_chunks = message.command == Command::chunk;
  // The worker's frames go out unchanged: only the routing frame differs.
  transport_.send_to_client(job->client_route, message.command, std::move(frames));
}

void BrokerCore::on_job_end(Worker& worker, const protocol::FrameView& message, Frames frames) {
  auto decoded = protocol::decode<protocol::JobEnd>(message.header);
  if (!decoded) {
    hostile(Side::backend, worker.route, decoded.error());
    return;
  }
  const protocol::JobEnd& end = decoded.value();
  auto it = jobs_.find(end.job_id);
  Job* job = it == jobs_.end() ? nullptr : it->second.get();
  if (job == nullptr || job->worker != &worker || job->delivery != end.delivery) {
    ++counters_.zombie_messages;
    if (zombie_log_.allow(clock_.now())) {
      spdlog::warn(
          "dropped {} of job {} delivery {} from worker {}: not its current delivery "
          "({} similar suppressed)",
          protocol::to_string(message.command), end.job_id, end.delivery, worker.worker_id,
          zombie_log_.take_suppressed());
    }
    return;
  }
  bool payload_ok = true;
  record_outcome(*job, message.command, message.payload, payload_ok);
  if (payload_ok) {
    complete_job(*job, message.command, std::move(frames));
  } else {
    // Clients only ever get payloads that decode: a broken one becomes our own error.
    fail_job(*job, ErrorKind::internal, "malformed_result",
             "worker " + worker.worker_id + " sent an undecodable " +
                 std::string(protocol::to_string(message.command)));
  }
  dispatch_worker(worker);
}

// ---------------------------------------------------------------------------------------------
// Queue and dispatch

detail::ProviderState& BrokerCore::provider_state(std::string_view name) {
  auto it = providers_.find(name);
  if (it != providers_.end()) return *it->second;
  auto state = std::make_unique<ProviderState>();
  state->name = std::string(name);
  ProviderState& ref = *state;
  providers_.emplace(ref.name, std::move(state));
  return ref;
}

void BrokerCore::maybe_forget_provider(ProviderState& state) {
  if (state.queue.empty() && state.serving == 0 && state.available.empty()) {
    providers_.erase(providers_.find(state.name));
  }
}

void BrokerCore::enqueue(Job& job, bool urgent) {
  ProviderState& state = provider_state(job.provider);
  job.state = detail::JobState::queued;
  job.enqueue_seq = ++enqueue_seq_;
  job.queued_provider = &state;
  if (urgent) {
    state.queue.push_urgent(job);
  } else {
    state.queue.push(job, job.client_route);
  }
  job.deadline = deadlines_.emplace(clock_.now() + job.queue_timeout, &job);
  job.has_deadline = true;
  ++queued_total_;
  ++queued_by_priority_[static_cast<std::size_t>(job.priority)];
}

void BrokerCore::after_pop(Job& job) {
  if (job.has_deadline) {
    deadlines_.erase(job.deadline);
    job.has_deadline = false;
  }
  job.queued_provider = nullptr;
  --queued_total_;
  --queued_by_priority_[static_cast<std::size_t>(job.priority)];
}

void BrokerCore::dequeue(Job& job) {
  job.queued_provider->queue.erase(job);
  after_pop(job);
}

void BrokerCore::dispatch_provider(ProviderState& state) {
  if (draining_) return;
  while (!state.queue.empty() && !state.available.empty()) {
    Worker& worker = *state.available.begin()->worker;
    Job& job = *state.queue.pop();
    after_pop(job);
    assign(job, worker);
  }
}

void BrokerCore::dispatch_worker(Worker& worker) {
  if (draining_) return;
  // Invariant after every event: a provider with waiting jobs has no available worker. So a
  // slot freed here can only be filled from this worker's providers, and this worker is the
  // least loaded candidate for them; pick the best waiting job among its providers.
  while (worker.available) {
    ProviderState* best = nullptr;
    Job* best_job = nullptr;
    for (ProviderState* state : worker.providers) {
      Job* candidate = state->queue.peek();
      if (candidate == nullptr) continue;
      const bool better = best_job == nullptr || candidate->priority < best_job->priority ||
                          (candidate->priority == best_job->priority &&
                           (candidate->urgent != best_job->urgent
                                ? candidate->urgent
                                : candidate->enqueue_seq < best_job->enqueue_seq));
      if (better) {
        best = state;
        best_job = candidate;
      }
    }
    if (best == nullptr) return;
    Job& job = *best->queue.pop();
    after_pop(job);
    assign(job, worker);
  }
}

void BrokerCore::assign(Job& job, Worker& worker) {
  job.state = detail::JobState::running;
  job.worker = &worker;
  ++job.delivery;
  worker.in_flight.push_back(job);
  ++running_total_;
  worker.idle_seq = ++dispatch_seq_;
  update_availability(worker);

  Frames frames = make_frames(
      Command::job, protocol::encode(protocol::JobHeader{job.id, job.delivery, job.stream}));
  frames.emplace_back();
  frames.back().copy(job.request);  // shared, not copied: kept for a redelivery
  send_worker(worker, std::move(frames));
  if (worker.detached) {
    // It never reached the worker: back to the front of the queue, as if never dispatched.
    worker.in_flight.erase(job);
    --running_total_;
    job.worker = nullptr;
    --job.delivery;
    enqueue(job, true);
    // Another worker may take it; dispatched after the current event, not from inside a
    // dispatch loop.
    redispatch_.push_back(job.provider);
  }
}

void BrokerCore::update_availability(Worker& worker) {
  if (worker.available) {
    for (ProviderState* state : worker.providers) state->available.erase(worker.key);
    worker.available = false;
  }
  if (!worker.lost && !worker.detached && worker.capacity > 0 &&
      worker.in_flight.size() < worker.capacity) {
    worker.key = detail::LoadKey{static_cast<uint32_t>(worker.in_flight.size()), worker.capacity,
                                 worker.idle_seq, &worker};
    for (ProviderState* state : worker.providers) state->available.insert(worker.key);
    worker.available = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Workers

detail::Worker& BrokerCore::register_worker(std::string_view route, protocol::Ready ready) {
  auto owned = std::make_unique<Worker>();
  Worker& worker = *owned;
  worker.route = std::string(route);
  worker.worker_id =
      ready.worker_id.empty() ? "route-" + route_hex(route) : clip(ready.worker_id, kMaxInfoString);
  worker.host = clip(ready.host, kMaxInfoString);
  worker.version = clip(ready.version, kMaxInfoString);
  worker.pid = ready.pid;
  worker.capacity = ready.capacity;
  for (std::string& name : ready.providers) {
    if (name.empty() || name.size() > kMaxProviderName) continue;
    if (worker.provider_names.size() >= kMaxWorkerProviders) break;
    if (std::find(worker.provider_names.begin(), worker.provider_names.end(), name) !=
        worker.provider_names.end()) {
      continue;
    }
    worker.provider_names.push_back(std::move(name));
  }
  for (const std::string& name : worker.provider_names) {
    ProviderState& state = provider_state(name);
    ++state.serving;
    worker.providers.push_back(&state);
  }
  const Clock::time_point now = clock_.now();
  worker.last_heard = now;
  worker.last_sent = now;
  worker.idle_seq = ++dispatch_seq_;
  if (!ready.worker_id.empty()) worker_routes_[ready.worker_id] = worker.route;
  workers_.emplace(worker.route, std::move(owned));
  update_availability(worker);
  spdlog::info("worker {} registered: host {} pid {} capacity {} providers [{}]", worker.worker_id,
               worker.host, worker.pid, worker.capacity, fmt::join(worker.provider_names, ","));
  return worker;
}

void BrokerCore::send_worker(Worker& worker, Frames frames) {
  if (worker.lost || worker.detached) return;
  const SendStatus sent = transport_.send_to_worker(worker.route, std::move(frames));
  if (sent == SendStatus::sent) {
    worker.last_sent = clock_.now();
    return;
  }
  if (sent == SendStatus::unreachable) {
    // Its connection closed. A worker that reconnects because it heard nothing from us (we were
    // the slow one) closes the old connection first and announces its jobs on the new one;
    // redelivering them now would start every one of them twice. check_workers() gives it one
    // liveness window to come back.
    worker.detached = true;
    worker.detached_at = clock_.now();
    update_availability(worker);
    if (worker_log_.allow(clock_.now())) {
      spdlog::info("worker {}: connection closed; {} job(s) wait for it to reconnect",
                   worker.worker_id, worker.in_flight.size());
    }
    return;
  }
  // So far behind that its pipe is full: it cannot run more work. The removal waits for the end
  // of the event so that no caller is left with a dangling worker.
  worker.lost = true;
  update_availability(worker);
  lost_workers_.push_back(worker.route);
}

void BrokerCore::process_lost_workers() {
  // Bounded: each round removes workers or detaches them, and a worker is lost or detached at
  // most once; a job goes back to the queue only when a worker became detached.
  while (!lost_workers_.empty() || !redispatch_.empty()) {
    std::vector<std::string> routes = std::move(lost_workers_);
    lost_workers_.clear();
    for (const std::string& route : routes) {
      lose_worker(route, "its pipe is full");
    }
    std::vector<std::string> providers = std::move(redispatch_);
    redispatch_.clear();
    for (const std::string& name : providers) {
      if (auto it = providers_.find(name); it != providers_.end()) dispatch_provider(*it->second);
    }
  }
}

void BrokerCore::lose_worker(std::string_view route, std::string_view reason) {
  auto it = workers_.find(route);
  if (it == workers_.end()) return;
  std::unique_ptr<Worker> owned = std::move(it->second);
  workers_.erase(it);
  Worker& worker = *owned;
  ++counters_.workers_lost;
  spdlog::info("worker {} lost ({}); {} unfinished jobs", worker.worker_id, reason,
               worker.in_flight.size());

  if (worker.available) {
    for (ProviderState* state : worker.providers) state->available.erase(worker.key);
    worker.available = false;
  }
  if (auto id = worker_routes_.find(worker.worker_id);
      id != worker_routes_.end() && id->second == worker.route) {
    worker_routes_.erase(id);
  }
  for (ProviderState* state : worker.providers) --state->serving;

  std::vector<ProviderState*> touched;
  while (Job* job = worker.in_flight.pop_front()) {
    --running_total_;
    job->worker = nullptr;
    if (job->cancel_requested) {
      fail_job(*job, ErrorKind::cancelled, "cancelled",
               "cancelled by the client; its worker was lost before it confirmed");
      continue;
    }
    if (job->delivery > config_.redelivery_limit) {
      fail_job(*job, ErrorKind::internal, "redelivery_limit",
               "the job lost its worker " + std::to_string(job->delivery) +
                   " times (redelivery limit " + std::to_string(config_.redelivery_limit) + ")");
      continue;
    }
    if (draining_) {
      reject_job(*job, "draining", "broker is shutting down and the job lost its worker");
      continue;
    }
    if (job->client_saw_chunks) {
      // The client has part of an answer that the next delivery will not continue.
      transport_.send_to_client(
          job->client_route, Command::reset,
          make_frames(Command::reset,
                      protocol::encode(protocol::StreamReset{
                          job->id, 0, "worker " + worker.worker_id + " lost; redelivering"})));
      job->client_saw_chunks = false;
    }
    ++counters_.redeliveries;
    spdlog::debug("job {} re-queued after delivery {}", job->id, job->delivery);
    enqueue(*job, true);
    touched.push_back(job->queued_provider);
  }
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (ProviderState* state : touched) dispatch_provider(*state);
  for (ProviderState* state : worker.providers) maybe_forget_provider(*state);
}

// Twice per interval, so that a worker hears from us at least every 1.5 intervals (one check per
// interval lets the gap reach 2, half of a liveness window of 4).
Clock::duration BrokerCore::tick_period() const {
  return std::max<Clock::duration>(config_.heartbeat_interval / 2, milliseconds(1));
}

void BrokerCore::check_workers(Clock::time_point now, bool stalled) {
  const auto dead_after = config_.heartbeat_interval * config_.liveness;
  std::vector<std::pair<std::string, uint64_t>> dead;  // route, silent ms
  bool deferred = false;
  std::optional<bool> input_pending;  // asked at most once per check
  for (auto& [route, worker] : workers_) {
    if (worker->detached) {
      // Its silence is expected (no connection); what counts is whether it comes back.
      if (now - worker->detached_at > dead_after) {
        dead.emplace_back(route, ms_between(worker->last_heard, now));
      }
      continue;
    }
    const auto silent = now - worker->last_heard;
    if (silent > dead_after) {
      // Silence we could not have observed is no evidence. After our own loop stalled (SIGSTOP,
      // CPU starvation), the workers' messages of that time are still in the socket: look once
      // more on the next check. And while messages from workers wait unread, the proof of life
      // may be among them - up to twice the window, so that a broker that never catches up
      // still notices a dead worker.
      bool defer = stalled && !stall_grace_used_;
      if (!defer && silent <= 2 * dead_after) {
        if (!input_pending) input_pending = transport_.worker_input_pending();
        defer = *input_pending;
      }
      if (!defer) {
        dead.emplace_back(route, ms_between(worker->last_heard, now));
        continue;
      }
      deferred = true;  // and it still gets its heartbeat: it may be waiting to hear from us
    }
    if (now - worker->last_sent >= config_.heartbeat_interval) {
      send_worker(*worker,
                  make_frames(Command::heartbeat,
                              protocol::encode(protocol::Heartbeat{
                                  broker_id_, static_cast<uint32_t>(worker->in_flight.size())})));
    }
  }
  if (deferred) {
    ++counters_.liveness_deferred;
    if (worker_log_.allow(now)) {
      spdlog::info("liveness check put off: {}",
                   stalled ? "the broker loop itself stalled" : "worker messages wait unread");
    }
  }
  stall_grace_used_ = stalled && deferred && !stall_grace_used_;
  for (const auto& [route, silent_ms] : dead) {
    const auto it = workers_.find(route);
    if (it == workers_.end()) continue;
    lose_worker(route, it->second->detached ? "its connection closed and it did not come back"
                                            : "silent for " + std::to_string(silent_ms) + " ms");
  }
}

// ---------------------------------------------------------------------------------------------
// Job endings

void BrokerCore::complete_job(Job& job, Command command, Frames frames) {
  if (job.state == detail::JobState::queued && job.queued_provider != nullptr) dequeue(job);
  if (Worker* worker = job.worker) {
    worker->in_flight.erase(job);
    --running_total_;
    job.worker = nullptr;
    update_availability(*worker);
  }
  job.state = detail::JobState::finished;
  job.request = zmq::message_t();
  job.cancel_requested = false;
  job.finished_at = clock_.now();
  if (config_.result_keep > 0) job.final_frames = keep_frames(frames);
  finished_.push_back(job);
  transport_.send_to_client(job.client_route, command, std::move(frames));
  // `job` may be evicted right here (result_keep reached): callers must not touch it after.
  while (finished_.size() > config_.result_keep) evict_finished(*finished_.front());
}

void BrokerCore::fail_job(Job& job, ErrorKind kind, std::string_view code, std::string message) {
  protocol::Error error;
  error.kind = kind;
  error.message = std::move(message);
  error.code = std::string(code);
  error.provider = job.provider;
  ++provider_counters(job.provider).failed;
  spdlog::debug("job {} ends: {} ({})", job.id, protocol::to_string(kind), error.message);
  Frames frames =
      make_frames(Command::error, protocol::encode(protocol::JobEnd{job.id, job.delivery}),
                  protocol::encode(error));
  complete_job(job, Command::error, std::move(frames));
}

void BrokerCore::reject_job(Job& job, std::string_view code, std::string message) {
  if (job.state == detail::JobState::queued && job.queued_provider != nullptr) dequeue(job);
  if (Worker* worker = job.worker) {
    worker->in_flight.erase(job);
    --running_total_;
    job.worker = nullptr;
    update_availability(*worker);
  }
  ++counters_.rejected_draining;
  send_client(job.client_route, Command::rejected,
              protocol::encode(protocol::Rejected{job.id, ErrorKind::queue_full, std::string(code),
                                                  std::move(message)}));
  // Forgotten, not finished: a resubmit (to a restarted broker) runs it.
  jobs_.erase(jobs_.find(job.id));
}

void BrokerCore::evict_finished(Job& job) {
  finished_.erase(job);
  jobs_.erase(jobs_.find(job.id));
}

void BrokerCore::record_outcome(Job& job, Command command, std::string_view payload,
                                bool& payload_ok) {
  if (command == Command::result) {
    auto response = protocol::decode<protocol::Response>(payload);
    if (!response) {
      payload_ok = false;
      ++counters_.malformed_results;
      if (hostile_log_.allow(clock_.now())) {
        spdlog::warn("job {}: undecodable result payload: {}", job.id, response.error().message);
      }
      return;
    }
    const protocol::Response& r = response.value();
    protocol::ProviderCounters& counters = provider_counters(job.provider);
    ++counters.succeeded;
    count_attempts(counters, r.attempts, r.provider, r.model);
    // Tokens are spent where the answer came from, which after a fallback is another provider.
    protocol::ProviderCounters& spent =
        provider_counters(r.provider.empty() ? job.provider : r.provider);
    spent.prompt_tokens += r.usage.prompt_tokens;
    spent.completion_tokens += r.usage.completion_tokens;
    return;
  }
  auto error = protocol::decode<protocol::Error>(payload);
  if (!error) {
    payload_ok = false;
    ++counters_.malformed_results;
    if (hostile_log_.allow(clock_.now())) {
      spdlog::warn("job {}: undecodable error payload: {}", job.id, error.error().message);
    }
    return;
  }
  protocol::ProviderCounters& counters = provider_counters(job.provider);
  ++counters.failed;
  count_attempts(counters, error.value().attempts, error.value().provider, error.value().model);
}

protocol::ProviderCounters& BrokerCore::provider_counters(std::string_view provider) {
  auto it = provider_counters_.find(provider);
  if (it != provider_counters_.end()) return it->second;
  if (provider_counters_.size() >= kMaxCountedProviders) {
    return provider_counters_[std::string(kOtherProviders)];
  }
  return provider_counters_[std::string(provider)];
}

// ---------------------------------------------------------------------------------------------
// Time

void BrokerCore::on_timer() {
  const Clock::time_point now = clock_.now();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Job& job = *deadlines_.begin()->second;
    ProviderState& state = *job.queued_provider;
    const std::string waited = std::to_string(job.queue_timeout.count());
    if (state.serving > 0) {
      fail_job(job, ErrorKind::timeout, "queue_deadline",
               "no worker took the job within its queue deadline (" + waited + " ms)");
    } else {
      fail_job(
          job, ErrorKind::unsupported_provider, "queue_deadline",
          "no connected worker serves provider '" + state.name + "' (waited " + waited + " ms)");
    }
    maybe_forget_provider(state);
  }
  while (!finished_.empty() && finished_.front()->finished_at + config_.result_ttl <= now) {
    evict_finished(*finished_.front());
  }
  if (now >= next_tick_) {
    // Late by more than half an interval: the loop did not run (stopped or starved).
    check_workers(now, now - next_tick_ > config_.heartbeat_interval / 2);
    next_tick_ = now + tick_period();
  }
  if (draining_ && !drained_ && (running_total_ == 0 || now >= drain_deadline_)) end_drain();
  process_lost_workers();
}

Clock::time_point BrokerCore::next_timer() const {
  if (draining_ && !drained_ && running_total_ == 0) return clock_.now();
  Clock::time_point next = next_tick_;
  if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
  if (!finished_.empty())
    next = std::min(next, finished_.front()->finished_at + config_.result_ttl);
  if (draining_ && !drained_) next = std::min(next, drain_deadline_);
  return next;
}

// ---------------------------------------------------------------------------------------------
// Drain

void BrokerCore::begin_drain() {
  if (draining_) return;
  draining_ = true;
  drain_deadline_ = clock_.now() + config_.drain_timeout;
  std::size_t rejected = 0;
  for (auto& [name, state] : providers_) {
    while (Job* job = state->queue.pop()) {
      after_pop(*job);
      reject_job(*job, "draining", "broker is shutting down before the job started; resubmit");
      ++rejected;
    }
  }
  spdlog::info("draining: {} waiting jobs rejected, {} running get up to {} ms", rejected,
               running_total_, config_.drain_timeout.count());
}

void BrokerCore::end_drain() {
  if (drained_) return;
  begin_drain();
  drained_ = true;
  std::size_t abandoned = 0;
  for (auto& [route, worker] : workers_) {
    while (Job* job = worker->in_flight.front()) {
      send_worker(*worker,
                  make_frames(Command::cancel, protocol::encode(protocol::Cancel{job->id})));
      reject_job(*job, "draining", "broker shut down before the job finished; resubmit");
      ++abandoned;
    }
    send_worker(*worker,
                make_frames(Command::disconnect,
                            protocol::encode(protocol::Disconnect{"broker shutting down"})));
  }
  spdlog::info("drain finished: {} running jobs abandoned", abandoned);
}

// ---------------------------------------------------------------------------------------------
// Status and replies

protocol::StatusReply BrokerCore::status() const {
  const Clock::time_point now = clock_.now();
  protocol::StatusReply reply;
  reply.broker_id = broker_id_;
  reply.uptime_ms = ms_between(started_, now);
  reply.queue_depth.assign(std::begin(queued_by_priority_), std::end(queued_by_priority_));
  reply.queue_limit = config_.queue_limit;
  reply.in_flight = running_total_;
  reply.finished_kept = finished_.size();
  reply.workers.reserve(workers_.size());
  for (const auto& [route, worker] : workers_) {
    protocol::WorkerStatus w;
    w.worker_id = worker->worker_id;
    w.host = worker->host;
    w.pid = worker->pid;
    w.capacity = worker->capacity;
    w.in_flight = static_cast<uint32_t>(worker->in_flight.size());
    w.providers = worker->provider_names;
    w.last_heartbeat_ms_ago = ms_between(worker->last_heard, now);
    w.state = worker->capacity == 0 ? "draining" : "ready";
    reply.workers.push_back(std::move(w));
  }
  std::sort(reply.workers.begin(), reply.workers.end(),
            [](const auto& a, const auto& b) { return a.worker_id < b.worker_id; });
  for (const auto& [name, counters] : provider_counters_) reply.providers.emplace(name, counters);
  return reply;
}

void BrokerCore::send_client(std::string_view route, Command command, std::string header) {
  transport_.send_to_client(route, command, make_frames(command, header));
}

void BrokerCore::unexpected(Side side, std::string_view route, Command command) {
  const std::string_view name = protocol::to_string(command);
  protocol::DecodeError error{protocol::DecodeError::Code::invalid_value,
                              "command '" + std::string(name) + "' is not accepted from " +
                                  (side == Side::frontend ? "clients" : "workers")};
  // Never answer a rejected with a rejected: two peers could bounce them forever.
  hostile(side, route, error, {}, command == Command::rejected ? "" : "unexpected_command");
}

void BrokerCore::hostile(Side side, std::string_view route, const protocol::DecodeError& error,
                         std::string job_id, std::optional<std::string_view> code) {
  ++counters_.hostile_messages;
  const Clock::time_point now = clock_.now();
  const char* side_name = side == Side::frontend ? "frontend" : "backend";
  if (hostile_log_.allow(now)) {
    spdlog::warn("{}: rejected input from {}: {}: {} ({} similar suppressed)", side_name,
                 route_hex(route), protocol::to_string(error.code), error.message,
                 hostile_log_.take_suppressed());
  }
  if (code && code->empty()) return;  // log only
  RateLimiter& limiter = side == Side::frontend ? frontend_replies_ : backend_replies_;
  if (!limiter.allow(now)) return;
  protocol::Rejected rejected = protocol::make_rejected(error, std::move(job_id));
  if (code) rejected.code = std::string(*code);
  Frames frames = make_frames(Command::rejected, protocol::encode(rejected));
  if (side == Side::frontend) {
    transport_.send_to_client(route, Command::rejected, std::move(frames));
  } else {
    // Not a reason to drop a registered worker: it may just be newer than us.
    transport_.send_to_worker(route, std::move(frames));
  }
}

}  // namespace dispatch::broker
