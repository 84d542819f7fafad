#include "session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::detail {

namespace {

using protocol::Command;
using std::chrono::milliseconds;

// An empty msgpack map: the header of a status request.
constexpr std::string_view kEmptyMap("\x80", 1);

}  // namespace

SessionSettings SessionSettings::from(const ClientOptions& options) {
  SessionSettings settings;
  settings.ack_timeout = std::max(options.ack_timeout, milliseconds(1));
  settings.max_ack_timeout = std::max(options.max_ack_timeout, settings.ack_timeout);
  settings.max_submits = std::max<uint32_t>(options.max_submits, 1);
  settings.heartbeat_interval = std::max(options.heartbeat_interval, milliseconds(1));
  settings.liveness = std::max<uint32_t>(options.liveness, 1);
  settings.default_request_timeout = options.default_request_timeout;
  settings.deadline_allowance = options.deadline_allowance;
  settings.cancel_grace = options.cancel_grace;
  settings.queue_timeout_ms = options.queue_timeout_ms;
  settings.broker_endpoint = options.broker_endpoint;
  return settings;
}

Session::Session(SessionSettings settings, Clock& clock, Random& random)
    : settings_(settings),
      clock_(clock),
      random_(random),
      last_sent_(clock.now()),
      last_received_(clock.now()),
      next_wakeup_(Clock::time_point::max()) {}

PreparedJob prepare_job(const SessionSettings& settings, std::string job_id,
                        const DispatchRequest& request, bool want_chunks) {
  PreparedJob job;
  job.submit.job_id = job_id;
  job.submit.provider = request.provider();
  job.model = request.model();
  // The broker keys provider/model limits and shared health on it (Submit.model).
  job.submit.model = request.model();
  job.submit.priority = request.priority();
  job.submit.queue_timeout_ms =
      request.queue_timeout_ms() != 0 ? request.queue_timeout_ms() : settings.queue_timeout_ms;
  job.submit.stream = want_chunks;
  job.submit.tenant = request.tenant();
  job.submit.traceparent = request.traceparent();
  if (want_chunks && !request.wire().stream) {
    protocol::Request streamed = request.wire();
    streamed.stream = true;
    job.payload = protocol::encode(streamed);
  } else {
    job.payload = protocol::encode(request.wire());
  }
  job.request_timeout = request.wire().timeout_ms ? milliseconds(*request.wire().timeout_ms)
                                                  : settings.default_request_timeout;
  job.job_id = std::move(job_id);
  return job;
}

milliseconds Session::ack_wait(uint32_t submits_so_far) {
  auto wait = settings_.ack_timeout;
  for (uint32_t i = 1; i < submits_so_far && wait < settings_.max_ack_timeout; ++i) wait *= 2;
  wait = std::min(wait, settings_.max_ack_timeout);
  // Up to 10% jitter so that many clients cut off together do not resubmit in lockstep.
  const auto jitter = milliseconds(
      static_cast<int64_t>(random_.uniform() * 0.1 * static_cast<double>(wait.count())));
  return wait + jitter;
}

void StreamOrder::on_chunk(protocol::Chunk chunk, const StreamCallback& emit) {
  if (chunk.seq < next_seq_) {
    if (is_repeat(chunk)) return;  // already shown
    // A new delivery numbers from 0: the answer restarted and nobody told us. Void what the
    // caller holds (nothing to void when no chunk followed the last reset).
    spdlog::debug("dispatch client: job {} restarted at seq {} (expected {})", chunk.job_id,
                  chunk.seq, next_seq_);
    restart("the answer restarted (redelivered or resubmitted)", emit);
  }
  if (chunk.seq > next_seq_) {
    StreamEvent gap;
    gap.type = StreamEvent::Type::gap;
    gap.expected_seq = next_seq_;
    gap.seq = chunk.seq;
    gap_ = true;
    spdlog::debug("dispatch client: job {} missed chunks {}..{}", chunk.job_id, next_seq_,
                  chunk.seq - 1);
    if (emit) emit(gap);
  }
  next_seq_ = chunk.seq + 1;
  shown_since_reset_ = true;
  last_fingerprint_ = fingerprint(chunk);
  StreamEvent event;
  event.type = StreamEvent::Type::chunk;
  event.seq = chunk.seq;
  event.content = std::move(chunk.content);
  event.thinking = std::move(chunk.thinking);
  event.tool_calls = std::move(chunk.tool_calls);
  if (emit) emit(event);
}

void StreamOrder::on_reset(protocol::StreamReset reset, const StreamCallback& emit) {
  emit_reset(reset.next_seq, std::move(reset.reason), emit);
}

void StreamOrder::restart(std::string reason, const StreamCallback& emit) {
  if (shown_since_reset_) {
    emit_reset(0, std::move(reason), emit);
    return;
  }
  next_seq_ = 0;
  gap_ = false;
}

void StreamOrder::emit_reset(uint64_t next_seq, std::string reason, const StreamCallback& emit) {
  next_seq_ = next_seq;
  gap_ = false;  // what was missed belongs to the voided answer
  shown_since_reset_ = false;
  ++resets_;
  if (!emit) return;
  StreamEvent event;
  event.type = StreamEvent::Type::reset;
  event.next_seq = next_seq;
  event.reason = std::move(reason);
  emit(event);
}

uint64_t StreamOrder::fingerprint(const protocol::Chunk& chunk) {
  // Lengths go in too, so that moving text between the fields changes the fingerprint.
  std::size_t hash = std::hash<std::string_view>{}(chunk.content);
  auto mix = [&hash](std::size_t value) {
    hash ^= value + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
  };
  mix(chunk.content.size());
  mix(std::hash<std::string_view>{}(chunk.thinking));
  mix(chunk.thinking.size());
  for (const auto& call : chunk.tool_calls) {
    mix(call.index);
    mix(std::hash<std::string_view>{}(call.id));
    mix(std::hash<std::string_view>{}(call.name));
    mix(std::hash<std::string_view>{}(call.arguments));
  }
  return hash;
}

bool StreamOrder::is_repeat(const protocol::Chunk& chunk) const {
  return shown_since_reset_ && chunk.seq + 1 == next_seq_ &&
         fingerprint(chunk) == last_fingerprint_;
}

void Session::submit(PreparedJob prepared, JobCallbacks callbacks) {
  const auto now = clock_.now();
  if (jobs_.count(prepared.job_id) != 0) {
    DispatchOutcome outcome;
    outcome.job_id = prepared.job_id;
    outcome.error = make_dispatch_error(
        make_wire_error(ErrorKind::internal, "duplicate_job_id", "job id already in flight"));
    if (callbacks.on_done) callbacks.on_done(std::move(outcome));
    return;
  }
  if (!has_work()) last_received_ = now;  // a fresh liveness window after an idle spell

  Job job;
  job.id = prepared.job_id;
  job.submit = std::move(prepared.submit);
  job.model = std::move(prepared.model);
  job.submit.stream = static_cast<bool>(callbacks.on_event);
  job.payload = std::move(prepared.payload);
  job.callbacks = std::move(callbacks);
  job.deadline = now + prepared.request_timeout + milliseconds(job.submit.queue_timeout_ms) +
                 settings_.deadline_allowance;
  auto [it, inserted] = jobs_.emplace(prepared.job_id, std::move(job));
  (void)inserted;
  lower_wakeup(it->second.deadline);
  send_submit(it->second);
}

void Session::send_submit(Job& job) {
  send(Command::submit, protocol::encode(job.submit), job.payload);
  ++stats_.submits_sent;
  ++job.unacked_submits;
  job.resubmit_at = clock_.now() + ack_wait(job.unacked_submits);
  lower_wakeup(job.resubmit_at);
}

void Session::send_cancel(const std::string& job_id) {
  send(Command::cancel, protocol::encode(protocol::Cancel{job_id}));
}

void Session::send(Command command, std::string header, std::string payload) {
  EncodedMessage frames;
  frames.reserve(4);
  frames.emplace_back(protocol::kProtocolTag);
  frames.emplace_back(protocol::to_string(command));
  frames.push_back(std::move(header));
  if (protocol::command_has_payload(command)) frames.push_back(std::move(payload));
  outbox_.push_back(std::move(frames));
  last_sent_ = clock_.now();
}

void Session::cancel(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.cancel_requested) return;
  Job& job = it->second;
  job.cancel_requested = true;
  send_cancel(job_id);
  if (!job.accepted) {
    // The broker may not even have the job; ending it here keeps cancel() prompt. A late
    // `accepted` is ignored and the cancel just sent stops the job there.
    fail(it, make_wire_error(ErrorKind::cancelled, client_code::cancelled_locally,
                             "cancelled before the broker acknowledged the job"));
    return;
  }
  job.cancel_deadline = clock_.now() + settings_.cancel_grace;
  lower_wakeup(job.cancel_deadline);
}

void Session::request_status(milliseconds timeout, StatusCallback done) {
  const auto now = clock_.now();
  if (!has_work()) last_received_ = now;
  status_waiters_.push_back(StatusWaiter{now + timeout, timeout, std::move(done)});
  lower_wakeup(now + timeout);
  send(Command::status, std::string(kEmptyMap));
}

void Session::finish(JobMap::iterator it, DispatchOutcome outcome) {
  JobCallbacks callbacks = std::move(it->second.callbacks);
  jobs_.erase(it);
  if (!callbacks.on_done) return;
  try {
    callbacks.on_done(std::move(outcome));
  } catch (const std::exception& e) {
    spdlog::error("dispatch client: completion callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("dispatch client: completion callback threw a non-exception");
  }
}

void Session::fail(JobMap::iterator it, protocol::Error error) {
  DispatchOutcome outcome;
  outcome.job_id = it->first;
  if (error.provider.empty()) {
    // Name the target the caller asked for when nobody more specific answered.
    error.provider = it->second.submit.provider;
    error.model = it->second.model;
  }
  outcome.error = make_dispatch_error(std::move(error));
  finish(it, std::move(outcome));
}

namespace {

// The caller's stream callback, shielded: an exception from it must not unwind the I/O loop.
StreamCallback shielded(const StreamCallback& on_event) {
  if (!on_event) return {};
  return [&on_event](const StreamEvent& event) {
    try {
      on_event(event);
    } catch (const std::exception& e) {
      spdlog::error("dispatch client: stream callback threw: {}", e.what());
    } catch (...) {
      spdlog::error("dispatch client: stream callback threw a non-exception");
    }
  };
}

}  // namespace

void Session::note_broker_id(const std::string& broker_id, const std::string& except_job) {
  if (broker_id.empty() || broker_id == broker_id_) return;
  const bool restarted = !broker_id_.empty();
  broker_id_ = broker_id;
  if (!restarted) return;
  // A new broker instance knows nothing of jobs the old one accepted: hand them over again.
  ++stats_.broker_changes;
  spdlog::warn("dispatch client: broker changed (now {}); resubmitting {} unfinished job(s)",
               broker_id, jobs_.size());
  for (auto& [id, job] : jobs_) {
    if (id == except_job || job.accepted_by == broker_id) continue;
    // The new broker restarts the answer from seq 0 without knowing we saw chunks.
    job.stream.restart("broker restarted; the answer restarts", shielded(job.callbacks.on_event));
    job.accepted = false;
    job.accepted_by.clear();
    job.unacked_submits = 0;
    ++stats_.resubmits;
    send_submit(job);
  }
}

void Session::on_message(std::span<const std::string_view> frames) {
  last_received_ = clock_.now();
  auto parsed = protocol::parse_frames(frames);
  if (!parsed) {
    ++stats_.ignored_messages;
    spdlog::debug("dispatch client: undecodable message from broker: {}", parsed.error().message);
    return;
  }
  const auto& view = parsed.value();
  switch (view.command) {
    case Command::accepted:
      return on_accepted(view.header);
    case Command::rejected:
      return on_rejected(view.header);
    case Command::chunk:
      return on_chunk(view.header);
    case Command::reset:
      return on_reset(view.header);
    case Command::result:
    case Command::error:
      return on_end(view.command, view.header, view.payload);
    case Command::heartbeat: {
      auto heartbeat = protocol::decode<protocol::Heartbeat>(view.header);
      if (heartbeat) note_broker_id(heartbeat.value().sender_id, {});
      return;
    }
    case Command::status:
      return on_status_reply(view.header);
    default:
      ++stats_.ignored_messages;
      return;
  }
}

void Session::on_accepted(std::string_view header) {
  auto accepted = protocol::decode<protocol::Accepted>(header);
  if (!accepted) {
    ++stats_.ignored_messages;
    return;
  }
  const auto& ack = accepted.value();
  auto it = jobs_.find(ack.job_id);
  if (it != jobs_.end() && !it->second.cancel_requested) {
    it->second.accepted = true;
    it->second.accepted_by = ack.broker_id;
    it->second.unacked_submits = 0;
  }
  note_broker_id(ack.broker_id, ack.job_id);
}

void Session::on_status_reply(std::string_view header) {
  auto reply = protocol::decode<protocol::StatusReply>(header);
  if (!reply) {
    ++stats_.ignored_messages;
    spdlog::warn("dispatch client: undecodable status reply: {}", reply.error().message);
    return;
  }
  note_broker_id(reply.value().broker_id, {});
  // A status request carries no id: one reply answers every request waiting.
  auto waiters = std::move(status_waiters_);
  status_waiters_.clear();
  for (auto& waiter : waiters) waiter.done(reply.value());
}

void Session::on_rejected(std::string_view header) {
  auto decoded = protocol::decode<protocol::Rejected>(header);
  if (!decoded) {
    ++stats_.ignored_messages;
    return;
  }
  const auto& rejected = decoded.value();
  auto make_error = [&] {
    return make_wire_error(rejected.kind, rejected.code,
                           rejected.message.empty() ? "rejected by the broker" : rejected.message);
  };
  if (!rejected.job_id.empty()) {
    auto it = jobs_.find(rejected.job_id);
    if (it != jobs_.end()) fail(it, make_error());
    return;
  }
  spdlog::warn("dispatch client: broker rejected a message: {} ({})", rejected.message,
               rejected.code);
  if (rejected.code == "version_mismatch") {
    // Every submit will meet the same answer; fail the unacknowledged jobs now.
    std::vector<std::string> doomed;
    for (const auto& [id, job] : jobs_) {
      if (!job.accepted) doomed.push_back(id);
    }
    for (const auto& id : doomed) fail(jobs_.find(id), make_error());
  }
}

void Session::on_chunk(std::string_view header) {
  auto decoded = protocol::decode<protocol::Chunk>(header);
  if (!decoded) {
    ++stats_.ignored_messages;
    return;
  }
  auto it = jobs_.find(decoded.value().job_id);
  if (it == jobs_.end() || !it->second.callbacks.on_event) return;
  Job& job = it->second;
  job.stream.on_chunk(std::move(decoded).value(), shielded(job.callbacks.on_event));
}

void Session::on_reset(std::string_view header) {
  auto decoded = protocol::decode<protocol::StreamReset>(header);
  if (!decoded) {
    ++stats_.ignored_messages;
    return;
  }
  auto it = jobs_.find(decoded.value().job_id);
  if (it == jobs_.end()) return;
  Job& job = it->second;
  job.stream.on_reset(std::move(decoded).value(), shielded(job.callbacks.on_event));
}

void Session::on_end(Command command, std::string_view header, std::string_view payload) {
  auto end = protocol::decode<protocol::JobEnd>(header);
  if (!end) {
    ++stats_.ignored_messages;
    return;
  }
  auto it = jobs_.find(end.value().job_id);
  if (it == jobs_.end()) return;  // finished already (a repeated answer after a resubmit)
  if (command == Command::result) {
    auto response = protocol::decode<protocol::Response>(payload);
    if (!response) {
      fail(it, make_wire_error(ErrorKind::internal, client_code::invalid_response,
                               "undecodable result: " + response.error().message));
      return;
    }
    DispatchOutcome outcome;
    outcome.job_id = it->first;
    outcome.response = DispatchResponse::from_wire(std::move(response).value(), it->first);
    outcome.response->stream_resets = it->second.stream.resets();
    outcome.response->stream_gap = it->second.stream.gap();
    finish(it, std::move(outcome));
    return;
  }
  auto error = protocol::decode<protocol::Error>(payload);
  if (!error) {
    fail(it, make_wire_error(ErrorKind::internal, client_code::invalid_response,
                             "undecodable error: " + error.error().message));
    return;
  }
  fail(it, std::move(error).value());
}

void Session::tick() {
  const auto now = clock_.now();
  if (has_work()) check_broker(now);
  if (now < next_wakeup_) return;
  next_wakeup_ = Clock::time_point::max();  // the timers below lower it again
  lower_wakeup(run_job_timers(now));
  lower_wakeup(expire_status_waiters(now));
}

void Session::check_broker(Clock::time_point now) {
  if (now - last_sent_ >= settings_.heartbeat_interval) {
    send(Command::heartbeat,
         protocol::encode(protocol::Heartbeat{{}, static_cast<uint32_t>(jobs_.size())}));
    ++stats_.heartbeats_sent;
  }
  if (!reconnect_requested_ &&
      now - last_received_ >= settings_.heartbeat_interval * settings_.liveness) {
    spdlog::info("dispatch client: broker silent for {} ms; reconnecting",
                 (settings_.heartbeat_interval * settings_.liveness).count());
    reconnect_requested_ = true;
  }
}

Clock::time_point Session::run_job_timers(Clock::time_point now) {
  auto next = Clock::time_point::max();
  std::vector<std::pair<std::string, protocol::Error>> failures;
  for (auto& [id, job] : jobs_) {
    if (now >= job.deadline) {
      failures.emplace_back(id, make_wire_error(ErrorKind::timeout, client_code::client_deadline,
                                                "no answer from the broker in time"));
      continue;
    }
    if (job.cancel_requested && now >= job.cancel_deadline) {
      failures.emplace_back(id,
                            make_wire_error(ErrorKind::cancelled, client_code::cancelled_locally,
                                            "cancelled (the broker did not confirm)"));
      continue;
    }
    if (!job.accepted && now >= job.resubmit_at) {
      if (job.unacked_submits >= settings_.max_submits) {
        failures.emplace_back(
            id, make_wire_error(ErrorKind::network, client_code::broker_unreachable,
                                "the broker did not acknowledge the job after " +
                                    std::to_string(job.unacked_submits) + " submits"));
        continue;
      }
      ++stats_.resubmits;
      send_submit(job);
    }
    next = std::min(next, job.deadline);
    if (job.cancel_requested) next = std::min(next, job.cancel_deadline);
    if (!job.accepted) next = std::min(next, job.resubmit_at);
  }
  // Failed after the loop: a completion callback may start new jobs (dispatch_async).
  for (auto& [id, error] : failures) {
    auto it = jobs_.find(id);
    if (error.code != client_code::cancelled_locally) send_cancel(id);  // stop it at the broker
    fail(it, std::move(error));
  }
  return next;
}

Clock::time_point Session::expire_status_waiters(Clock::time_point now) {
  auto next = Clock::time_point::max();
  std::vector<StatusWaiter> expired;
  for (auto waiter = status_waiters_.begin(); waiter != status_waiters_.end();) {
    if (now >= waiter->deadline) {
      expired.push_back(std::move(*waiter));
      waiter = status_waiters_.erase(waiter);
    } else {
      next = std::min(next, waiter->deadline);
      ++waiter;
    }
  }
  for (auto& waiter : expired) {
    waiter.done(make_wire_error(ErrorKind::network, client_code::broker_unreachable,
                                "no broker answered at " + settings_.broker_endpoint + " within " +
                                    std::to_string(waiter.timeout.count()) + " ms"));
  }
  return next;
}

Clock::time_point Session::next_wakeup() const {
  auto next = next_wakeup_;
  if (has_work()) {
    next = std::min(next, last_sent_ + settings_.heartbeat_interval);
    if (!reconnect_requested_) {
      next = std::min(next, last_received_ + settings_.heartbeat_interval * settings_.liveness);
    }
  }
  return next;
}

void Session::shutdown() {
  std::vector<std::string> ids;
  ids.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) ids.push_back(id);
  for (const auto& id : ids) {
    send_cancel(id);
    fail(jobs_.find(id), make_wire_error(ErrorKind::cancelled, client_code::client_shutdown,
                                         "the client shut down"));
  }
  auto waiters = std::move(status_waiters_);
  status_waiters_.clear();
  for (auto& waiter : waiters) {
    waiter.done(make_wire_error(ErrorKind::cancelled, client_code::client_shutdown,
                                "the client shut down"));
  }
}

void Session::fail_all(const protocol::Error& error) {
  std::vector<std::string> ids;
  ids.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) ids.push_back(id);
  // One by one: a completion callback may submit again (dispatch_async), and such a job is
  // not failed by this call; the owner reconnects for it (see ClientEngine).
  for (const auto& id : ids) {
    auto it = jobs_.find(id);
    if (it != jobs_.end()) fail(it, error);
  }
  auto waiters = std::move(status_waiters_);
  status_waiters_.clear();
  for (auto& waiter : waiters) waiter.done(error);
}

std::vector<EncodedMessage> Session::take_outbox() {
  std::vector<EncodedMessage> out;
  out.swap(outbox_);
  return out;
}

bool Session::take_reconnect_request() {
  if (!reconnect_requested_) return false;
  reconnect_requested_ = false;
  return true;
}

void Session::on_reconnected() {
  ++stats_.reconnects;
  last_received_ = clock_.now();
  // Resend without counting against max_submits: a dead broker must still be reported after
  // the usual number of unacknowledged submits, not kept alive by reconnects.
  for (auto& [id, job] : jobs_) {
    if (job.cancel_requested) {
      send_cancel(id);
      continue;
    }
    if (job.accepted) {
      // Restart the acknowledgement clock; unacked_submits stays where it was (0).
      job.accepted = false;
      job.resubmit_at = clock_.now() + ack_wait(1);
      lower_wakeup(job.resubmit_at);
    }
    send(Command::submit, protocol::encode(job.submit), job.payload);
    ++stats_.resubmits;
  }
  if (!status_waiters_.empty()) send(Command::status, std::string(kEmptyMap));
}

}  // namespace dispatch::detail
