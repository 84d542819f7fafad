#include "dispatch/worker/runtime/worker_runtime.hpp"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <thread>
#include <utility>

#include "dispatch/common/fd.hpp"
#include "dispatch/common/random.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/common/time.hpp"
#include "dispatch/common/trace.hpp"
#include "dispatch/worker/providers/adapter.hpp"
#include "final_message.hpp"
#include "worker_runtime_impl.hpp"

#ifndef DISPATCH_VERSION
#define DISPATCH_VERSION "dev"
#endif

namespace dispatch::worker {
namespace {

namespace proto = dispatch::protocol;

// Bounds how many messages one wake-up drains from the broker socket before the loop gives
// curl a turn; the rest is picked up by a posted continuation (ZMQ_FD will not fire again).
constexpr int kMaxMessagesPerPump = 512;
// Messages queued for the broker while its pipe is full or while we reconnect. Results are never
// dropped; chunks are dropped past this bound (the final result still carries the whole answer).
constexpr std::size_t kOutboxChunkBound = 200'000;
// Most deliveries listed in a `ready` (the protocol's array limit is 100,000); any beyond are
// redelivered by the broker, which is correct, only slower.
constexpr std::size_t kMaxHeldJobsListed = 50'000;
// Results and errors handed to libzmq recently are kept for a reconnect (see remember_end());
// bounded in count and bytes, oldest dropped first.
constexpr std::size_t kMaxRecentEnds = 20'000;
constexpr std::size_t kMaxRecentEndBytes = 64u << 20;
// While the broker's pipe is full, the outbox is tried again this often (ZMQ_FD signals state
// changes only, so POLLOUT must be polled).
constexpr std::chrono::milliseconds kOutboxRetry{1};
// Answers to cancels of jobs we do not hold (see AnswerBudget).
constexpr uint32_t kUnknownCancelAnswersPerSecond = 100;
// Remaining-quota reports per target, at most one in this interval.
constexpr std::chrono::milliseconds kQuotaReportInterval{100};
// Targets remembered for that rate limit; past it the table starts over (a report too many).
constexpr std::size_t kMaxReportedTargets = 10'000;
// Index of the payload among a DEALER's frames [tag, command, header, payload].
constexpr std::size_t kPayloadFrame = 3;

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
  return buf.data();
}

void raise_to(std::atomic<uint64_t>& maximum, uint64_t value) {
  uint64_t seen = maximum.load();
  while (value > seen && !maximum.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

HealthReporter::HealthReporter(const Clock& clock, std::chrono::milliseconds quota_interval,
                               Send send)
    : clock_(clock), quota_interval_(quota_interval), send_(std::move(send)) {}

namespace {

proto::ProviderHealth health_of(const proto::Target& target, std::string_view kind,
                                const RateLimitHeaders& limits) {
  proto::ProviderHealth report;
  report.provider = target.provider;
  report.model = target.model;
  report.kind = std::string(kind);
  report.limit_requests = limits.limit_requests;
  report.remaining_requests = limits.remaining_requests;
  report.reset_requests_ms = limits.reset_requests_ms;
  report.limit_tokens = limits.limit_tokens;
  report.remaining_tokens = limits.remaining_tokens;
  report.reset_tokens_ms = limits.reset_tokens_ms;
  return report;
}

}  // namespace

void HealthReporter::on_rate_limited(const proto::Target& target, const Failure& failure) {
  proto::ProviderHealth report =
      health_of(target, proto::health_kind::rate_limited, failure.limits);
  report.retry_after_ms = failure.retry_after_ms;
  send_(report);
}

void HealthReporter::on_quota(const proto::Target& target, const RateLimitHeaders& limits) {
  const Clock::time_point now = clock_.now();
  const std::string key = target.provider + "/" + target.model;
  auto it = last_quota_.find(key);
  if (it != last_quota_.end() && now - it->second < quota_interval_) return;
  if (it == last_quota_.end()) {
    if (last_quota_.size() >= kMaxReportedTargets) last_quota_.clear();
    it = last_quota_.emplace(key, now).first;
  }
  it->second = now;
  send_(health_of(target, proto::health_kind::quota, limits));
}

void HealthReporter::on_circuit(const proto::Target& target, const BreakerChange& change) {
  const bool opened = change.kind == BreakerChange::Kind::opened;
  proto::ProviderHealth report = health_of(
      target, opened ? proto::health_kind::circuit_open : proto::health_kind::circuit_closed, {});
  if (opened) report.cooldown_ms = change.cooldown_ms;
  send_(report);
}

bool AnswerBudget::take(Clock::time_point now) {
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    used_ = 0;
  }
  if (used_ >= per_second_) return false;
  ++used_;
  return true;
}

// Forwards one job's output to the broker, tagged with its delivery number, and counts it.
class WorkerRuntime::Impl::JobForwarder final : public JobListener {
 public:
  JobForwarder(Impl& owner, std::string job_id, uint32_t delivery, const proto::Request& request)
      : owner_(owner),
        job_id_(std::move(job_id)),
        delivery_(delivery),
        metrics_(owner.options_.metrics) {
    if (metrics_ == nullptr) return;
    provider_ = request.provider;
    model_ = request.model;
    started_at_ = owner_.loop_.clock().now();
    metrics_->job_started();
  }
  ~JobForwarder() override {
    if (metrics_ != nullptr && !ended_) metrics_->job_stopped();
  }
  JobForwarder(const JobForwarder&) = delete;
  JobForwarder& operator=(const JobForwarder&) = delete;

  void on_chunk(const proto::Chunk& chunk) override {
    if (metrics_ != nullptr && !first_chunk_at_) first_chunk_at_ = owner_.loop_.clock().now();
    owner_.send(proto::Command::chunk, proto::encode(proto::ChunkHeader{chunk, delivery_}));
  }
  void on_reset(const proto::StreamReset& reset) override {
    if (metrics_ != nullptr) {
      metrics_->stream_reset();
      first_chunk_at_.reset();  // the answer delivered starts again
    }
    owner_.send(proto::Command::reset, proto::encode(proto::ResetHeader{reset, delivery_}));
  }
  void on_result(proto::Response response) override {
    if (metrics_ != nullptr) {
      std::optional<std::chrono::nanoseconds> first_token;
      if (first_chunk_at_) first_token = *first_chunk_at_ - started_at_;
      metrics_->job_succeeded(response, first_token, end());
    }
    FinalMessage final = encode_result(response);
    if (final.command != proto::Command::result) ++owner_.stats_.oversized_messages;
    owner_.send_final(job_id_, delivery_, final.command, std::move(final.payload));
    owner_.job_finished(job_id_, delivery_);
  }
  void on_error(proto::Error error) override {
    if (metrics_ != nullptr) metrics_->job_failed(error, provider_, model_, end());
    FinalMessage final = encode_error(std::move(error));
    owner_.send_final(job_id_, delivery_, final.command, std::move(final.payload));
    owner_.job_finished(job_id_, delivery_);
  }

 private:
  // The job's time at the worker; it no longer runs.
  std::chrono::nanoseconds end() {
    ended_ = true;
    metrics_->job_stopped();
    return owner_.loop_.clock().now() - started_at_;
  }

  Impl& owner_;
  std::string job_id_;
  uint32_t delivery_;
  WorkerMetrics* metrics_;
  std::string provider_;
  std::string model_;
  Clock::time_point started_at_{};
  std::optional<Clock::time_point> first_chunk_at_;
  bool ended_ = false;
};

// ---- lifecycle -------------------------------------------------------------------------------

WorkerRuntime::Impl::Impl(WorkerConfig config, RuntimeOptions options)
    : config_(std::move(config)),
      options_(std::move(options)),
      engine_(loop_),
      launcher_(engine_, loop_, config_),
      breakers_(loop_.clock()),
      context_(1),
      unknown_cancel_answers_(kUnknownCancelAnswersPerSecond),
      health_reporter_(loop_.clock(), kQuotaReportInterval,
                       [this](const proto::ProviderHealth& report) { send_health(report); }),
      reconnect_delay_(options_.reconnect_min) {
  if (options_.concurrency == 0) options_.concurrency = config_.concurrency;
  if (options_.concurrency == 0) options_.concurrency = 1;
  if (options_.worker_id.empty()) {
    // 128 random bits: a worker id must not be guessable (PROTOCOL.md, "Security").
    options_.worker_id = host_name() + ":" + std::to_string(getpid()) + ":" + random_hex_id();
  }
  for (const auto& [name, provider] : config_.providers) providers_.push_back(name);
}

WorkerRuntime::Impl::~Impl() {
  jobs_.clear();  // runners abort silently before the engine goes
  close_socket();
  if (signals_) loop_.unwatch(signals_->fd());
}

int WorkerRuntime::Impl::run() {
  watch_signals();
  connect();
  schedule_heartbeat();
  spdlog::info("worker {} serving [{}] with capacity {} via {}{}", options_.worker_id,
               fmt::join(providers_, ", "), options_.concurrency, options_.broker_endpoint,
               options_.curve.enabled()
                   ? " with CURVE (own key " +
                         proto::key_fingerprint(options_.curve.own.public_key) + "…, broker key " +
                         proto::key_fingerprint(options_.curve.broker_public_key) + "…)"
                   : std::string());
  loop_.run();
  wait_for_final_flush();
  spdlog::info("worker {} stopped", options_.worker_id);
  return 0;
}

// libzmq's context holds the process until what the socket still holds has left, or until the
// linger leave() set (up to the drain deadline). That wait happens here, watched, and not in a
// destructor: a second signal still ends it at once, as it ends a drain - an operator's second
// Ctrl-C, or a supervisor's second SIGTERM, must not wait out a broker that takes nothing.
void WorkerRuntime::Impl::wait_for_final_flush() {
  jobs_.clear();
  close_socket();
  WakeupFd closed;
  std::thread closer([this, &closed] {
    context_.close();
    closed.signal();
  });
  std::array<pollfd, 2> fds{
      {{closed.fd(), POLLIN, 0}, {signals_ ? signals_->fd() : -1, POLLIN, 0}}};
  while (true) {
    const int ready = ::poll(fds.data(), fds.size(), -1);
    if (ready < 0 && errno != EINTR) break;  // cannot watch: wait for the linger instead
    if (fds[0].revents != 0) break;
    if (fds[1].revents != 0 && !signals_->take().empty()) {
      spdlog::warn(
          "second signal: leaving without waiting for the broker to take the last "
          "messages");
      // The closer is blocked in libzmq with the context: no destructor may run around it.
      closer.detach();
      std::_Exit(0);
    }
  }
  closer.join();
}

void WorkerRuntime::Impl::request_drain() {
  loop_.post([this] { begin_drain(); });
}

// ---- the broker connection -------------------------------------------------------------------

void WorkerRuntime::Impl::connect() {
  socket_.emplace(context_, zmq::socket_type::dealer);
  proto::apply_protocol_socket_options(*socket_);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::sndhwm, options_.send_high_water_mark);
  socket_->set(zmq::sockopt::rcvhwm, 100'000);
  // libzmq retries a refused handshake on its own; backing off spares a broker that refuses us.
  socket_->set(zmq::sockopt::reconnect_ivl_max, 2000);
  // Every new socket (reconnects make one) gets the keys, and a monitor before it connects.
  proto::apply_broker_keys(*socket_, options_.curve);
  monitor_ = std::make_unique<proto::HandshakeMonitor>(context_, *socket_, options_.broker_endpoint,
                                                       options_.curve.enabled());
  monitor_->carry_over(handshake_history_);
  monitor_fd_ = monitor_->fd();
  loop_.watch(monitor_fd_, kReadable, [this](uint32_t) { check_handshakes(); });
  socket_->connect(options_.broker_endpoint);
  zmq_fd_ = socket_->get(zmq::sockopt::fd);
  loop_.watch(zmq_fd_, kReadable, [this](uint32_t) { pump(); });
  last_heard_ = loop_.clock().now();
  ++stats_.connects;
  broker_takes_health_ = true;  // maybe another (newer) broker now
  replay_recent_ends();
  send_ready();
  // The notification fd may already be consumed by the sends above.
  request_pump(std::chrono::milliseconds(0));
  check_handshakes();  // arms the monitor's edge-like fd
}

// What libzmq still holds for the old connection is lost with it; what waits in outbox_ is
// kept and follows the `ready` on the next connection (see send_ready()).
void WorkerRuntime::Impl::close_socket() {
  if (!socket_) return;
  loop_.unwatch(zmq_fd_);
  loop_.unwatch(monitor_fd_);
  socket_->close();
  socket_.reset();
  if (monitor_) handshake_history_ = monitor_->history();
  monitor_.reset();
  zmq_fd_ = -1;
  monitor_fd_ = -1;
}

// A refused handshake is logged (rate-limited: libzmq retries every few seconds) and otherwise
// left to the retries - libzmq's own, and the reconnect when the broker stays silent - since a
// key may be allowed later (the broker re-reads its lists on SIGHUP).
void WorkerRuntime::Impl::check_handshakes() {
  if (!monitor_) return;
  for (const proto::HandshakeProblem& problem : monitor_->read()) log_refusal(problem);
  if (refused_since_success_ && monitor_->succeeded()) {
    refused_since_success_ = false;
    spdlog::info("handshake with the broker at {} succeeded", options_.broker_endpoint);
  }
}

void WorkerRuntime::Impl::log_refusal(const proto::HandshakeProblem& problem) {
  constexpr std::chrono::seconds kRefusalLogInterval{10};
  ++stats_.handshake_refusals;
  refused_since_success_ = true;
  const auto now = loop_.clock().now();
  if (last_refusal_log_ != Clock::time_point{} && now - last_refusal_log_ < kRefusalLogInterval) {
    ++suppressed_refusals_;
    return;
  }
  spdlog::error("{}; retrying ({} similar suppressed)", problem.message, suppressed_refusals_);
  suppressed_refusals_ = 0;
  last_refusal_log_ = now;
}

// A result handed to libzmq is not yet at the broker: if the connection is replaced, what
// libzmq still held for it is gone, and the broker - not having seen that result - would
// redeliver the job. So the final messages of the last two liveness windows go out again on
// the new connection, listed in the `ready` as held. A broker that did get the first copy
// drops the second one (the job is finished there), so the client still gets one answer.
void WorkerRuntime::Impl::remember_end(OutMessage& message) {
  if (message.job_id.empty()) return;
  recent_end_bytes_ += message.header.size() + message.payload.size();
  recent_ends_.push_back({std::move(message), loop_.clock().now()});
  prune_recent_ends();
}

void WorkerRuntime::Impl::prune_recent_ends() {
  const auto horizon = loop_.clock().now() - 2 * options_.heartbeat_interval * options_.liveness;
  while (!recent_ends_.empty() &&
         (recent_ends_.front().sent_at < horizon || recent_ends_.size() > kMaxRecentEnds ||
          recent_end_bytes_ > kMaxRecentEndBytes)) {
    const OutMessage& oldest = recent_ends_.front().message;
    recent_end_bytes_ -= oldest.header.size() + oldest.payload.size();
    recent_ends_.pop_front();
  }
}

void WorkerRuntime::Impl::replay_recent_ends() {
  prune_recent_ends();
  if (recent_ends_.empty()) return;
  spdlog::info("sending {} recent result(s) again on the new connection", recent_ends_.size());
  // Ahead of what waits in outbox_ (their jobs are finished; order among jobs is free).
  while (!recent_ends_.empty()) {
    outbox_.push_front(std::move(recent_ends_.back().message));
    recent_ends_.pop_back();
  }
  recent_end_bytes_ = 0;
  stats_.outbox_messages = outbox_.size();
}

void WorkerRuntime::Impl::reconnect() {
  spdlog::warn("broker silent for {} ms; reconnecting to {} in {} ms",
               ms_between(last_heard_, loop_.clock().now()), options_.broker_endpoint,
               reconnect_delay_.count());
  close_socket();
  loop_.schedule_after(reconnect_delay_, [this] {
    if (stopping_) return;
    connect();
  });
  reconnect_delay_ = std::min(reconnect_delay_ * 2, options_.reconnect_max);
}

// The broker does not know us (it restarted) and answered one of our messages with
// `disconnect`. It answers every message we sent before it saw our `ready` that way, so
// re-sending `ready` per disconnect would register us again and again - and the broker takes
// a repeated `ready` for a restarted worker and re-queues everything it just gave us (jobs
// then hit the redelivery limit within milliseconds). As PROTOCOL.md says, reconnect instead:
// the new connection announces us once, and the disconnects still queued on the old one are
// discarded with it. Deferred because this runs inside pump(), which owns the socket.
void WorkerRuntime::Impl::rejoin() {
  if (rejoin_posted_ || stopping_) return;
  rejoin_posted_ = true;
  spdlog::info("broker asked us to re-register: reconnecting to {}", options_.broker_endpoint);
  loop_.post([this] {
    rejoin_posted_ = false;
    if (stopping_ || !socket_) return;  // stopping, or a silence reconnect is under way
    close_socket();
    connect();
  });
}

// Every delivery we still hold - running, or finished with its result still waiting in
// outbox_ - so that a broker that knew us keeps those deliveries on this connection instead
// of redelivering them (PROTOCOL.md, "Workers").
proto::Ready WorkerRuntime::Impl::ready_message() const {
  proto::Ready ready;
  ready.worker_id = options_.worker_id;
  ready.host = host_name();
  ready.pid = static_cast<uint32_t>(getpid());
  ready.capacity = draining_ ? 0 : options_.concurrency;
  ready.providers = providers_;
  ready.version = DISPATCH_VERSION;
  for (const auto& [job_id, job] : jobs_) {
    if (ready.jobs.size() >= kMaxHeldJobsListed) break;
    if (!job.finished) ready.jobs.push_back({job_id, job.delivery});
  }
  for (const OutMessage& message : outbox_) {
    if (ready.jobs.size() >= kMaxHeldJobsListed) break;
    if (!message.job_id.empty()) ready.jobs.push_back({message.job_id, message.delivery});
  }
  return ready;
}

// The `ready` goes out before anything left over from the previous connection.
void WorkerRuntime::Impl::send_ready() {
  const proto::Ready ready = ready_message();
  if (!ready.jobs.empty()) {
    spdlog::info("announcing {} job(s) still held to {}", ready.jobs.size(),
                 options_.broker_endpoint);
  }
  std::string header = proto::encode(ready);
  last_sent_ = loop_.clock().now();
  if (outbox_.empty() && proto::send_message(*socket_, proto::Command::ready, header, {},
                                             proto::SendMode::nonblocking)) {
    after_send();
    return;
  }
  outbox_.push_front({proto::Command::ready, std::move(header), {}, {}, 0});
  stats_.outbox_messages = outbox_.size();
  request_pump(std::chrono::milliseconds(0));
}

// ---- sending ---------------------------------------------------------------------------------

void WorkerRuntime::Impl::send(proto::Command command, std::string header, std::string payload) {
  enqueue_or_send({command, std::move(header), std::move(payload), {}, 0});
}

void WorkerRuntime::Impl::send_final(const std::string& job_id, uint32_t delivery,
                                     proto::Command command, std::string payload) {
  enqueue_or_send({command, proto::encode(proto::JobEnd{job_id, delivery}), std::move(payload),
                   job_id, delivery});
}

// Without a socket (between a reconnect and the next connect) messages wait in outbox_ for
// the next connection: a job we keep running must not lose its result to a reconnect.
void WorkerRuntime::Impl::enqueue_or_send(OutMessage message) {
  if (stopping_ && !socket_) return;
  if (!fits_one_frame(message)) return;
  last_sent_ = loop_.clock().now();
  if (socket_ && outbox_.empty() &&
      proto::send_message(*socket_, message.command, message.header, message.payload,
                          proto::SendMode::nonblocking)) {
    remember_end(message);
    after_send();
    return;
  }
  queue(std::move(message));
}

// A frame over the protocol's limit would make the broker drop the connection (results are
// made to fit before they get here: final_message.hpp). Anything else that does not fit is a
// bug; it is logged and not sent.
bool WorkerRuntime::Impl::fits_one_frame(const OutMessage& message) {
  const std::size_t limit = proto::Limits::max_message_bytes;
  if (message.header.size() <= limit && message.payload.size() <= limit) return true;
  ++stats_.oversized_messages;
  spdlog::error("not sending a {} message of {} + {} bytes: over the {}-byte frame limit",
                proto::to_string(message.command), message.header.size(), message.payload.size(),
                limit);
  return false;
}

void WorkerRuntime::Impl::queue(OutMessage message) {
  if (message.command == proto::Command::chunk && outbox_.size() >= kOutboxChunkBound) {
    ++dropped_chunks_;
    if ((dropped_chunks_ & (dropped_chunks_ - 1)) == 0) {  // log at powers of two
      spdlog::warn("broker pipe full: dropped {} chunk(s) so far (results are kept)",
                   dropped_chunks_);
    }
    return;
  }
  outbox_.push_back(std::move(message));
  stats_.outbox_messages = outbox_.size();
  if (socket_) request_pump(std::chrono::milliseconds(0));
}

// libzmq may consume the fd notification during a send: look again before sleeping.
void WorkerRuntime::Impl::after_send() {
  if (!socket_) return;
  if (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN) request_pump(std::chrono::milliseconds(0));
}

// At most one pump waits at any time, posted or on a timer: while the broker is slow, every
// message queued would otherwise arm a pump of its own, and the loop would spend itself on
// pumps exactly when the broker needs relief. A pump that waits serves every later request.
void WorkerRuntime::Impl::request_pump(std::chrono::milliseconds delay) {
  if (pending_pumps_ > 0) return;
  ++pending_pumps_;
  ++stats_.pumps_scheduled;
  raise_to(stats_.max_pending_pumps, pending_pumps_);
  auto run = [this] {
    --pending_pumps_;
    pump();
  };
  if (delay.count() == 0) {
    loop_.post(std::move(run));
  } else {
    loop_.schedule_after(delay, std::move(run));
  }
}

void WorkerRuntime::Impl::flush_outbox() {
  while (socket_ && !outbox_.empty()) {
    OutMessage& message = outbox_.front();
    if (!proto::send_message(*socket_, message.command, message.header, message.payload,
                             proto::SendMode::nonblocking)) {
      break;
    }
    remember_end(message);
    outbox_.pop_front();
  }
  stats_.outbox_messages = outbox_.size();
}

void WorkerRuntime::Impl::pump() {
  if (!socket_) return;
  int handled = 0;
  while (socket_) {
    const auto events = socket_->get(zmq::sockopt::events);
    if (!outbox_.empty() && (events & ZMQ_POLLOUT)) flush_outbox();
    if (!(events & ZMQ_POLLIN)) break;
    if (!incoming_.receive(*socket_, /*routed=*/false)) break;
    handle_incoming();
    if (++handled >= kMaxMessagesPerPump) {
      request_pump(std::chrono::milliseconds(0));
      return;
    }
  }
  if (socket_ && !outbox_.empty()) request_pump(kOutboxRetry);
}

// ---- what the broker sends -------------------------------------------------------------------

void WorkerRuntime::Impl::handle_incoming() {
  last_heard_ = loop_.clock().now();
  reconnect_delay_ = options_.reconnect_min;
  auto parsed = incoming_.parse();
  if (!parsed) {
    log_bad_input("frames", parsed.error().message);
    return;
  }
  const auto& frame = parsed.value();
  switch (frame.command) {
    case proto::Command::job:
      handle_job(frame.header, frame.payload);
      // The request is decoded: its bytes need not wait for the next message to be freed.
      incoming_.frame(kPayloadFrame).rebuild();
      break;
    case proto::Command::cancel:
      handle_cancel(frame.header);
      break;
    case proto::Command::heartbeat:
      break;  // last_heard_ already updated
    case proto::Command::disconnect:
      rejoin();
      break;
    case proto::Command::rejected:
      handle_rejected(frame.header);
      break;
    default:
      log_bad_input("command", std::string(proto::to_string(frame.command)));
      break;
  }
}

void WorkerRuntime::Impl::handle_job(std::string_view header_bytes, std::string_view payload) {
  // Leaving: what the broker still sends goes back to its queue with our disconnect.
  if (stopping_) return;
  auto header = proto::decode<proto::JobHeader>(header_bytes);
  if (!header) {
    log_bad_input("job header", header.error().message);
    return;
  }
  const proto::JobHeader& job = header.value();
  auto request = proto::decode<proto::Request>(payload);
  if (!request) {
    proto::Error error;
    error.kind = proto::ErrorKind::invalid_request;
    error.code = std::string(proto::to_string(request.error().code));
    error.message = "undecodable request: " + request.error().message;
    refuse_job(job, std::move(error));
    return;
  }
  // Before anything is built for it: a request that would cost too much is refused here.
  if (auto size =
          check_request_body_size(request.value(), payload.size(), config_.max_request_bytes);
      !size) {
    proto::Error error;
    error.kind = size.error().kind;
    error.code = size.error().code;
    error.message = size.error().message;
    error.provider = request.value().provider;
    error.model = request.value().model;
    refuse_job(job, std::move(error));
    return;
  }
  start_job_run(job, std::move(request).value());
}

void WorkerRuntime::Impl::refuse_job(const proto::JobHeader& job, proto::Error error) {
  spdlog::info("job {} trace {}: refused: {} ({})", job.job_id, trace_id_of(job.traceparent),
               error.message, error.code);
  if (options_.metrics != nullptr) {
    options_.metrics->job_failed(error, error.provider, error.model, std::chrono::nanoseconds{0});
  }
  FinalMessage final = encode_error(std::move(error));
  send(final.command, proto::encode(proto::JobEnd{job.job_id, job.delivery}),
       std::move(final.payload));
}

void WorkerRuntime::Impl::start_job_run(const proto::JobHeader& job, proto::Request request) {
  if (auto it = jobs_.find(job.job_id); it != jobs_.end()) {
    // A duplicate of a delivery we still run is ignored. A finished entry (erased on a later
    // loop turn) or an older delivery is superseded: after a broker restart the same job may
    // come back with delivery 1 and must run again.
    if (!it->second.finished && it->second.delivery >= job.delivery) return;
    jobs_.erase(it);
  }
  RunningJob& running = jobs_[job.job_id];
  running.delivery = job.delivery;
  running.forwarder = std::make_unique<JobForwarder>(*this, job.job_id, job.delivery, request);
  JobContext context{loop_,   launcher_,         breakers_,        random_,
                     config_, &health_reporter_, job.open_targets, job.traceparent};
  // The job header decides whether chunks go out (the broker copies Submit.stream into it);
  // Request.stream is the client's note of the same wish.
  running.runner =
      start_job(context, job.job_id, std::move(request), job.stream, *running.forwarder);
}

void WorkerRuntime::Impl::handle_rejected(std::string_view header_bytes) {
  auto rejected = proto::decode<proto::Rejected>(header_bytes);
  if (rejected && rejected.value().code == "unknown_command") {
    // provider_health is the one command we send that an older broker does not know. It works
    // without: each worker finds out about limits alone, as before.
    if (broker_takes_health_) {
      spdlog::info(
          "the broker does not take provider_health reports (an older broker): not "
          "sending them on this connection");
    }
    broker_takes_health_ = false;
    return;
  }
  spdlog::warn("broker rejected our message: {}",
               rejected ? rejected.value().message : std::string("(undecodable)"));
}

void WorkerRuntime::Impl::send_health(const proto::ProviderHealth& report) {
  if (!broker_takes_health_ || stopping_) return;
  ++stats_.health_reports;
  send(proto::Command::provider_health, proto::encode(report));
}

void WorkerRuntime::Impl::handle_cancel(std::string_view header_bytes) {
  auto cancel = proto::decode<proto::Cancel>(header_bytes);
  if (!cancel) {
    log_bad_input("cancel", cancel.error().message);
    return;
  }
  auto it = jobs_.find(cancel.value().job_id);
  if (it == jobs_.end() || it->second.finished) {
    answer_unknown_cancel(cancel.value().job_id);
    return;
  }
  it->second.runner->cancel();
}

// The broker may hold a delivery of this job pinned to us (we lost it in a restart, or its
// result crossed the cancel): the answer lets it release the job. Delivery 0 says "none of
// yours" (PROTOCOL.md, "Workers").
void WorkerRuntime::Impl::answer_unknown_cancel(const std::string& job_id) {
  if (!unknown_cancel_answers_.take(loop_.clock().now())) {
    ++stats_.unknown_cancels_suppressed;
    return;
  }
  ++stats_.unknown_cancels_answered;
  proto::Error error;
  error.kind = proto::ErrorKind::cancelled;
  error.code = "unknown_job";
  error.message = "this worker holds no job " + printable(job_id, proto::Limits::max_job_id);
  send(proto::Command::error, proto::encode(proto::JobEnd{job_id, 0}), proto::encode(error));
}

// Called from inside the job's own forwarder: the runner is destroyed on a later loop turn.
void WorkerRuntime::Impl::job_finished(const std::string& job_id, uint32_t delivery) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.delivery != delivery) return;
  it->second.finished = true;
  loop_.post([this, job_id, delivery] {
    auto found = jobs_.find(job_id);
    if (found != jobs_.end() && found->second.delivery == delivery && found->second.finished) {
      jobs_.erase(found);
    }
    if (draining_ && running_jobs() == 0) finish_drain("drained", flush_deadline());
  });
}

std::size_t WorkerRuntime::Impl::running_jobs() const {
  return static_cast<std::size_t>(std::count_if(
      jobs_.begin(), jobs_.end(), [](const auto& entry) { return !entry.second.finished; }));
}

void WorkerRuntime::Impl::log_bad_input(std::string_view what, const std::string& detail) {
  auto now = loop_.clock().now();
  if (now - last_bad_input_log_ < std::chrono::seconds(1)) {
    ++suppressed_bad_input_;
    return;
  }
  spdlog::warn("ignored malformed {} from broker: {} ({} similar suppressed)", what, detail,
               suppressed_bad_input_);
  suppressed_bad_input_ = 0;
  last_bad_input_log_ = now;
}

// ---- liveness --------------------------------------------------------------------------------

// Ticks twice per interval, so that the gap between two messages we send stays within 1.5
// intervals (a tick per interval lets it reach 2, eating half of the broker's margin).
Clock::duration WorkerRuntime::Impl::tick_period() const {
  return std::max<Clock::duration>(options_.heartbeat_interval / 2, std::chrono::milliseconds(1));
}

void WorkerRuntime::Impl::schedule_heartbeat() {
  tick_due_ = loop_.clock().now() + tick_period();
  loop_.schedule_at(tick_due_, [this] {
    if (stopping_) return;
    on_heartbeat_tick();
    schedule_heartbeat();
  });
}

void WorkerRuntime::Impl::on_heartbeat_tick() {
  auto now = loop_.clock().now();
  // A tick this late means our own loop did not run (stopped, starved of CPU, swapped out): we
  // could not have heard the broker in that time, and what it sent may still be on its way up
  // from libzmq's I/O thread. Judge the broker one tick later, once, instead of now.
  const bool stalled = now - tick_due_ > options_.heartbeat_interval / 2;
  if (!socket_) return;  // a reconnect is scheduled
  // The monitor's fd is edge-like: a wake-up missed while busy must not hide a refusal.
  check_handshakes();
  if (broker_silent(now)) {
    if (stalled && !stall_grace_used_) {
      stall_grace_used_ = true;
      spdlog::info("event loop stalled for {} ms; judging broker liveness on the next tick",
                   ms_between(tick_due_, now));
    } else {
      reconnect();
      return;
    }
  } else {
    stall_grace_used_ = false;
  }
  if (now - last_sent_ >= options_.heartbeat_interval) {
    proto::Heartbeat beat{options_.worker_id, static_cast<uint32_t>(running_jobs())};
    send(proto::Command::heartbeat, proto::encode(beat));
  }
}

// Silence is time since we last *read* a message. A busy loop may not have read what already
// arrived (ZMQ_FD is edge-like, and the wake-up may wait behind thousands of curl sockets), so
// before calling the broker silent, read what is waiting: any message is a sign of life.
bool WorkerRuntime::Impl::broker_silent(Clock::time_point now) {
  const auto window = options_.heartbeat_interval * options_.liveness;
  if (now - last_heard_ <= window) return false;
  if (socket_ && (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) pump();
  return loop_.clock().now() - last_heard_ > window;
}

// ---- drain and signals -----------------------------------------------------------------------

void WorkerRuntime::Impl::watch_signals() {
  signals_.emplace(options_.signals);
  loop_.watch(signals_->fd(), kReadable, [this](uint32_t) { on_signals(); });
}

void WorkerRuntime::Impl::on_signals() {
  for (const int signo : signals_->take()) {
    if (draining_) {
      spdlog::warn("second signal: leaving now");
      // Already flushing the last messages: stop waiting for them.
      if (stopping_) return leave(loop_.clock().now());
      // Leaving now: what is queued gets final_flush_min, not the rest of the drain.
      finish_drain("interrupted", loop_.clock().now() + options_.final_flush_min);
      return;
    }
    spdlog::info("signal {}: draining ({} running, up to {} ms)", signo, running_jobs(),
                 options_.drain_timeout.count());
    begin_drain();
  }
}

void WorkerRuntime::Impl::begin_drain() {
  if (draining_) return;
  draining_ = true;
  drain_deadline_ = loop_.clock().now() + options_.drain_timeout;
  send(proto::Command::credit, proto::encode(proto::Credit{0}));
  if (running_jobs() == 0) {
    finish_drain("drained", flush_deadline());
    return;
  }
  loop_.schedule_at(drain_deadline_, [this] {
    if (!stopping_) finish_drain("drain timeout", flush_deadline());
  });
}

// Results still queued for a slow broker get until the drain deadline - at least
// final_flush_min - to leave, since a result lost here is a job run again at the provider.
Clock::time_point WorkerRuntime::Impl::flush_deadline() const {
  return std::max(drain_deadline_, loop_.clock().now() + options_.final_flush_min);
}

// Jobs still running are left to the broker (it re-queues them on our disconnect); what waits
// in the outbox is flushed until `flush_until`.
void WorkerRuntime::Impl::finish_drain(const char* reason, Clock::time_point flush_until) {
  if (stopping_) return;
  stopping_ = true;
  const std::size_t abandoned = running_jobs();
  jobs_.clear();
  if (abandoned > 0) spdlog::warn("{}: leaving {} job(s) to the broker", reason, abandoned);
  send(proto::Command::disconnect, proto::encode(proto::Disconnect{reason}));
  flush_before_leaving(flush_until);
}

void WorkerRuntime::Impl::flush_before_leaving(Clock::time_point until) {
  flush_outbox();
  if (outbox_.empty() || !socket_ || loop_.clock().now() >= until || broker_unreachable()) {
    if (!outbox_.empty()) {
      spdlog::warn("leaving with {} message(s) the broker did not take", outbox_.size());
    }
    leave(until);
    return;
  }
  loop_.schedule_after(kOutboxRetry, [this, until] { flush_before_leaving(until); });
}

// What libzmq holds still gets until `until` to leave: the socket closes with that linger,
// and the context waits for it when the runtime is destroyed. Unless no broker can take it
// (our handshake was refused): then waiting would only hold the exit.
void WorkerRuntime::Impl::leave(Clock::time_point until) {
  if (socket_) {
    const auto now = loop_.clock().now();
    const bool unreachable = broker_unreachable();
    const uint64_t linger = unreachable ? 0 : std::max<uint64_t>(ms_between(now, until), 1);
    if (unreachable && !outbox_.empty()) {
      spdlog::warn("the broker is unreachable; not waiting for {} message(s)", outbox_.size());
    }
    socket_->set(zmq::sockopt::linger, static_cast<int>(std::min<uint64_t>(linger, 600'000)));
  }
  loop_.stop();
}

// No broker can take what we send: our handshake was refused (CURVE keys). A broker that is
// merely silent still gets until the drain deadline: it may be slow, not gone.
bool WorkerRuntime::Impl::broker_unreachable() {
  return refused_since_success_;
}

// ---- WorkerRuntime ---------------------------------------------------------------------------

WorkerRuntime::WorkerRuntime(WorkerConfig config, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}
WorkerRuntime::~WorkerRuntime() = default;
int WorkerRuntime::run() {
  return impl_->run();
}
void WorkerRuntime::request_drain() {
  impl_->request_drain();
}
const RuntimeStats& WorkerRuntime::stats() const {
  return impl_->stats();
}

void block_termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

uint64_t raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

}  // namespace dispatch::worker
