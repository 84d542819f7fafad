#pragma once

// dispatch-gateway's HTTP server: Boost.Asio + Beast on a fixed number of threads, each running
// its own io_context; a connection lives on one of them (round-robin) for its whole life. Every
// job is submitted through one BrokerLink.
//
//   POST /v1/chat/completions   OpenAI chat completions (stream or not)
//   POST /v1/messages           Anthropic messages (stream or not)
//   GET  /v1/models             aliases and configured provider/model names
//   GET  /healthz, /readyz      alive; broker answering with a worker registered
//   GET  /metrics               counters, Prometheus text format
//   GET  /status, /status.json  the live status page, and the broker status it polls
//
// Hostile HTTP is answered and closed, never a crash: malformed requests 400, headers over
// limits.max_header_bytes 431, bodies over limits.max_body_bytes 413, a request whose headers
// do not arrive within limits.header_timeout 408, connections over limits.max_connections 503.
// Pipelined requests are answered in order.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dispatch/common/clock.hpp"
#include "dispatch/gateway/broker_link.hpp"
#include "dispatch/gateway/config.hpp"
#include "dispatch/gateway/metrics.hpp"

namespace dispatch::gateway {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: an ephemeral port
  int threads = 2;
  std::chrono::milliseconds readiness_timeout{1000};  // /readyz: how long the broker may take
};

class Server {
 public:
  Server(ServerOptions options, const GatewayConfig& config, BrokerLink& link,
         const Clock& clock = SystemClock::instance());
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the threads; returns the bound port. Throws std::system_error
  // when the address cannot be bound.
  uint16_t start();
  // Stops accepting; connections waiting for a request close, requests in progress finish
  // (their connections then close) and new requests on open connections get 503.
  void begin_drain();
  // Connections still open (drain is over when it reaches 0).
  std::size_t open_connections() const;
  // Closes everything at once and joins the threads. The io_contexts live on until the
  // Server is destroyed, so callbacks the BrokerLink still delivers are dropped harmlessly.
  void stop();

  GatewayMetrics& metrics();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dispatch::gateway
