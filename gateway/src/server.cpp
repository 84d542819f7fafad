#include "dispatch/gateway/server.hpp"

#include <fmt/format.h>

#include <atomic>
#include <thread>
#include <vector>

#include "dispatch/gateway/responder.hpp"
#include "server_core.hpp"

namespace dispatch::gateway {

namespace net = boost::asio;
using boost::system::error_code;
using tcp = net::ip::tcp;

std::optional<uint64_t> LogLimiter::permit() {
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= per_second_) {
    ++dropped_;
    return std::nullopt;
  }
  ++in_window_;
  return std::exchange(dropped_, 0);
}

ServerCore::ServerCore(const GatewayConfig& config, BrokerLink& link, const Clock& clock,
                       std::chrono::milliseconds readiness_timeout)
    : limits_(config.limits),
      admitter_(config),
      link_(link),
      clock_(clock),
      readiness_timeout_(readiness_timeout),
      warnings_(clock, 10),
      readiness_([&link, readiness_timeout] { return link.status(readiness_timeout); },
                 readiness_timeout, clock) {}

void ServerCore::add(const std::shared_ptr<Connection>& connection) {
  std::lock_guard lock(mutex_);
  connections_[connection.get()] = connection;
}

void ServerCore::remove(const Connection* connection) {
  std::lock_guard lock(mutex_);
  connections_.erase(connection);
}

std::vector<std::shared_ptr<Connection>> ServerCore::connections() const {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard lock(mutex_);
  for (const auto& [raw, weak] : connections_) {
    if (auto connection = weak.lock()) out.push_back(std::move(connection));
  }
  return out;
}

std::size_t ServerCore::connection_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

// One event loop per I/O thread, never one loop shared by all of them. A shared io_context
// parks its idle threads on a condition variable and wakes one per event: at 1,000 req/s the
// profile spent more time in those wake-ups and futexes than in HTTP. Here each thread runs
// its own io_context; the acceptor lives on the first, and each accepted connection goes to
// the next context round-robin and stays there for its life (socket, timer, and every handler
// the BrokerLink and the readiness probe post to the socket's executor). One thread per
// context serializes a connection's handlers the way a strand did, without a strand's lock.
// The link attaches to every context before it runs (LoopBrokerLink: a broker connection per
// context, so a job never leaves its HTTP connection's thread inside the gateway) and detaches
// once all have stopped.
class Server::Impl {
 public:
  Impl(ServerOptions options, const GatewayConfig& config, BrokerLink& link, const Clock& clock)
      : options_(std::move(options)),
        core_(config, link, clock, options_.readiness_timeout),
        contexts_(make_contexts(options_.threads)),
        acceptor_(*contexts_.front()),
        backoff_(*contexts_.front()) {
    // The refusal a connection over the limit gets, rendered once.
    refusal_ = error_response(
        Api::openai,
        formats::http_error(503,
                            fmt::format("the gateway is at its connection limit ({})",
                                        config.limits.max_connections),
                            "too_many_connections"),
        false, false);
  }

  ~Impl() {
    stop();
    // Its callers post into the io_contexts: they must be done before the io_contexts go.
    core_.readiness().shutdown();
  }

  uint16_t start() {
    const tcp::endpoint endpoint(net::ip::make_address(options_.host), options_.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(net::socket_base::max_listen_connections);
    accept();
    for (auto& context : contexts_) core_.link().attach(*context);
    attached_ = true;
    for (auto& context : contexts_) {
      // A context with no connection yet has no work, and run() would return at once.
      idle_guards_.push_back(net::make_work_guard(*context));
      threads_.emplace_back([&context = *context] { run_thread(context); });
    }
    return acceptor_.local_endpoint().port();
  }

  void begin_drain() {
    core_.set_draining();
    net::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
    });
    for (const auto& connection : core_.connections()) connection->drain();
  }

  std::size_t open_connections() const { return core_.connection_count(); }

  void stop() {
    if (stopped_.exchange(true)) return;
    idle_guards_.clear();
    for (auto& context : contexts_) context->stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    if (attached_) core_.link().detach();
  }

  GatewayMetrics& metrics() { return core_.metrics(); }

 private:
  // A handler that throws (out of memory, a bug) costs its connection, never the thread: the
  // exception is logged and the thread goes back to serving the others.
  static void run_thread(net::io_context& context) {
    for (;;) {
      try {
        context.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("an HTTP handler failed: {}", e.what());
      }
    }
  }

  void accept() {
    acceptor_.async_accept(next_context(), [this](error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      if (ec) {
        // Out of descriptors, most likely: back off instead of spinning on the same error.
        if (const auto dropped = core_.warnings().permit()) {
          spdlog::warn(
              "accept failed: {}{}", ec.message(),
              *dropped == 0 ? "" : fmt::format(" ({} similar lines suppressed)", *dropped));
        }
        backoff_.expires_after(std::chrono::milliseconds(50));
        backoff_.async_wait([this](error_code) { accept(); });
        return;
      }
      if (core_.connection_count() >= core_.limits().max_connections || core_.draining()) {
        refuse(std::move(socket));
      } else {
        auto connection = std::make_shared<Connection>(core_, std::move(socket));
        core_.add(connection);
        connection->start();
      }
      accept();
    });
  }

  // Hint 1: each context is run by one thread, which lets Asio keep the handlers that thread
  // posts to itself in a thread-private queue (the LoopBrokerLink's callbacks run on the same
  // thread). Other threads (the readiness probe's) still post into it, so it stays locking.
  static std::vector<std::unique_ptr<net::io_context>> make_contexts(int threads) {
    std::vector<std::unique_ptr<net::io_context>> contexts;
    for (int i = 0; i < std::max(1, threads); ++i) {
      contexts.push_back(std::make_unique<net::io_context>(1));
    }
    return contexts;
  }

  // Only the accept handler calls it, and the acceptor's context has one thread.
  net::io_context& next_context() {
    net::io_context& context = *contexts_[next_context_];
    next_context_ = (next_context_ + 1) % contexts_.size();
    return context;
  }

  // A connection over the limit: the canned 503 with one non-blocking write, then close. The
  // refusal is a few hundred bytes, which a fresh socket's send buffer always takes.
  void refuse(tcp::socket socket) {
    ++core_.metrics().connections_refused;
    core_.metrics().count_status(kNoEndpoint, 503);
    error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(net::buffer(refusal_), ignored);
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
    if (const auto dropped = core_.warnings().permit()) {
      spdlog::warn("refused a connection: {} open (limit {}){}", core_.connection_count(),
                   core_.limits().max_connections,
                   *dropped == 0 ? "" : fmt::format(" ({} similar lines suppressed)", *dropped));
    }
  }

  ServerOptions options_;
  ServerCore core_;  // before the io_contexts: connections destroyed with them use the core
  std::string refusal_;
  std::vector<std::unique_ptr<net::io_context>> contexts_;  // one per thread, never empty
  std::size_t next_context_ = 0;                            // where the next connection goes
  std::vector<net::executor_work_guard<net::io_context::executor_type>> idle_guards_;
  tcp::acceptor acceptor_;
  net::steady_timer backoff_;
  std::vector<std::thread> threads_;
  bool attached_ = false;  // the link has set itself up on the contexts
  std::atomic<bool> stopped_{false};
};

Server::Server(ServerOptions options, const GatewayConfig& config, BrokerLink& link,
               const Clock& clock)
    : impl_(std::make_unique<Impl>(std::move(options), config, link, clock)) {}
Server::~Server() = default;
uint16_t Server::start() {
  return impl_->start();
}
void Server::begin_drain() {
  impl_->begin_drain();
}
std::size_t Server::open_connections() const {
  return impl_->open_connections();
}
void Server::stop() {
  impl_->stop();
}
GatewayMetrics& Server::metrics() {
  return impl_->metrics();
}

}  // namespace dispatch::gateway
