#include "dispatch/broker/core.hpp"

#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <span>
#include <utility>

#include "dispatch/common/strings.hpp"
#include "dispatch/common/time.hpp"
#include "dispatch/common/trace.hpp"
#include "dispatch/protocol/curve.hpp"
#include "dispatch/protocol/peek.hpp"

namespace dispatch::broker {

namespace {

using protocol::Command;
using protocol::ErrorKind;
using std::chrono::milliseconds;

// Provider names are routing keys chosen by clients: bounded so a hostile client cannot make
// the broker keep arbitrarily large keys.
constexpr std::size_t kMaxProviderName = 128;
// Submit.model and ProviderHealth.model are keys too (quota and health tables).
constexpr std::size_t kMaxModelName = 256;
// Open targets listed in one job header (the worker skips them).
constexpr std::size_t kMaxOpenTargets = 32;
constexpr std::size_t kMaxWorkerProviders = 1'000;
// Distinct provider names with their own status counters; the rest are summed under
// kOtherProviders so random names cannot grow the status reply without bound.
constexpr std::size_t kMaxCountedProviders = 1'024;
constexpr std::string_view kOtherProviders = "(other)";
// A Ready's strings are informational; cap what we keep. A worker id is a key (worker_routes_):
// a longer one is refused, not cut.
constexpr std::size_t kMaxInfoString = 256;
// Distinct provider names remembered as "advertised by a worker". Past it every name counts as
// advertised (the unknown-provider grace no longer applies), so that workers announcing random
// names cannot grow the set without bound.
constexpr std::size_t kMaxAdvertisedProviders = 10'000;
// Owners (identity, tenant) with their own status counters; the rest are summed under
// kOtherClients, so that a gateway naming random tenants cannot grow the status reply.
constexpr std::size_t kMaxCountedOwners = 1'024;
constexpr std::string_view kOtherClients = "(other)";
constexpr Roles kSubmitRoles = static_cast<Roles>(Role::client) | static_cast<Roles>(Role::gateway);
constexpr Roles kFrontendRoles = kSubmitRoles | static_cast<Roles>(Role::admin);

// A peer for log lines: its identity when it has one, else its connection.
std::string peer_text(const Peer& peer) {
  if (!peer.authenticated()) return route_hex(peer.route);
  const std::string fingerprint = protocol::key_fingerprint(peer.key);
  if (peer.name.empty()) return "unlisted key " + fingerprint;
  return std::string(peer.name) + " (key " + fingerprint + ")";
}

bool is_msgpack_map(std::string_view bytes) {
  if (bytes.empty()) return false;
  const auto type = static_cast<unsigned char>(bytes.front());
  return (type >= 0x80 && type <= 0x8f) || type == 0xde || type == 0xdf;
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

// Dispatch order between two waiting jobs: the higher class, then a re-queued one, then the
// older (re)queueing.
bool runs_before(const detail::Job& a, const detail::Job& b) noexcept {
  if (a.priority != b.priority) return a.priority < b.priority;
  if (a.urgent != b.urgent) return a.urgent;
  return a.enqueue_seq < b.enqueue_seq;
}

}  // namespace

std::string route_hex(std::string_view route) {
  constexpr std::size_t kMaxBytes = 16;
  if (route.size() <= kMaxBytes) return to_hex(route);
  return to_hex(route.substr(0, kMaxBytes)) + "..";
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
      quota_(clock),
      health_(clock),
      frontend_replies_(config_.hostile_replies_per_second, config_.hostile_replies_per_second),
      backend_replies_(config_.hostile_replies_per_second, config_.hostile_replies_per_second),
      hostile_log_(config_.log_lines_per_second, config_.log_lines_per_second * 2),
      zombie_log_(config_.log_lines_per_second, config_.log_lines_per_second * 2),
      worker_log_(config_.log_lines_per_second * 4, config_.log_lines_per_second * 20),
      identity_replies_(config_.hostile_replies_per_second, config_.hostile_replies_per_second),
      identity_log_(config_.log_lines_per_second, config_.log_lines_per_second * 2) {
  if (config_.heartbeat_interval <= milliseconds(0)) config_.heartbeat_interval = milliseconds(1);
  if (config_.liveness == 0) config_.liveness = 1;
  quota_.configure(config_.quotas);
}

BrokerCore::~BrokerCore() = default;

void BrokerCore::set_metrics(BrokerMetrics* metrics) {
  metrics_ = metrics;
  sample_metrics();
}

void BrokerCore::sample_metrics() {
  if (metrics_ == nullptr) return;
  uint64_t capacity = 0;
  uint64_t in_flight = 0;
  for (const auto& [route, worker] : workers_) {
    capacity += worker->capacity;
    in_flight += worker->in_flight.size();
  }
  metrics_->sample_workers(workers_.size(), capacity, in_flight);
  if (!gates_active()) return;
  protocol::StatusReply reply;
  add_quota_status(reply);
  metrics_->sample_targets(reply.quotas);
}

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

void BrokerCore::on_frontend(const Peer& peer, Frames frames) {
  if (auto parsed = parse(Side::frontend, peer.route, frames)) {
    if (client_may(peer, *parsed)) on_client_message(peer, *parsed, frames);
  }
  process_lost_workers();
}

void BrokerCore::on_client_message(const Peer& peer, const protocol::FrameView& message,
                                   Frames& frames) {
  switch (message.command) {
    case Command::submit:
      on_submit(peer, message, frames);
      break;
    case Command::cancel:
      on_cancel(peer, message);
      break;
    case Command::heartbeat: {
      auto heartbeat = protocol::decode<protocol::Heartbeat>(message.header);
      if (!heartbeat) {
        hostile(Side::frontend, peer.route, heartbeat.error());
        break;
      }
      send_client(peer.route, Command::heartbeat,
                  protocol::encode(protocol::Heartbeat{broker_id_, 0}));
      break;
    }
    case Command::status:
      on_status(peer, message);
      break;
    default:
      unexpected(Side::frontend, peer.route, message.command);
      break;
  }
}

bool BrokerCore::client_may(const Peer& peer, const protocol::FrameView& message) {
  const bool submits = message.command == Command::submit || message.command == Command::cancel;
  if ((peer.roles & (submits ? kSubmitRoles : kFrontendRoles)) != 0) return true;
  refuse_identity(Side::frontend, peer, message,
                  peer.roles == 0
                      ? "its key is not (or no longer) listed"
                      : "an admin-only identity may ask for status, not submit or "
                        "cancel (it is in neither --allow-clients nor --allow-gateways)");
  return false;
}

void BrokerCore::refuse_identity(Side side, const Peer& peer, const protocol::FrameView& message,
                                 std::string_view why) {
  ++counters_.refused_messages;
  if (metrics_ != nullptr) metrics_->refused();
  const Clock::time_point now = clock_.now();
  const std::string_view command = protocol::to_string(message.command);
  if (identity_log_.allow(now)) {
    spdlog::warn("{}: {} from {} refused: {} ({} similar suppressed)",
                 side == Side::frontend ? "frontend" : "backend", command, peer_text(peer), why,
                 identity_log_.take_suppressed());
  }
  // Two peers must never bounce rejections or disconnects at each other.
  if (message.command == Command::rejected || message.command == Command::disconnect) return;
  if (!identity_replies_.allow(now)) return;
  protocol::Rejected rejected{protocol::extract_job_id(message.header), ErrorKind::authentication,
                              "not_allowed",
                              std::string(command) + " refused: " + std::string(why)};
  Frames frames = make_frames(Command::rejected, protocol::encode(rejected));
  if (side == Side::frontend) {
    transport_.send_to_client(peer.route, Command::rejected, std::move(frames));
  } else {
    transport_.send_to_worker(peer.route, std::move(frames));
  }
}

void BrokerCore::on_status(const Peer& peer, const protocol::FrameView& message) {
  if (auto error = protocol::validate_msgpack(message.header)) {
    hostile(Side::frontend, peer.route, *error);
    return;
  }
  if (!is_msgpack_map(message.header)) {
    hostile(Side::frontend, peer.route,
            protocol::DecodeError{protocol::DecodeError::Code::wrong_type,
                                  "status header: expected a map"});
    return;
  }
  send_client(peer.route, Command::status, protocol::encode(status_for(peer)));
}

void BrokerCore::on_backend(const Peer& peer, Frames frames) {
  const std::string_view route = peer.route;
  auto found = workers_.find(route);
  Worker* worker = found == workers_.end() ? nullptr : found->second.get();
  // Any message is a sign of life, even one we cannot use: the process is there.
  if (worker != nullptr) worker->last_heard = clock_.now();

  if (auto parsed = parse(Side::backend, route, frames)) {
    if (!has_role(peer.roles, Role::worker)) {
      refuse_non_worker(peer, *parsed);
    } else if (parsed->command == Command::ready) {
      on_ready(peer, *parsed);
    } else if (worker == nullptr) {
      answer_unknown_worker(route, parsed->command);
    } else {
      on_worker_message(*worker, *parsed, std::move(frames));
    }
  }
  process_lost_workers();
}

void BrokerCore::refuse_non_worker(const Peer& peer, const protocol::FrameView& message) {
  // Only possible for a key removed from --allow-workers since it connected: the ZAP handler
  // admits nothing else on the backend. Whatever it ran goes to other workers.
  if (workers_.contains(peer.route)) {
    lose_worker(peer.route, "its key is no longer in the worker allow-list");
  }
  refuse_identity(Side::backend, peer, message,
                  peer.roles == 0 ? "its key is not (or no longer) listed"
                                  : "not a worker identity (not in --allow-workers)");
}

void BrokerCore::revoke_workers(const std::function<Roles(std::string_view key)>& roles_of) {
  std::vector<std::string> revoked;
  for (const auto& [route, worker] : workers_) {
    if (!worker->identity_key.empty() && !has_role(roles_of(worker->identity_key), Role::worker)) {
      revoked.push_back(route);
    }
  }
  for (const std::string& route : revoked) {
    auto it = workers_.find(route);
    if (it == workers_.end()) continue;
    // It reconnects on `disconnect`, and the ZAP handler then refuses it: its log says why.
    send_worker(*it->second,
                make_frames(Command::disconnect,
                            protocol::encode(protocol::Disconnect{
                                "this worker's key was removed from the allow-list"})));
    lose_worker(route, "its key was removed from the worker allow-list");
  }
  process_lost_workers();
}

void BrokerCore::answer_unknown_worker(std::string_view route, Command command) {
  // After a broker restart every worker is unknown: tell it to start over with `ready`.
  // A disconnect is not answered (two peers must not echo disconnects forever).
  if (command == Command::disconnect || command == Command::rejected ||
      !backend_replies_.allow(clock_.now())) {
    return;
  }
  if (worker_log_.allow(clock_.now())) {
    spdlog::info("backend: {} from unknown worker {}: sent disconnect",
                 protocol::to_string(command), route_hex(route));
  }
  transport_.send_to_worker(
      route, make_frames(Command::disconnect,
                         protocol::encode(protocol::Disconnect{"unknown worker (broker " +
                                                               broker_id_ + "): send ready"})));
}

void BrokerCore::on_worker_message(Worker& worker, const protocol::FrameView& message,
                                   Frames frames) {
  switch (message.command) {
    case Command::credit:
      on_credit(worker, message);
      break;
    case Command::heartbeat: {
      auto heartbeat = protocol::decode<protocol::Heartbeat>(message.header);
      if (!heartbeat) hostile(Side::backend, worker.route, heartbeat.error());
      break;
    }
    case Command::disconnect: {
      auto disconnect = protocol::decode<protocol::Disconnect>(message.header);
      std::string reason = "worker disconnected";
      if (disconnect && !disconnect.value().reason.empty()) {
        reason += ": " + clip(disconnect.value().reason, kMaxInfoString);
      }
      const std::string route = worker.route;  // `worker` dies in lose_worker
      lose_worker(route, reason);
      break;
    }
    case Command::chunk:
    case Command::reset:
      on_stream_event(worker, message, std::move(frames));
      break;
    case Command::result:
    case Command::error:
      on_job_end(worker, message, std::move(frames));
      break;
    case Command::provider_health:
      on_provider_health(worker, message);
      break;
    default:
      unexpected(Side::backend, worker.route, message.command);
      break;
  }
}

namespace {

// A submit that cannot be queued as sent: the reason, and its job id where it could be read.
struct InvalidSubmit {
  protocol::DecodeError error;
  std::string job_id;
};

Result<protocol::Submit, InvalidSubmit> check_submit(const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::Submit>(message.header);
  if (!decoded) return InvalidSubmit{decoded.error(), protocol::extract_job_id(message.header)};
  protocol::Submit& submit = decoded.value();
  const auto invalid = [&](std::string text) {
    return InvalidSubmit{
        protocol::DecodeError{protocol::DecodeError::Code::invalid_value, std::move(text)},
        submit.job_id};
  };
  if (submit.provider.empty() || submit.provider.size() > kMaxProviderName) {
    return invalid("provider: must be 1.." + std::to_string(kMaxProviderName) + " bytes");
  }
  if (submit.model.size() > kMaxModelName) {
    return invalid("model: at most " + std::to_string(kMaxModelName) + " bytes");
  }
  if (static_cast<std::size_t>(submit.priority) >= protocol::kPriorityLevels) {
    return invalid("priority: out of range");
  }
  if (auto error = protocol::validate_msgpack(message.payload)) {
    error->message = "payload: " + error->message;
    return InvalidSubmit{std::move(*error), submit.job_id};
  }
  return std::move(submit);
}

}  // namespace

void BrokerCore::on_submit(const Peer& peer, const protocol::FrameView& message, Frames& frames) {
  auto checked = check_submit(message);
  if (!checked) {
    hostile(Side::frontend, peer.route, checked.error().error, std::move(checked.error().job_id));
    return;
  }
  protocol::Submit& submit = *checked;
  if (!submit.tenant.empty() && !has_role(peer.roles, Role::gateway)) {
    refuse(peer, protocol::Rejected{submit.job_id, ErrorKind::invalid_request, "tenant_not_allowed",
                                    "only a gateway identity (--allow-gateways) may submit for a "
                                    "tenant"});
    return;
  }
  detail::Owner owner{std::string(peer.key), submit.tenant};
  if (auto it = jobs_.find(submit.job_id); it != jobs_.end()) {
    resubmit(peer, owner, submit, *it->second);
    return;
  }
  protocol::ClientCounters* counts = owner_counters(peer, owner);
  ClientKey client = client_key_of(peer, submit.tenant);
  if (auto admitted = admission(submit, frames[3].size(), client); !admitted) {
    refuse(peer, std::move(admitted).error(), counts);
    return;
  }
  admit(peer, std::move(client), std::move(owner), counts, std::move(submit), frames[3]);
}

void BrokerCore::resubmit(const Peer& peer, const detail::Owner& owner,
                          const protocol::Submit& submit, Job& job) {
  if (job.owner == owner) {
    answer_duplicate(peer.route, job);
    return;
  }
  // Someone else's job: neither its answer nor its reply route may change hands. Job ids are
  // 128 random bits in the reference client, so this is a guess or a bug, never bad luck.
  refuse(peer,
         protocol::Rejected{submit.job_id, ErrorKind::invalid_request, "duplicate_job_id",
                            "another client has a job with this id; use a fresh random id"},
         owner_counters(peer, owner));
}

void BrokerCore::answer_duplicate(std::string_view route, Job& job) {
  // A resubmit: same job. Answers go to whoever asked last (a reconnected client).
  ++counters_.duplicates;
  if (metrics_ != nullptr) metrics_->duplicate();
  if (job.client_route != route) job.client_route = std::string(route);
  send_client(route, Command::accepted,
              protocol::encode(protocol::Accepted{job.id, broker_id_, true}));
  if (job.state == detail::JobState::finished && !job.final_frames.empty()) {
    const std::string_view command = view(job.final_frames[1]);
    transport_.send_to_client(
        route, command == protocol::to_string(Command::result) ? Command::result : Command::error,
        share_frames(job.final_frames));
  }
}

Result<void, protocol::Rejected> BrokerCore::admission(const protocol::Submit& submit,
                                                       std::size_t payload_bytes,
                                                       const ClientKey& client) const {
  const auto rejected = [&](std::string code, std::string message) {
    return protocol::Rejected{submit.job_id, ErrorKind::queue_full, std::move(code),
                              std::move(message)};
  };
  if (draining_) return rejected("draining", "broker is shutting down; resubmit later");
  // The bounds on waiting jobs do not apply to one a free worker takes at once.
  auto ps = providers_.find(submit.provider);
  const bool waits = ps == providers_.end() || has_waiting(*ps->second) ||
                     ps->second->available.empty() || gates_active();
  const ClientUsage usage = client_usage(client);
  if (waits && usage.jobs >= config_.client_jobs) {
    return rejected("client_jobs", "this client already has " + std::to_string(usage.jobs) +
                                       " jobs waiting (limit " +
                                       std::to_string(config_.client_jobs) + ")");
  }
  if (waits && usage.bytes + payload_bytes > config_.client_bytes) {
    return rejected("client_bytes", "this client's waiting jobs would hold " +
                                        std::to_string(usage.bytes + payload_bytes) +
                                        " payload bytes (limit " +
                                        std::to_string(config_.client_bytes) + ")");
  }
  if (waits && queued_total_ >= config_.queue_limit) {
    return rejected("queue_full", "broker queue is full (" + std::to_string(config_.queue_limit) +
                                      " jobs waiting)");
  }
  if (payload_bytes_ + payload_bytes > config_.queue_bytes) {
    return rejected("queue_bytes", "broker holds " + std::to_string(payload_bytes_) +
                                       " payload bytes; this job's " +
                                       std::to_string(payload_bytes) + " would pass the limit " +
                                       std::to_string(config_.queue_bytes));
  }
  return {};
}

void BrokerCore::refuse(const Peer& peer, protocol::Rejected rejected,
                        protocol::ClientCounters* counts) {
  ++rejected_[rejected.code];
  if (counts != nullptr) ++counts->rejected;
  if (metrics_ != nullptr) metrics_->rejected(rejected.code);
  if (hostile_log_.allow(clock_.now())) {
    spdlog::info("submit {} from {} rejected: {} ({})", rejected.job_id, peer_text(peer),
                 rejected.code, rejected.message);
  }
  send_client(peer.route, Command::rejected, protocol::encode(rejected));
}

void BrokerCore::admit(const Peer& peer, ClientKey client, detail::Owner owner,
                       protocol::ClientCounters* counts, protocol::Submit submit,
                       zmq::message_t& payload) {
  const std::string_view route = peer.route;
  auto owned = std::make_unique<Job>();
  Job& job = *owned;
  job.id = std::move(submit.job_id);
  job.client_route = std::string(route);
  job.client = std::move(client);
  job.owner = std::move(owner);
  job.counts = counts;
  if (counts != nullptr) ++counts->submitted;
  job.provider = std::move(submit.provider);
  job.model = std::move(submit.model);
  job.priority = submit.priority;
  job.stream = submit.stream;
  job.queue_timeout = std::min(
      submit.queue_timeout_ms == 0 ? config_.queue_timeout : milliseconds(submit.queue_timeout_ms),
      config_.max_queue_timeout);
  job.request = keep_frame(payload);
  job.payload_bytes = job.request.size();
  payload_bytes_ += job.payload_bytes;
  const auto timeout_ms = protocol::peek_request_timeout_ms(view(job.request));
  job.run_timeout = timeout_ms ? milliseconds(*timeout_ms) : config_.running_timeout;
  job.has_fallbacks = protocol::peek_array_length(view(job.request), "fallbacks").value_or(0) > 0;
  start_trace(job, submit.traceparent);
  jobs_.emplace(job.id, std::move(owned));
  ++counters_.jobs_accepted;
  if (metrics_ != nullptr) metrics_->accepted();
  ++provider_counters(job.provider).submitted;

  // Accepted goes out before the job can be dispatched, so the client always sees it first.
  send_client(route, Command::accepted,
              protocol::encode(protocol::Accepted{job.id, broker_id_, false}));
  enqueue(job, false);
  dispatch_provider(*job.queued_provider);
}

// The client's trace context when it is a valid W3C traceparent; otherwise (none, or one the
// spec's parsing refuses, which the spec says to ignore) a fresh trace.
void BrokerCore::start_trace(Job& job, std::string_view traceparent) {
  TraceContext context;
  if (auto parsed = parse_traceparent(traceparent)) {
    context = std::move(parsed).value();
  } else {
    context = fresh_trace();
    if (!traceparent.empty() && hostile_log_.allow(clock_.now())) {
      spdlog::info("job {} trace {}: the client's traceparent is invalid ({}): a fresh trace",
                   job.id, context.trace_id, parsed.error().message);
    }
  }
  job.trace_id = context.trace_id;
  job.traceparent = format_traceparent(context);
  spdlog::debug("job {} trace {} accepted for {}", job.id, job.trace_id, job.provider);
}

detail::ClientKey BrokerCore::client_key_of(const Peer& peer, std::string_view tenant) {
  // Without CURVE a client is its connection; with CURVE it is its identity, however many
  // connections it uses. A gateway's tenants are clients of their own.
  std::string id(peer.authenticated() ? peer.key : peer.route);
  if (!tenant.empty()) {
    id += '\0';
    id += tenant;
  }
  return ClientKey{std::move(id)};
}

protocol::ClientCounters* BrokerCore::owner_counters(const Peer& peer, const detail::Owner& owner) {
  if (owner.key.empty() && owner.tenant.empty()) return nullptr;
  std::string id = owner.key;
  if (!owner.tenant.empty()) {
    id += '\0';
    id += owner.tenant;
  }
  if (auto it = owner_stats_.find(id); it != owner_stats_.end()) return &it->second.counts;
  if (owner_stats_.size() >= kMaxCountedOwners) {
    // Not a key ("" is nobody's with CURVE) nor an id above (those are 40 Z85 characters, or
    // start with NUL).
    detail::OwnerStats& other = owner_stats_[std::string(kOtherClients)];
    other.label = std::string(kOtherClients);
    return &other.counts;
  }
  std::string label(peer.name);
  if (!owner.tenant.empty()) label += "/" + owner.tenant;
  auto inserted = owner_stats_.emplace(std::move(id), detail::OwnerStats{owner.key, label, {}});
  return &inserted.first->second.counts;
}

detail::ClientUsage BrokerCore::client_usage(const ClientKey& client) const {
  auto it = client_usage_.find(client.id);
  return it == client_usage_.end() ? ClientUsage{} : it->second;
}

void BrokerCore::on_cancel(const Peer& peer, const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::Cancel>(message.header);
  if (!decoded) {
    hostile(Side::frontend, peer.route, decoded.error(), protocol::extract_job_id(message.header));
    return;
  }
  auto it = jobs_.find(decoded.value().job_id);
  if (it == jobs_.end() || it->second->state == detail::JobState::finished) {
    spdlog::debug("cancel of unknown or finished job {} ignored", decoded.value().job_id);
    return;
  }
  Job& job = *it->second;
  // Only the identity that submitted it (a gateway: for any of its tenants; Cancel names no
  // tenant). Ignored like a cancel of an unknown job, so that it tells nothing about the job.
  if (job.owner.key != peer.key) {
    if (identity_log_.allow(clock_.now())) {
      spdlog::warn("cancel of job {} trace {} from {} ignored: another identity owns it", job.id,
                   job.trace_id, peer_text(peer));
    }
    return;
  }
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

void BrokerCore::on_ready(const Peer& peer, const protocol::FrameView& message) {
  const std::string_view route = peer.route;
  auto decoded = protocol::decode<protocol::Ready>(message.header);
  if (!decoded) {
    hostile(Side::backend, route, decoded.error());
    return;
  }
  protocol::Ready& ready = decoded.value();
  if (ready.worker_id.size() > kMaxInfoString) {
    // Kept as a key: refused rather than cut, so that the key stored is the one looked up.
    hostile(
        Side::backend, route,
        protocol::DecodeError{protocol::DecodeError::Code::invalid_value,
                              "worker_id: at most " + std::to_string(kMaxInfoString) +
                                  " bytes (got " + std::to_string(ready.worker_id.size()) + ")"});
    return;
  }
  if (refuse_taken_worker_id(peer, ready)) return;
  // A ready from a registered worker means it (re)started its session. The deliveries it lists
  // in `jobs` are still running there (a worker that reconnected because it thought us dead,
  // e.g. while one of us was starved of CPU): they stay with it, on the new connection, with
  // the same delivery number. Whatever else we think it runs may be gone, so those jobs are
  // redelivered (late answers from the old delivery are dropped by delivery number).
  HeldDeliveries held;
  held.reserve(ready.jobs.size());
  for (const protocol::HeldJob& job : ready.jobs) held.emplace(job.job_id, job.delivery);
  std::vector<Job*> kept;
  const std::string& worker_id = ready.worker_id;
  if (auto same = workers_.find(route); same != workers_.end()) {
    take_held(*same->second, worker_id, held, kept);
    lose_worker(route, "sent ready again");
  }
  if (!ready.worker_id.empty()) {
    auto previous = worker_routes_.find(ready.worker_id);
    if (previous != worker_routes_.end() && previous->second != route) {
      const std::string old_route = previous->second;
      if (auto old = workers_.find(old_route); old != workers_.end()) {
        take_held(*old->second, worker_id, held, kept);
      }
      lose_worker(old_route, "reconnected on a new connection");
    }
  }
  Worker& worker = register_worker(peer, std::move(ready));
  adopt_kept(worker, kept);
  update_availability(worker);
  // A welcome: a worker that reconnected because it heard nothing from us learns at once that
  // we are alive, instead of a heartbeat interval later (when it may be about to give up again).
  send_worker(worker,
              make_frames(Command::heartbeat,
                          protocol::encode(protocol::Heartbeat{
                              broker_id_, static_cast<uint32_t>(worker.in_flight.size())})));
  cancel_foreign_held(worker, held);
  dispatch_worker(worker);
}

bool BrokerCore::refuse_taken_worker_id(const Peer& peer, const protocol::Ready& ready) {
  auto registered = worker_routes_.find(ready.worker_id);
  if (registered == worker_routes_.end()) return false;
  auto holder = workers_.find(registered->second);
  // The same identity may come back on a new connection (a reconnect) and keep its jobs.
  if (holder == workers_.end() || holder->second->identity_key == peer.key) return false;
  ++counters_.refused_messages;
  if (metrics_ != nullptr) metrics_->refused();
  const Clock::time_point now = clock_.now();
  if (identity_log_.allow(now)) {
    spdlog::warn(
        "backend: ready from {} refused: worker id {} is registered by key {}; the registered "
        "worker keeps its jobs ({} similar suppressed)",
        peer_text(peer), ready.worker_id, protocol::key_fingerprint(holder->second->identity_key),
        identity_log_.take_suppressed());
  }
  if (identity_replies_.allow(now)) {
    transport_.send_to_worker(
        peer.route,
        make_frames(Command::rejected, protocol::encode(protocol::Rejected{
                                           "", ErrorKind::invalid_request, "worker_id_in_use",
                                           "worker id '" + ready.worker_id +
                                               "' is registered by another identity; give this "
                                               "worker its own --id"})));
  }
  return true;
}

void BrokerCore::take_held(Worker& previous, std::string_view worker_id, const HeldDeliveries& held,
                           std::vector<Job*>& kept) {
  if (held.empty() || previous.worker_id != worker_id) return;
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
}

void BrokerCore::adopt_kept(Worker& worker, const std::vector<Job*>& kept) {
  for (Job* job : kept) {
    job->worker = &worker;
    worker.in_flight.push_back(*job);
    // A cancel sent on the old connection may have been lost with it.
    if (job->cancel_requested || job->overdue) {
      send_worker(worker,
                  make_frames(Command::cancel, protocol::encode(protocol::Cancel{job->id})));
    }
  }
  if (!kept.empty()) {
    counters_.jobs_kept += kept.size();
    spdlog::info("worker {} still runs {} job(s): kept on its new connection", worker.worker_id,
                 kept.size());
  }
}

void BrokerCore::cancel_foreign_held(Worker& worker, const HeldDeliveries& held) {
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
  // Text the client may hold (a chunk, or the void left by a reset whose next_seq the next
  // delivery will not continue): a redelivery must reset it.
  job->client_saw_stream = true;
  if (metrics_ != nullptr && message.command == Command::reset) {
    metrics_->stream_reset(ResetOrigin::worker);
  }
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
  const bool current = job != nullptr && job->worker == &worker;
  if (current && end.delivery == 0 && answers_our_cancel(*job, message, true)) {
    // The worker no longer holds the job we told it to cancel: it is released.
    end_cancelled(*job, "its worker no longer had it");
  } else if (!current || job->delivery != end.delivery) {
    drop_zombie(worker, message.command, end.job_id, end.delivery);
    return;
  } else if (job->overdue && answers_our_cancel(*job, message, false)) {
    end_cancelled(*job, "its worker cancelled it");
  } else if (auto recorded = record_outcome(*job, message.command, message.payload); recorded) {
    complete_job(*job, message.command, std::move(frames));
  } else {
    ++counters_.malformed_results;
    if (hostile_log_.allow(clock_.now())) {
      spdlog::warn("job {} trace {}: {}", job->id, job->trace_id, recorded.error());
    }
    // Clients only ever get payloads that decode: a broken one becomes our own error.
    fail_job(*job, ErrorKind::internal, "malformed_result",
             "worker " + worker.worker_id + " sent an undecodable " +
                 std::string(protocol::to_string(message.command)));
  }
  dispatch_worker(worker);
}

void BrokerCore::drop_zombie(const Worker& worker, Command command, std::string_view job_id,
                             uint32_t delivery) {
  ++counters_.zombie_messages;
  if (zombie_log_.allow(clock_.now())) {
    spdlog::warn(
        "dropped {} of job {} delivery {} from worker {}: not its current delivery "
        "({} similar suppressed)",
        protocol::to_string(command), job_id, delivery, worker.worker_id,
        zombie_log_.take_suppressed());
  }
}

bool BrokerCore::answers_our_cancel(const Job& job, const protocol::FrameView& message,
                                    bool unknown_job) const {
  if (message.command != Command::error || !(job.cancel_requested || job.overdue)) return false;
  auto error = protocol::decode<protocol::Error>(message.payload);
  if (!error || error.value().kind != ErrorKind::cancelled) return false;
  return !unknown_job || error.value().code == "unknown_job";
}

void BrokerCore::end_cancelled(Job& job, std::string_view how) {
  if (job.overdue) {
    fail_job(job, ErrorKind::timeout, "running_deadline",
             "the job passed its running deadline (" + std::to_string(job.run_timeout.count()) +
                 " ms + " + std::to_string(config_.running_grace.count()) + " ms grace); " +
                 std::string(how));
  } else {
    fail_job(job, ErrorKind::cancelled, "cancelled",
             "cancelled by the client; " + std::string(how));
  }
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
  if (!has_waiting(state) && state.serving == 0 && state.available.empty()) {
    arm_wake(state, Clock::time_point::max());
    providers_.erase(providers_.find(state.name));
  }
}

bool BrokerCore::has_waiting(const ProviderState& state) const noexcept {
  return !state.queue.empty() || !state.lanes.empty();
}

void BrokerCore::enqueue(Job& job, bool urgent) {
  ProviderState& state = provider_state(job.provider);
  job.state = detail::JobState::queued;
  job.overdue = false;
  job.enqueue_seq = ++enqueue_seq_;
  job.queued_provider = &state;
  // A model whose jobs are held by its own key already has a lane: its new jobs wait there.
  // Not a job with fallbacks: an open circuit does not hold it (its worker skips the target),
  // so it must not wait behind jobs that one holds; the queue's head check parks it if needed.
  auto lane =
      job.model.empty() || job.has_fallbacks ? state.lanes.end() : state.lanes.find(job.model);
  job.lane = lane == state.lanes.end() ? &state.queue : lane->second.get();
  if (urgent) {
    job.lane->push_urgent(job);
  } else {
    job.lane->push(job, job.client.id);
  }
  const Clock::time_point now = clock_.now();
  job.queued_at = now;
  Clock::time_point deadline = now + job.queue_timeout;
  if (!ever_advertised(job.provider)) {
    deadline = std::min(deadline, now + config_.unknown_provider_grace);
  }
  job.deadline = deadlines_.emplace(deadline, &job);
  job.has_deadline = true;
  ++queued_total_;
  ++queued_by_priority_[static_cast<std::size_t>(job.priority)];
  if (metrics_ != nullptr) metrics_->queued(job.priority);
  if (job.counts != nullptr) ++job.counts->queued;
  ClientUsage& usage = client_usage_[job.client.id];
  ++usage.jobs;
  usage.bytes += job.payload_bytes;
}

void BrokerCore::after_pop(Job& job) {
  if (job.has_deadline) {
    deadlines_.erase(job.deadline);
    job.has_deadline = false;
  }
  job.queued_provider = nullptr;
  --queued_total_;
  --queued_by_priority_[static_cast<std::size_t>(job.priority)];
  if (metrics_ != nullptr) metrics_->unqueued(job.priority);
  if (job.counts != nullptr) --job.counts->queued;
  auto usage = client_usage_.find(job.client.id);
  usage->second.jobs -= 1;
  usage->second.bytes -= job.payload_bytes;
  if (usage->second.jobs == 0) client_usage_.erase(usage);
}

bool BrokerCore::ever_advertised(std::string_view provider) const {
  return advertised_.size() >= kMaxAdvertisedProviders || advertised_.contains(provider);
}

void BrokerCore::dequeue(Job& job) {
  leave_lane(job, false);
  after_pop(job);
}

void BrokerCore::leave_lane(Job& job, bool served) {
  ProviderState& state = *job.queued_provider;
  detail::ProviderQueue* lane = job.lane;
  // Served from the head: pop() moves its client to the back of the round-robin ring.
  if (served && lane->peek() == &job) {
    lane->pop();
  } else {
    lane->erase(job);
  }
  job.lane = nullptr;
  if (lane != &state.queue && lane->empty()) state.lanes.erase(job.model);
}

detail::Job* BrokerCore::first_waiting(ProviderState& state) {
  if (Job* job = state.queue.peek()) return job;
  return state.lanes.empty() ? nullptr : state.lanes.begin()->second->peek();
}

void BrokerCore::dispatch_provider(ProviderState& state) {
  if (draining_) return;
  while (!state.available.empty()) {
    Job* job = next_admissible(state);
    if (job == nullptr) return;
    Worker& worker = *state.available.begin()->worker;
    take_queued(*job);
    assign(*job, worker);
  }
}

void BrokerCore::dispatch_worker(Worker& worker) {
  if (draining_) return;
  // Without quotas, after every event a provider with waiting jobs has no available worker: a
  // slot freed here can only be filled from this worker's providers, and this worker is the
  // least loaded candidate for them. (Jobs held by quota are dispatched by their provider's
  // wake-up or by the end of a job that frees room.) Pick the best job among its providers.
  while (worker.available) {
    Job* best = nullptr;
    for (ProviderState* state : worker.providers) {
      Job* candidate = next_admissible(*state);
      if (candidate != nullptr && (best == nullptr || runs_before(*candidate, *best))) {
        best = candidate;
      }
    }
    if (best == nullptr) return;
    take_queued(*best);
    assign(*best, worker);
  }
}

void BrokerCore::assign(Job& job, Worker& worker) {
  job.state = detail::JobState::running;
  job.worker = &worker;
  ++job.delivery;
  worker.in_flight.push_back(job);
  ++running_total_;
  if (job.counts != nullptr) ++job.counts->running;
  if (metrics_ != nullptr) metrics_->started();
  worker.idle_seq = ++dispatch_seq_;
  update_availability(worker);
  arm_run_deadline(job, clock_.now() + job.run_timeout + config_.running_grace);

  protocol::JobHeader header{job.id, job.delivery, job.stream, {}, job.traceparent};
  spdlog::debug("job {} trace {} delivery {} to worker {}", job.id, job.trace_id, job.delivery,
                worker.worker_id);
  if (!health_.empty()) {
    header.open_targets =
        health_.open_keys(job.probe ? model_key(job.provider, job.model) : "", kMaxOpenTargets);
  }
  Frames frames = make_frames(Command::job, protocol::encode(header));
  frames.emplace_back();
  frames.back().copy(job.request);  // shared, not copied: kept for a redelivery
  send_worker(worker, std::move(frames));
  if (worker.detached) {
    // It never reached the worker: back to the front of the queue, as if never dispatched.
    leave_worker(job);
    --job.delivery;
    enqueue(job, true);
    // Another worker may take it; dispatched after the current event, not from inside a
    // dispatch loop.
    redispatch_.push_back(job.provider);
  }
}

detail::Worker* BrokerCore::leave_worker(Job& job) {
  Worker* worker = job.worker;
  if (worker == nullptr) return nullptr;
  worker->in_flight.erase(job);
  --running_total_;
  if (job.counts != nullptr) --job.counts->running;
  if (metrics_ != nullptr) metrics_->stopped();
  job.worker = nullptr;
  release_reservation(job);
  if (job.has_run_deadline) {
    run_deadlines_.erase(job.run_deadline);
    job.has_run_deadline = false;
  }
  return worker;
}

void BrokerCore::arm_run_deadline(Job& job, Clock::time_point at) {
  if (job.has_run_deadline) run_deadlines_.erase(job.run_deadline);
  job.run_deadline = run_deadlines_.emplace(at, &job);
  job.has_run_deadline = true;
}

void BrokerCore::on_run_deadline(Job& job) {
  Worker& worker = *job.worker;
  if (!job.overdue) {
    // Past its own total timeout plus the grace: the worker is stuck on it (or lost the job
    // without saying so). Ask it to stop, and give the answer one more grace to arrive.
    job.overdue = true;
    if (worker_log_.allow(clock_.now())) {
      spdlog::warn(
          "job {} trace {} delivery {} at worker {} passed its running deadline: "
          "cancelling",
          job.id, job.trace_id, job.delivery, worker.worker_id);
    }
    arm_run_deadline(job, clock_.now() + config_.running_grace);
    send_worker(worker, make_frames(Command::cancel, protocol::encode(protocol::Cancel{job.id})));
    return;
  }
  end_cancelled(job, "its worker did not answer the cancel within the grace");
  dispatch_worker(worker);
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

detail::Worker& BrokerCore::register_worker(const Peer& peer, protocol::Ready ready) {
  const std::string_view route = peer.route;
  auto owned = std::make_unique<Worker>();
  Worker& worker = *owned;
  worker.route = std::string(route);
  worker.identity_key = std::string(peer.key);
  worker.worker_id = ready.worker_id.empty() ? "route-" + route_hex(route) : ready.worker_id;
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
    if (advertised_.size() < kMaxAdvertisedProviders) advertised_.insert(name);
  }
  const Clock::time_point now = clock_.now();
  worker.last_heard = now;
  worker.last_sent = now;
  worker.idle_seq = ++dispatch_seq_;
  if (!ready.worker_id.empty()) worker_routes_[worker.worker_id] = worker.route;
  workers_.emplace(worker.route, std::move(owned));
  update_availability(worker);
  spdlog::info("worker {} registered: host {} pid {} capacity {} providers [{}]{}",
               worker.worker_id, worker.host, worker.pid, worker.capacity,
               fmt::join(worker.provider_names, ","),
               peer.authenticated() ? " as " + peer_text(peer) : std::string());
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
  if (metrics_ != nullptr) metrics_->worker_lost();
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
  while (Job* job = worker.in_flight.front()) {
    if (ProviderState* requeued = requeue_or_end(*job, worker.worker_id)) {
      touched.push_back(requeued);
    }
  }
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  for (ProviderState* state : touched) dispatch_provider(*state);
  for (ProviderState* state : worker.providers) maybe_forget_provider(*state);
}

detail::ProviderState* BrokerCore::requeue_or_end(Job& job, std::string_view lost_worker) {
  leave_worker(job);
  if (job.cancel_requested || job.overdue) {
    end_cancelled(job, "its worker was lost before it confirmed");
    return nullptr;
  }
  if (job.delivery > config_.redelivery_limit) {
    fail_job(job, ErrorKind::internal, "redelivery_limit",
             "the job lost its worker " + std::to_string(job.delivery) +
                 " times (redelivery limit " + std::to_string(config_.redelivery_limit) + ")");
    return nullptr;
  }
  if (draining_) {
    reject_job(job, "draining", "broker is shutting down and the job lost its worker");
    return nullptr;
  }
  if (job.client_saw_stream) {
    // The client may hold part of an answer that the next delivery (from seq 0) will not
    // continue.
    transport_.send_to_client(
        job.client_route, Command::reset,
        make_frames(Command::reset,
                    protocol::encode(protocol::StreamReset{
                        job.id, 0, "worker " + std::string(lost_worker) + " lost; redelivering"})));
    job.client_saw_stream = false;
    if (metrics_ != nullptr) metrics_->stream_reset(ResetOrigin::broker);
  }
  ++counters_.redeliveries;
  if (metrics_ != nullptr) metrics_->redelivered();
  spdlog::debug("job {} trace {} re-queued after delivery {}", job.id, job.trace_id, job.delivery);
  enqueue(job, true);
  return job.queued_provider;
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
  leave_broker_state(job);
  job.state = detail::JobState::finished;
  job.cancel_requested = false;
  job.finished_at = clock_.now();
  spdlog::debug("job {} trace {} finished: {}", job.id, job.trace_id, protocol::to_string(command));
  if (job.counts != nullptr)
    ++(command == Command::result ? job.counts->succeeded : job.counts->failed);
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
  ++broker_errors_[error.code];
  ++failed_by_kind_[std::string(protocol::to_string(kind))];
  if (metrics_ != nullptr) metrics_->job_ended(job.provider, job.model, protocol::to_string(kind));
  spdlog::debug("job {} trace {} ends: {} ({})", job.id, job.trace_id, protocol::to_string(kind),
                error.message);
  Frames frames =
      make_frames(Command::error, protocol::encode(protocol::JobEnd{job.id, job.delivery}),
                  protocol::encode(error));
  complete_job(job, Command::error, std::move(frames));
}

void BrokerCore::reject_job(Job& job, std::string_view code, std::string message) {
  leave_broker_state(job);
  ++rejected_[std::string(code)];
  if (job.counts != nullptr) ++job.counts->rejected;
  if (metrics_ != nullptr) metrics_->job_ended(job.provider, job.model, "rejected");
  send_client(job.client_route, Command::rejected,
              protocol::encode(protocol::Rejected{job.id, ErrorKind::queue_full, std::string(code),
                                                  std::move(message)}));
  // Forgotten, not finished: a resubmit (to a restarted broker) runs it.
  jobs_.erase(jobs_.find(job.id));
}

void BrokerCore::leave_broker_state(Job& job) {
  if (job.state == detail::JobState::queued && job.queued_provider != nullptr) dequeue(job);
  if (Worker* worker = leave_worker(job)) update_availability(*worker);
  // Its payload is no longer needed for a redelivery.
  payload_bytes_ -= job.payload_bytes;
  job.payload_bytes = 0;
  job.request = zmq::message_t();
}

void BrokerCore::evict_finished(Job& job) {
  finished_.erase(job);
  jobs_.erase(jobs_.find(job.id));
}

Result<void, std::string> BrokerCore::record_outcome(Job& job, Command command,
                                                     std::string_view payload) {
  if (command == Command::result) {
    auto response = protocol::decode<protocol::Response>(payload);
    if (!response) return "undecodable result payload: " + response.error().message;
    const protocol::Response& r = response.value();
    protocol::ProviderCounters& counters = provider_counters(job.provider);
    ++counters.succeeded;
    count_attempts(counters, r.attempts, r.provider, r.model);
    if (metrics_ != nullptr) metrics_->job_ended(job.provider, job.model, "success");
    // Tokens are spent where the answer came from, which after a fallback is another provider.
    protocol::ProviderCounters& spent =
        provider_counters(r.provider.empty() ? job.provider : r.provider);
    spent.prompt_tokens += r.usage.prompt_tokens;
    spent.completion_tokens += r.usage.completion_tokens;
    // The reservation was made on the job's own target: only its answer's usage settles it.
    const uint64_t used = r.usage.prompt_tokens + r.usage.completion_tokens;
    if (job.ticket.held && used > 0 && r.provider == job.provider &&
        (job.model.empty() || r.model == job.model)) {
      job.used_tokens = used;
    }
    if (job.probe) record_probe(job, &r.attempts);
    return {};
  }
  auto error = protocol::decode<protocol::Error>(payload);
  if (!error) return "undecodable error payload: " + error.error().message;
  protocol::ProviderCounters& counters = provider_counters(job.provider);
  ++counters.failed;
  ++failed_by_kind_[std::string(protocol::to_string(error.value().kind))];
  count_attempts(counters, error.value().attempts, error.value().provider, error.value().model);
  if (metrics_ != nullptr) {
    metrics_->job_ended(job.provider, job.model, protocol::to_string(error.value().kind));
  }
  if (job.probe) record_probe(job, &error.value().attempts);
  return {};
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
    expire_queued(*deadlines_.begin()->second, now);
  }
  while (!run_deadlines_.empty() && run_deadlines_.begin()->first <= now) {
    on_run_deadline(*run_deadlines_.begin()->second);
  }
  while (!finished_.empty() && finished_.front()->finished_at + config_.result_ttl <= now) {
    evict_finished(*finished_.front());
  }
  wake_due(now);
  if (now >= next_tick_) {
    quota_.forget_expired();
    // Late by more than half an interval: the loop did not run (stopped or starved).
    check_workers(now, now - next_tick_ > config_.heartbeat_interval / 2);
    next_tick_ = now + tick_period();
    sample_metrics();
  }
  if (draining_ && !drained_ && (running_total_ == 0 || now >= drain_deadline_)) end_drain();
  process_lost_workers();
}

void BrokerCore::expire_queued(Job& job, Clock::time_point now) {
  ProviderState& state = *job.queued_provider;
  const Clock::time_point queue_deadline = job.queued_at + job.queue_timeout;
  if (now < queue_deadline) {
    // The unknown-provider grace ran out.
    if (ever_advertised(state.name)) {
      // A worker offered the provider meanwhile: the job waits out its queue deadline.
      deadlines_.erase(job.deadline);
      job.deadline = deadlines_.emplace(queue_deadline, &job);
      return;
    }
    fail_job(job, ErrorKind::unsupported_provider, "unknown_provider",
             "no worker has offered provider '" + state.name +
                 "' since the broker started (waited " +
                 std::to_string(to_ms(now - job.queued_at)) + " ms)");
  } else if (state.serving > 0) {
    fail_job(job, ErrorKind::timeout, "queue_deadline",
             "no worker took the job within its queue deadline (" +
                 std::to_string(job.queue_timeout.count()) + " ms)");
  } else {
    fail_job(job, ErrorKind::unsupported_provider, "queue_deadline",
             "no connected worker serves provider '" + state.name + "' (waited " +
                 std::to_string(job.queue_timeout.count()) + " ms)");
  }
  maybe_forget_provider(state);
}

Clock::time_point BrokerCore::next_timer() const {
  if (draining_ && !drained_ && running_total_ == 0) return clock_.now();
  Clock::time_point next = next_tick_;
  if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
  if (!run_deadlines_.empty()) next = std::min(next, run_deadlines_.begin()->first);
  if (!finished_.empty())
    next = std::min(next, finished_.front()->finished_at + config_.result_ttl);
  if (!wakeups_.empty()) next = std::min(next, wakeups_.begin()->first);
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
    while (Job* job = first_waiting(*state)) {
      dequeue(*job);
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
  reply.payload_bytes = payload_bytes_;
  reply.payload_bytes_limit = config_.queue_bytes;
  reply.rejected.insert(rejected_.begin(), rejected_.end());
  reply.broker_errors.insert(broker_errors_.begin(), broker_errors_.end());
  reply.failed_by_kind.insert(failed_by_kind_.begin(), failed_by_kind_.end());
  add_quota_status(reply);
  reply.worker_count = workers_.size();
  reply.insecure = config_.insecure;
  for (const auto& [id, stats] : owner_stats_) {
    // Two keys may share a display name (files of the same name in two directories).
    if (!reply.clients.emplace(stats.label, stats.counts).second) {
      reply.clients.emplace(stats.label + " (key " + protocol::key_fingerprint(stats.key) + ")",
                            stats.counts);
    }
  }
  return reply;
}

protocol::StatusReply BrokerCore::status_for(const Peer& asker) const {
  if (has_role(asker.roles, Role::admin)) {
    protocol::StatusReply reply = status();
    reply.identity = std::string(asker.name);
    return reply;
  }
  // Not an admin: how many workers there are, and its own jobs; nothing about anyone else's.
  protocol::StatusReply reply;
  reply.broker_id = broker_id_;
  reply.uptime_ms = ms_between(started_, clock_.now());
  reply.queue_limit = config_.queue_limit;
  reply.payload_bytes_limit = config_.queue_bytes;
  reply.worker_count = workers_.size();
  reply.identity = std::string(asker.name);
  reply.insecure = config_.insecure;
  for (const auto& [id, stats] : owner_stats_) {
    if (stats.key == asker.key) reply.clients.emplace(stats.label, stats.counts);
  }
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
  if (metrics_ != nullptr) metrics_->hostile();
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
