#include "dispatch/broker/server.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <thread>

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

std::atomic<int> g_stop_fd{-1};

void on_stop_signal(int /*signal*/) {
  const int saved_errno = errno;
  const int fd = g_stop_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char byte = 1;
    [[maybe_unused]] const ssize_t n = ::write(fd, &byte, 1);
  }
  errno = saved_errno;
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

WakePipe::WakePipe() {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  read_fd_ = fds[0];
  write_fd_ = fds[1];
}

WakePipe::~WakePipe() {
  if (g_stop_fd.load() == write_fd_) g_stop_fd.store(-1);
  ::close(read_fd_);
  ::close(write_fd_);
}

void WakePipe::notify() const noexcept {
  const char byte = 1;
  [[maybe_unused]] const ssize_t n = ::write(write_fd_, &byte, 1);
}

void install_stop_signals(const WakePipe& pipe) {
  // The handler reaches the pipe through a lock-free atomic fd: all it does is write(2).
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  g_stop_fd.store(pipe.write_fd());
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, nullptr);
}

namespace {

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
    : config_(std::move(config)),
      clock_(clock),
      context_(1),
      frontend_(context_, zmq::socket_type::router),
      backend_(context_, zmq::socket_type::router),
      outbox_(
          config_.client_buffer,
          [this](std::string_view route, Frames& frames) {
            return try_send(frontend_, route, frames);
          },
          clock_),
      core_(config_, std::move(broker_id), clock_, *this) {
  configure_router(frontend_, config_.hwm);
  configure_router(backend_, config_.hwm);
  bind_or_explain(frontend_, "frontend", config_.frontend);
  bind_or_explain(backend_, "backend", config_.backend);
  frontend_endpoint_ = connectable(frontend_.get(zmq::sockopt::last_endpoint));
  backend_endpoint_ = connectable(backend_.get(zmq::sockopt::last_endpoint));
}

BrokerServer::~BrokerServer() = default;

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
    Frames frames;
    frames.reserve(count);
    // Frame 0 is the routing id; the protocol frames are moved out, not copied.
    for (std::size_t f = 1; f <= count; ++f) frames.push_back(std::move(incoming.frame(f)));
    const std::string_view route = incoming.routing_id();
    if (frontend) {
      core_.on_frontend(route, std::move(frames));
    } else {
      core_.on_backend(route, std::move(frames));
    }
  }
}

void BrokerServer::run(int stop_fd) {
  zmq::pollitem_t items[] = {
      {backend_.handle(), 0, ZMQ_POLLIN, 0},
      {frontend_.handle(), 0, ZMQ_POLLIN, 0},
      {nullptr, stop_fd, ZMQ_POLLIN, 0},
  };
  const std::size_t item_count = stop_fd >= 0 ? 3 : 2;
  int stop_requests = 0;
  while (true) {
    core_.on_timer();
    if (core_.drained()) break;
    const auto now = clock_.now();
    auto wait = std::chrono::duration_cast<milliseconds>(core_.next_timer() - now);
    // Round up: waking a millisecond early would only spin.
    if (core_.next_timer() > now + wait) wait += milliseconds(1);
    wait = std::clamp(wait, milliseconds(0), kMaxPoll);
    if (outbox_.has_backlog()) {
      const auto retry = std::chrono::ceil<milliseconds>(outbox_.next_retry() - now);
      wait = std::clamp(retry, milliseconds(0), wait);
    }
    try {
      zmq::poll(items, item_count, wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal: its byte is in the pipe
    }
    if (item_count == 3 && (items[2].revents & ZMQ_POLLIN) != 0) {
      char bytes[16];
      ssize_t n = 0;
      while ((n = ::read(stop_fd, bytes, sizeof bytes)) > 0) stop_requests += static_cast<int>(n);
      if (stop_requests >= 2) {
        spdlog::info("second stop request: ending the drain now");
        core_.end_drain();
      } else if (stop_requests == 1) {
        core_.begin_drain();
      }
    }
    // Workers first: their results free slots for the submits that follow.
    if ((items[0].revents & ZMQ_POLLIN) != 0) receive_batch(backend_, backend_in_, false);
    if ((items[1].revents & ZMQ_POLLIN) != 0) receive_batch(frontend_, frontend_in_, true);
    if (outbox_.has_backlog()) outbox_.flush();
  }
  flush_before_exit();
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
