#include "dispatch/broker/server.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dispatch/protocol/curve.hpp"

namespace dispatch::broker {

namespace {

using std::chrono::milliseconds;

// Messages taken from one socket per loop turn before looking at the other one and at timers,
// so a flood on one socket cannot starve the other.
constexpr int kReceiveBatch = 512;
// Longest sleep between retries while flushing before exit.
constexpr milliseconds kExitFlushPoll{10};
// Longest single poll: timers are re-read at least this often.
constexpr milliseconds kMaxPoll{1'000};
// After the drain: how long buffered replies may take to leave, and the socket linger. Bounded
// so that exit never hangs on a client that stopped reading.
constexpr milliseconds kExitFlush{1'000};
constexpr int kExitLingerMs = 500;
constexpr int kListenBacklog = 1'024;
// How often free heap pages go back to the system (heap_trim.hpp). A trim of the broker's
// few-MiB heap takes well under a millisecond; the loop wakes at least every kMaxPoll, so a
// trim is at most that late.
constexpr std::chrono::seconds kHeapTrimPeriod{10};

// ZeroMQ's fixed address for the ZAP handler of a context (RFC 27).
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

// The handlers reach their wake-ups through lock-free atomic pointers: all they do is write(2).
std::atomic<const WakeupFd*> g_stop{nullptr};
std::atomic<const WakeupFd*> g_reload{nullptr};
static_assert(std::atomic<const WakeupFd*>::is_always_lock_free);

void on_stop_signal(int /*signal*/) {
  const int saved_errno = errno;
  if (const WakeupFd* stop = g_stop.load(std::memory_order_relaxed)) stop->signal();
  errno = saved_errno;
}

void on_reload_signal(int /*signal*/) {
  const int saved_errno = errno;
  if (const WakeupFd* reload = g_reload.load(std::memory_order_relaxed)) reload->signal();
  errno = saved_errno;
}

void set_handler(int signo, void (*handler)(int)) {
  struct sigaction action {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(signo, &action, nullptr);
}

std::string connectable(std::string endpoint) {
  // A wildcard bind reports 0.0.0.0 / [::]; print something a local peer can connect to.
  for (const std::string_view any : {std::string_view("//0.0.0.0:"), std::string_view("//[::]:")}) {
    const auto at = endpoint.find(any);
    if (at != std::string::npos) endpoint.replace(at, any.size(), "//127.0.0.1:");
  }
  return endpoint;
}

void configure_router(zmq::socket_t& socket, int hwm) {
  protocol::apply_protocol_socket_options(socket);  // ZMQ_MAXMSGSIZE
  // An unroutable reply is an error we see (EHOSTUNREACH), not a silent drop; and a full pipe
  // is EAGAIN instead of a silent drop, which is what lets the outbox buffer for slow clients.
  socket.set(zmq::sockopt::router_mandatory, 1);
  // A peer that reconnects with the same explicit routing id takes over the old connection.
  socket.set(zmq::sockopt::router_handover, 1);
  socket.set(zmq::sockopt::sndhwm, hwm);
  socket.set(zmq::sockopt::rcvhwm, hwm);
  socket.set(zmq::sockopt::backlog, kListenBacklog);
  socket.set(zmq::sockopt::linger, 0);
}

}  // namespace

StopSignals::StopSignals(const WakeupFd& stop) {
  g_stop.store(&stop);
  set_handler(SIGTERM, on_stop_signal);
  set_handler(SIGINT, on_stop_signal);
  set_handler(SIGPIPE, SIG_IGN);
}

StopSignals::~StopSignals() {
  set_handler(SIGTERM, SIG_DFL);
  set_handler(SIGINT, SIG_DFL);
  g_stop.store(nullptr);
}

ReloadSignal::ReloadSignal(const WakeupFd& reload) {
  g_reload.store(&reload);
  set_handler(SIGHUP, on_reload_signal);
}

ReloadSignal::~ReloadSignal() {
  set_handler(SIGHUP, SIG_DFL);
  g_reload.store(nullptr);
}

Result<void, std::string> check_exposure(const BrokerConfig& config) {
  if (!config.curve_secret.empty() || config.insecure) return {};
  for (const auto& [role, endpoint] :
       {std::pair{"frontend", &config.frontend}, std::pair{"backend", &config.backend}}) {
    if (protocol::is_loopback_endpoint(*endpoint)) continue;
    return fmt::format(
        "refusing to serve the {} on {} without CURVE keys: anyone who can reach it could submit "
        "jobs, register as a worker and read every prompt. Make keys with `dispatch keygen "
        "keys/broker` (and one pair per client and worker), then start the broker with "
        "--curve-secret keys/broker.key_secret --allow-clients DIR --allow-workers DIR (README, "
        "\"Running across hosts securely\"); or bind a loopback address; or, on a network you "
        "trust, add --insecure",
        role, *endpoint);
  }
  return {};
}

namespace {

// The configuration checked (check_exposure; throws when refused), with `insecure` set only
// when it matters: a plaintext broker that other hosts can reach.
BrokerConfig exposure_checked(BrokerConfig config) {
  if (auto allowed = check_exposure(config); !allowed) throw std::runtime_error(allowed.error());
  config.insecure =
      config.curve_secret.empty() && !(protocol::is_loopback_endpoint(config.frontend) &&
                                       protocol::is_loopback_endpoint(config.backend));
  if (config.insecure) {
    spdlog::warn(
        "--insecure: serving {} and {} in plaintext: anyone who can reach them may submit jobs, "
        "register as a worker and read every prompt (README, \"Running across hosts securely\")",
        config.frontend, config.backend);
  }
  return config;
}

// zmq's own message ("Address already in use") does not say which of the two sockets failed.
void bind_or_explain(zmq::socket_t& socket, std::string_view role, const std::string& endpoint) {
  try {
    socket.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error(fmt::format("cannot bind the {} to {}: {}", role, endpoint, e.what()));
  }
}

}  // namespace

BrokerServer::BrokerServer(BrokerConfig config, std::string broker_id, const Clock& clock)
    : config_(exposure_checked(std::move(config))),
      clock_(clock),
      context_(1),
      frontend_(context_, zmq::socket_type::router),
      backend_(context_, zmq::socket_type::router),
      client_connections_(context_, frontend_),
      outbox_(
          OutboxLimits{config_.client_buffer, config_.client_buffer_bytes},
          [this](std::string_view route, Frames& frames) {
            return try_send(frontend_, route, frames);
          },
          clock_),
      core_(config_, std::move(broker_id), clock_, *this),
      heap_trimmer_(kHeapTrimPeriod, clock_) {
  configure_router(frontend_, config_.hwm);
  configure_router(backend_, config_.hwm);
  // The ZAP handler must be there before a socket binds: a handshake that finds none is let in.
  if (!config_.curve_secret.empty()) start_curve();
  bind_sockets();
}

BrokerServer::~BrokerServer() = default;

void BrokerServer::start_curve() {
  auto keys = protocol::load_certificate(config_.curve_secret, true);
  if (!keys) throw std::runtime_error(keys.error());
  auth_.emplace(config_.allow, clock_);
  if (auto loaded = auth_->reload(); !loaded) {
    throw std::runtime_error("cannot read the allow-lists: " + loaded.error());
  }
  if (config_.allow.empty()) {
    spdlog::warn("CURVE is on but no --allow-* directory is given: every peer will be refused");
  }
  zap_ = zmq::socket_t(context_, zmq::socket_type::rep);
  zap_.set(zmq::sockopt::linger, 0);
  zap_.bind(kZapEndpoint);
  protocol::make_curve_server(frontend_, *keys, std::string(kFrontendZapDomain));
  protocol::make_curve_server(backend_, *keys, std::string(kBackendZapDomain));
  // With handover a peer that names a routing id in use (ZMQ_ROUTING_ID) takes that connection
  // over, and with it what is sent there: another identity could take a client's answers or a
  // worker's jobs. Authenticated peers keep the routing ids libzmq makes up.
  frontend_.set(zmq::sockopt::router_handover, 0);
  backend_.set(zmq::sockopt::router_handover, 0);
  spdlog::info("CURVE on: broker public key {} (from {})", keys->public_key, config_.curve_secret);
}

void BrokerServer::bind_sockets() {
  bind_or_explain(frontend_, "frontend", config_.frontend);
  bind_or_explain(backend_, "backend", config_.backend);
  frontend_endpoint_ = connectable(frontend_.get(zmq::sockopt::last_endpoint));
  backend_endpoint_ = connectable(backend_.get(zmq::sockopt::last_endpoint));
}

void BrokerServer::reload_allow_lists() {
  if (!auth_) {
    spdlog::info("SIGHUP: no allow-lists to read (the broker runs without --curve-secret)");
    return;
  }
  if (auto loaded = auth_->reload(); !loaded) {
    spdlog::error("SIGHUP: allow-lists not reloaded, the previous ones stay in force: {}",
                  loaded.error());
    return;
  }
  core_.revoke_workers([this](std::string_view key) {
    const Identity* identity = auth_->identity(key);
    return identity == nullptr ? Roles{0} : identity->roles;
  });
}

Peer BrokerServer::peer_of(protocol::IncomingMessage& incoming) {
  const std::string_view route = incoming.routing_id();
  if (!auth_) return Peer::plaintext(route);
  // The routing-id frame is made up by the ROUTER itself and carries no metadata; every frame
  // that came over the connection carries the ZAP user id.
  const char* user_id =
      incoming.frame_count() >= 2 ? zmq_msg_gets(incoming.frame(1).handle(), "User-Id") : nullptr;
  unlisted_user_id_ = user_id != nullptr ? user_id : "";
  return auth_->peer(route, unlisted_user_id_);
}

void BrokerServer::answer_zap() {
  for (int i = 0; i < kReceiveBatch; ++i) {
    std::vector<zmq::message_t> request(1);
    if (!zap_.recv(request.back(), zmq::recv_flags::dontwait)) return;
    while (request.back().more()) {
      request.emplace_back();
      (void)zap_.recv(request.back());
    }
    std::vector<std::string_view> frames;
    frames.reserve(request.size());
    for (const zmq::message_t& frame : request) frames.push_back(view(frame));
    const std::vector<std::string> reply = auth_->answer(frames);
    for (std::size_t f = 0; f < reply.size(); ++f) {
      zap_.send(zmq::buffer(reply[f]),
                f + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

void BrokerServer::send_to_client(std::string_view route, protocol::Command command,
                                  Frames frames) {
  outbox_.send(route, command, std::move(frames));
}

SendStatus BrokerServer::send_to_worker(std::string_view route, Frames frames) {
  return try_send(backend_, route, frames);
}

bool BrokerServer::worker_input_pending() {
  return (backend_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
}

SendStatus BrokerServer::try_send(zmq::socket_t& socket, std::string_view route, Frames& frames) {
  // Only the routing frame can fail: libzmq checks the peer and its high-water mark there and
  // then takes the rest of the multipart message unconditionally.
  try {
    const auto sent = socket.send(zmq::const_buffer(route.data(), route.size()),
                                  zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!sent) return SendStatus::would_block;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendStatus::unreachable;
    throw;
  }
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    (void)socket.send(frames[i], flags);
  }
  return SendStatus::sent;
}

void BrokerServer::receive_batch(zmq::socket_t& socket, protocol::IncomingMessage& incoming,
                                 bool frontend) {
  for (int i = 0; i < kReceiveBatch; ++i) {
    if (!incoming.receive(socket, true)) return;
    const std::size_t count = incoming.protocol_frames().size();
    const Peer peer = peer_of(incoming);
    Frames frames;
    frames.reserve(count);
    // Frame 0 is the routing id; the protocol frames are moved out, not copied.
    for (std::size_t f = 1; f <= count; ++f) frames.push_back(std::move(incoming.frame(f)));
    if (frontend) {
      core_.on_frontend(peer, std::move(frames));
    } else {
      core_.on_backend(peer, std::move(frames));
    }
  }
}

std::chrono::milliseconds BrokerServer::poll_wait() const {
  const auto now = clock_.now();
  auto wait = std::chrono::duration_cast<milliseconds>(core_.next_timer() - now);
  // Round up: waking a millisecond early would only spin.
  if (core_.next_timer() > now + wait) wait += milliseconds(1);
  wait = std::clamp(wait, milliseconds(0), kMaxPoll);
  if (outbox_.has_backlog()) {
    const auto retry = std::chrono::ceil<milliseconds>(outbox_.next_retry() - now);
    wait = std::clamp(retry, milliseconds(0), wait);
  }
  return wait;
}

void BrokerServer::on_stop_request(const WakeupFd& stop, unsigned long long& requests) {
  requests += stop.drain();
  if (requests >= 2) {
    spdlog::info("second stop request: ending the drain now");
    core_.end_drain();
  } else if (requests == 1) {
    core_.begin_drain();
  }
}

void BrokerServer::run(const WakeupFd* stop, const WakeupFd* reload) {
  enum Slot : std::size_t { kBackend, kFrontend, kZap, kConnections, kStop, kReload, kSlots };
  std::array<int, kSlots> at{};
  at.fill(-1);
  std::vector<zmq::pollitem_t> items;
  const auto add = [&](Slot slot, void* socket, int fd) {
    at[slot] = static_cast<int>(items.size());
    items.push_back({socket, fd, ZMQ_POLLIN, 0});
  };
  add(kBackend, backend_.handle(), 0);
  add(kFrontend, frontend_.handle(), 0);
  if (auth_) add(kZap, zap_.handle(), 0);
  add(kConnections, client_connections_.socket().handle(), 0);
  if (stop != nullptr) add(kStop, nullptr, stop->fd());
  if (reload != nullptr) add(kReload, nullptr, reload->fd());
  const auto ready = [&](Slot slot) {
    return at[slot] >= 0 && (items[static_cast<std::size_t>(at[slot])].revents & ZMQ_POLLIN) != 0;
  };
  unsigned long long stop_requests = 0;
  while (true) {
    core_.on_timer();
    if (core_.drained()) break;
    heap_trimmer_.maybe_trim();
    try {
      zmq::poll(items.data(), items.size(), poll_wait());
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal: its wake-up is pending
    }
    if (ready(kStop)) on_stop_request(*stop, stop_requests);
    if (ready(kReload)) {
      reload->drain();
      reload_allow_lists();
      if (on_reload_) on_reload_(core_);
    }
    // Handshakes wait for their ZAP answers; then workers, whose results free slots for the
    // submits that follow.
    if (ready(kZap)) answer_zap();
    if (ready(kConnections)) count_client_connections();
    if (ready(kBackend)) receive_batch(backend_, backend_in_, false);
    if (ready(kFrontend)) receive_batch(frontend_, frontend_in_, true);
    if (outbox_.has_backlog()) outbox_.flush();
  }
  flush_before_exit();
}

void BrokerServer::count_client_connections() {
  const ConnectionMonitor::Changes changes = client_connections_.read();
  if (metrics_ != nullptr) {
    metrics_->client_connections(changes.accepted, client_connections_.open());
  }
}

void BrokerServer::flush_before_exit() {
  const auto deadline = clock_.now() + kExitFlush;
  while (outbox_.has_backlog() && clock_.now() < deadline) {
    // A ROUTER's POLLOUT only says that some pipe has room, so wait for the next due retry.
    const auto until_retry = outbox_.next_retry() - clock_.now();
    std::this_thread::sleep_for(
        std::clamp<Clock::duration>(until_retry, Clock::duration::zero(), kExitFlushPoll));
    outbox_.flush();
  }
  if (outbox_.has_backlog()) {
    spdlog::warn("exiting with {} undelivered client message(s)", outbox_.backlog_messages());
  }
  // Let what ZeroMQ still holds (final replies, disconnects) reach the peers, boundedly.
  frontend_.set(zmq::sockopt::linger, kExitLingerMs);
  backend_.set(zmq::sockopt::linger, kExitLingerMs);
}

}  // namespace dispatch::broker
