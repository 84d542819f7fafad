#include "dispatch/worker/runtime/worker_runtime.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "dispatch/worker/event_loop.hpp"
#include "dispatch/worker/http_engine.hpp"
#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "dispatch/worker/policy/job_runner.hpp"
#include "dispatch/worker/providers/launcher.hpp"

#ifndef DISPATCH_VERSION
#define DISPATCH_VERSION "dev"
#endif

namespace dispatch::worker {
namespace {

namespace proto = dispatch::protocol;
using Clock = dispatch::Clock;

// Bounds how many messages one wake-up drains from the broker socket before the loop gives
// curl a turn; the rest is picked up by a posted continuation (ZMQ_FD will not fire again).
constexpr int kMaxMessagesPerPump = 512;
// Messages queued for the broker while its pipe is full or while we reconnect. Results are never
// dropped; chunks are dropped past this bound (the final result still carries the whole answer).
constexpr std::size_t kOutboxChunkBound = 200'000;
// Most deliveries listed in a `ready` (the protocol's array limit is 100,000); any beyond are
// redelivered by the broker, which is correct, only slower.
constexpr std::size_t kMaxHeldJobsListed = 50'000;
// Results and errors handed to libzmq recently are kept for a reconnect (see connect()); bounded
// in count and bytes, oldest dropped first.
constexpr std::size_t kMaxRecentEnds = 20'000;
constexpr std::size_t kMaxRecentEndBytes = 64u << 20;

std::string random_hex(std::size_t digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  DefaultRandom random;
  std::string out(digits, '0');
  for (auto& c : out) c = kHex[static_cast<int>(random.uniform() * 16) & 15];
  return out;
}

std::string host_name() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0) return "unknown";
  return buf.data();
}

struct OutMessage {
  proto::Command command;
  std::string header;
  std::string payload;
  // For result / error: the delivery it ends. A reconnect lists it as still held, so that the
  // broker keeps the delivery and accepts the result when it follows the new `ready`.
  std::string job_id;
  uint32_t delivery = 0;
};

}  // namespace

class WorkerRuntime::Impl {
 public:
  Impl(WorkerConfig config, RuntimeOptions options)
      : config_(std::move(config)),
        options_(std::move(options)),
        engine_(loop_),
        launcher_(engine_, loop_, config_),
        breakers_(loop_.clock()),
        context_(1) {
    if (options_.concurrency == 0) options_.concurrency = config_.concurrency;
    if (options_.concurrency == 0) options_.concurrency = 1;
    if (options_.worker_id.empty()) {
      options_.worker_id = host_name() + ":" + std::to_string(getpid()) + ":" + random_hex(6);
    }
    for (const auto& [name, provider] : config_.providers) providers_.push_back(name);
  }

  ~Impl() {
    jobs_.clear();  // runners abort silently before the engine goes
    close_socket();
    if (signal_fd_ >= 0) {
      loop_.unwatch(signal_fd_);
      ::close(signal_fd_);
    }
  }

  int run() {
    open_signal_fd();
    connect();
    schedule_heartbeat();
    spdlog::info("worker {} serving [{}] with capacity {} via {}", options_.worker_id,
                 fmt::join(providers_, ", "), options_.concurrency, options_.broker_endpoint);
    loop_.run();
    spdlog::info("worker {} stopped", options_.worker_id);
    return 0;
  }

  void request_drain() {
    loop_.post([this] { begin_drain(); });
  }

 private:
  struct RunningJob;

  // Forwards one job's output to the broker, tagged with its delivery number.
  class Sink final : public JobSink {
   public:
    Sink(Impl& owner, std::string job_id, uint32_t delivery)
        : owner_(owner), job_id_(std::move(job_id)), delivery_(delivery) {}

    void on_chunk(const proto::Chunk& chunk) override {
      proto::ChunkHeader header{chunk, delivery_};
      owner_.send(proto::Command::chunk, proto::encode(header));
    }
    void on_reset(const proto::StreamReset& reset) override {
      proto::ResetHeader header{reset, delivery_};
      owner_.send(proto::Command::reset, proto::encode(header));
    }
    void on_result(proto::Response response) override {
      owner_.send_job_end(proto::Command::result, job_id_, delivery_, proto::encode(response));
      owner_.job_finished(job_id_, delivery_);
    }
    void on_error(proto::Error error) override {
      owner_.send_job_end(proto::Command::error, job_id_, delivery_, proto::encode(error));
      owner_.job_finished(job_id_, delivery_);
    }

   private:
    Impl& owner_;
    std::string job_id_;
    uint32_t delivery_;
  };

  struct RunningJob {
    uint32_t delivery = 0;
    std::unique_ptr<Sink> sink;
    std::unique_ptr<JobRunner> runner;  // declared after sink: destroyed first
    bool finished = false;
  };

  // ---- broker connection -------------------------------------------------------------------

  void connect() {
    socket_.emplace(context_, zmq::socket_type::dealer);
    proto::apply_protocol_socket_options(*socket_);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::sndhwm, 100'000);
    socket_->set(zmq::sockopt::rcvhwm, 100'000);
    socket_->connect(options_.broker_endpoint);
    zmq_fd_ = socket_->get(zmq::sockopt::fd);
    loop_.watch(zmq_fd_, kReadable, [this](uint32_t) { pump(); });
    last_heard_ = loop_.clock().now();
    replay_recent_ends();
    send_ready();
    // The notification fd may already be consumed by the sends above.
    loop_.post([this] { pump(); });
  }

  // What libzmq still holds for the old connection is lost with it; what waits in outbox_ is
  // kept and follows the `ready` on the next connection (see send_ready()).
  void close_socket() {
    if (!socket_) return;
    loop_.unwatch(zmq_fd_);
    socket_->close();
    socket_.reset();
    zmq_fd_ = -1;
  }

  // A result handed to libzmq is not yet at the broker: if the connection is replaced, what
  // libzmq still held for it is gone, and the broker - not having seen that result - would
  // redeliver the job. So the final messages of the last two liveness windows go out again on
  // the new connection, listed in the `ready` as held. A broker that did get the first copy
  // drops the second one (the job is finished there), so the client still gets one answer.
  void remember_end(OutMessage& message) {
    if (message.job_id.empty()) return;
    recent_end_bytes_ += message.header.size() + message.payload.size();
    recent_ends_.push_back({std::move(message), loop_.clock().now()});
    prune_recent_ends();
  }

  void prune_recent_ends() {
    const auto horizon = loop_.clock().now() - 2 * options_.heartbeat_interval * options_.liveness;
    while (!recent_ends_.empty() &&
           (recent_ends_.front().sent_at < horizon || recent_ends_.size() > kMaxRecentEnds ||
            recent_end_bytes_ > kMaxRecentEndBytes)) {
      const OutMessage& oldest = recent_ends_.front().message;
      recent_end_bytes_ -= oldest.header.size() + oldest.payload.size();
      recent_ends_.pop_front();
    }
  }

  void replay_recent_ends() {
    prune_recent_ends();
    if (recent_ends_.empty()) return;
    spdlog::info("sending {} recent result(s) again on the new connection", recent_ends_.size());
    // Ahead of what waits in outbox_ (their jobs are finished; order among jobs is free).
    while (!recent_ends_.empty()) {
      outbox_.push_front(std::move(recent_ends_.back().message));
      recent_ends_.pop_back();
    }
    recent_end_bytes_ = 0;
  }

  void reconnect() {
    spdlog::warn(
        "broker silent for {} ms; reconnecting to {} in {} ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(loop_.clock().now() - last_heard_)
            .count(),
        options_.broker_endpoint, reconnect_delay_.count());
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
  void rejoin() {
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

  // The `ready` lists every delivery we still hold - running, or finished with its result still
  // waiting in outbox_ - so that a broker that knew us keeps those deliveries on this
  // connection instead of redelivering them (PROTOCOL.md, "Workers"). It goes out before
  // anything left over from the previous connection.
  void send_ready() {
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
    loop_.post([this] { pump(); });
  }

  void send_job_end(proto::Command command, const std::string& job_id, uint32_t delivery,
                    std::string payload) {
    enqueue_or_send({command, proto::encode(proto::JobEnd{job_id, delivery}), std::move(payload),
                     job_id, delivery});
  }

  void send(proto::Command command, std::string header, std::string payload = {}) {
    enqueue_or_send({command, std::move(header), std::move(payload), {}, 0});
  }

  // Without a socket (between a reconnect and the next connect) messages wait in outbox_ for
  // the next connection: a job we keep running must not lose its result to a reconnect.
  void enqueue_or_send(OutMessage message) {
    if (stopping_ && !socket_) return;
    last_sent_ = loop_.clock().now();
    if (socket_ && outbox_.empty() &&
        proto::send_message(*socket_, message.command, message.header, message.payload,
                            proto::SendMode::nonblocking)) {
      remember_end(message);
      after_send();
      return;
    }
    if (message.command == proto::Command::chunk && outbox_.size() >= kOutboxChunkBound) {
      ++dropped_chunks_;
      if ((dropped_chunks_ & (dropped_chunks_ - 1)) == 0) {  // log at powers of two
        spdlog::warn("broker pipe full: dropped {} chunk(s) so far (results are kept)",
                     dropped_chunks_);
      }
      return;
    }
    outbox_.push_back(std::move(message));
    if (socket_) loop_.post([this] { pump(); });
  }

  // libzmq may consume the fd notification during a send: look again before sleeping.
  void after_send() {
    if (pump_posted_ || !socket_) return;
    if (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN) {
      pump_posted_ = true;
      loop_.post([this] {
        pump_posted_ = false;
        pump();
      });
    }
  }

  void flush_outbox() {
    while (socket_ && !outbox_.empty()) {
      auto& m = outbox_.front();
      if (!proto::send_message(*socket_, m.command, m.header, m.payload,
                               proto::SendMode::nonblocking)) {
        return;
      }
      remember_end(m);
      outbox_.pop_front();
    }
  }

  void pump() {
    if (!socket_) return;
    int handled = 0;
    while (socket_) {
      auto events = socket_->get(zmq::sockopt::events);
      if (!outbox_.empty() && (events & ZMQ_POLLOUT)) flush_outbox();
      if (!(events & ZMQ_POLLIN)) break;
      if (!incoming_.receive(*socket_, /*routed=*/false)) break;
      handle_incoming();
      if (++handled >= kMaxMessagesPerPump) {
        loop_.post([this] { pump(); });
        return;
      }
    }
    if (socket_ && !outbox_.empty()) {
      // Wait for POLLOUT: the fd signals state changes, so re-check soon.
      loop_.schedule_after(std::chrono::milliseconds(1), [this] { pump(); });
    }
  }

  void handle_incoming() {
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
        break;
      case proto::Command::cancel:
        handle_cancel(frame.header);
        break;
      case proto::Command::heartbeat:
        break;  // last_heard_ already updated
      case proto::Command::disconnect:
        rejoin();
        break;
      case proto::Command::rejected: {
        auto rejected = proto::decode<proto::Rejected>(frame.header);
        spdlog::warn("broker rejected our message: {}",
                     rejected ? rejected.value().message : std::string("(undecodable)"));
        break;
      }
      default:
        log_bad_input("command", std::string(proto::to_string(frame.command)));
        break;
    }
  }

  void handle_job(std::string_view header_bytes, std::string_view payload) {
    auto header = proto::decode<proto::JobHeader>(header_bytes);
    if (!header) {
      log_bad_input("job header", header.error().message);
      return;
    }
    auto& job = header.value();
    auto request = proto::decode<proto::Request>(payload);
    if (!request) {
      proto::Error error;
      error.kind = proto::ErrorKind::invalid_request;
      error.code = std::string(proto::to_string(request.error().code));
      error.message = "undecodable request: " + request.error().message;
      send(proto::Command::error, proto::encode(proto::JobEnd{job.job_id, job.delivery}),
           proto::encode(error));
      return;
    }
    if (auto it = jobs_.find(job.job_id); it != jobs_.end()) {
      // A duplicate of a delivery we still run is ignored. A finished entry (erased on a later
      // loop turn) or an older delivery is superseded: after a broker restart the same job may
      // come back with delivery 1 and must run again.
      if (!it->second.finished && it->second.delivery >= job.delivery) return;
      jobs_.erase(it);
    }
    auto& running = jobs_[job.job_id];
    running.delivery = job.delivery;
    running.sink = std::make_unique<Sink>(*this, job.job_id, job.delivery);
    JobContext context{loop_, launcher_, breakers_, random_, config_};
    running.runner = start_job(context, job.job_id, std::move(request).value(), *running.sink);
  }

  void handle_cancel(std::string_view header_bytes) {
    auto cancel = proto::decode<proto::Cancel>(header_bytes);
    if (!cancel) {
      log_bad_input("cancel", cancel.error().message);
      return;
    }
    auto it = jobs_.find(cancel.value().job_id);
    if (it == jobs_.end() || it->second.finished) return;
    it->second.runner->cancel();
  }

  // Called from inside the job's own sink: the runner is destroyed on a later loop turn.
  void job_finished(const std::string& job_id, uint32_t delivery) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || it->second.delivery != delivery) return;
    it->second.finished = true;
    loop_.post([this, job_id, delivery] {
      auto found = jobs_.find(job_id);
      if (found != jobs_.end() && found->second.delivery == delivery && found->second.finished) {
        jobs_.erase(found);
      }
      if (draining_ && running_jobs() == 0) finish_drain("drained");
    });
  }

  std::size_t running_jobs() const {
    return static_cast<std::size_t>(std::count_if(
        jobs_.begin(), jobs_.end(), [](const auto& entry) { return !entry.second.finished; }));
  }

  void log_bad_input(std::string_view what, const std::string& detail) {
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

  // ---- liveness ----------------------------------------------------------------------------

  // Ticks twice per interval, so that the gap between two messages we send stays within 1.5
  // intervals (a tick per interval lets it reach 2, eating half of the broker's margin).
  Clock::duration tick_period() const {
    return std::max<Clock::duration>(options_.heartbeat_interval / 2, std::chrono::milliseconds(1));
  }

  void schedule_heartbeat() {
    tick_due_ = loop_.clock().now() + tick_period();
    loop_.schedule_at(tick_due_, [this] {
      if (stopping_) return;
      on_heartbeat_tick();
      schedule_heartbeat();
    });
  }

  void on_heartbeat_tick() {
    auto now = loop_.clock().now();
    // A tick this late means our own loop did not run (stopped, starved of CPU, swapped out): we
    // could not have heard the broker in that time, and what it sent may still be on its way up
    // from libzmq's I/O thread. Judge the broker one tick later, once, instead of now.
    const bool stalled = now - tick_due_ > options_.heartbeat_interval / 2;
    if (!socket_) return;  // a reconnect is scheduled
    if (broker_silent(now)) {
      if (stalled && !stall_grace_used_) {
        stall_grace_used_ = true;
        spdlog::info(
            "event loop stalled for {} ms; judging broker liveness on the next tick",
            std::chrono::duration_cast<std::chrono::milliseconds>(now - tick_due_).count());
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
  bool broker_silent(Clock::time_point now) {
    const auto window = options_.heartbeat_interval * options_.liveness;
    if (now - last_heard_ <= window) return false;
    if (socket_ && (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) pump();
    return loop_.clock().now() - last_heard_ > window;
  }

  // ---- drain and signals -------------------------------------------------------------------

  void open_signal_fd() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    signal_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd_ < 0) {
      spdlog::warn("signalfd failed ({}); SIGTERM will not drain gracefully", std::strerror(errno));
      return;
    }
    loop_.watch(signal_fd_, kReadable, [this](uint32_t) {
      signalfd_siginfo info{};
      while (::read(signal_fd_, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        if (draining_) {
          spdlog::warn("second signal: leaving now");
          finish_drain("interrupted");
          return;
        }
        spdlog::info("signal {}: draining ({} running, up to {} ms)", info.ssi_signo,
                     running_jobs(), options_.drain_timeout.count());
        begin_drain();
      }
    });
  }

  void begin_drain() {
    if (draining_) return;
    draining_ = true;
    send(proto::Command::credit, proto::encode(proto::Credit{0}));
    if (running_jobs() == 0) {
      finish_drain("drained");
      return;
    }
    loop_.schedule_after(options_.drain_timeout, [this] {
      if (!stopping_) finish_drain("drain timeout");
    });
  }

  void finish_drain(const char* reason) {
    if (stopping_) return;
    stopping_ = true;
    std::size_t abandoned = running_jobs();
    jobs_.clear();  // abort what is left; the broker re-queues it on our disconnect
    if (abandoned > 0) spdlog::warn("{}: leaving {} job(s) to the broker", reason, abandoned);
    send(proto::Command::disconnect, proto::encode(proto::Disconnect{reason}));
    if (socket_) {
      // Give the disconnect a moment to leave before the socket closes.
      socket_->set(zmq::sockopt::linger, 1000);
      flush_outbox();
    }
    loop_.stop();
  }

  WorkerConfig config_;
  RuntimeOptions options_;
  EventLoop loop_;
  HttpEngine engine_;
  ProviderAttemptLauncher launcher_;
  CircuitBreakers breakers_;
  DefaultRandom random_;
  zmq::context_t context_;
  std::optional<zmq::socket_t> socket_;
  int zmq_fd_ = -1;
  int signal_fd_ = -1;
  proto::IncomingMessage incoming_;
  std::deque<OutMessage> outbox_;
  struct SentEnd {
    OutMessage message;
    Clock::time_point sent_at;
  };
  std::deque<SentEnd> recent_ends_;
  std::size_t recent_end_bytes_ = 0;
  std::vector<std::string> providers_;
  std::unordered_map<std::string, RunningJob> jobs_;
  Clock::time_point last_heard_{};
  Clock::time_point last_sent_{};
  Clock::time_point tick_due_{};
  bool stall_grace_used_ = false;
  Clock::time_point last_bad_input_log_{};
  uint64_t suppressed_bad_input_ = 0;
  uint64_t dropped_chunks_ = 0;
  std::chrono::milliseconds reconnect_delay_ = options_.reconnect_min;
  bool draining_ = false;
  bool stopping_ = false;
  bool pump_posted_ = false;
  bool rejoin_posted_ = false;
};

WorkerRuntime::WorkerRuntime(WorkerConfig config, RuntimeOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}
WorkerRuntime::~WorkerRuntime() = default;
int WorkerRuntime::run() {
  return impl_->run();
}
void WorkerRuntime::request_drain() {
  impl_->request_drain();
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
