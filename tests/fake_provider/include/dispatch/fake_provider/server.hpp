#pragma once

// The fake provider: an asynchronous HTTP/1.1 server (Boost.Asio/Beast, C++20 coroutines) on a
// small fixed number of threads that speaks the five provider wire formats with scripted
// faults. One coroutine per connection — thousands of idle or streaming connections cost a few
// kilobytes each, not a thread each.
//
//   dispatch::fake_provider::Server server({.port = 0});
//   uint16_t port = server.start();   // bound and serving
//   ...
//   server.stop();                    // or let the destructor do it

#include <cstdint>
#include <memory>
#include <string>

#include "dispatch/common/clock.hpp"
#include "dispatch/fake_provider/quota.hpp"

namespace dispatch::fake_provider {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port
  int threads = 1;
  int64_t default_tokens = 8;  // completion tokens when no `tokens=N` directive
  std::string required_key;    // empty: any non-empty key is accepted
  bool quiet = false;          // no per-attempt log lines
  // Per-API-key quotas (--limit-rpm / --limit-tpm); zero: unlimited.
  QuotaLimits limits;
  // Bursts of thousands of connects must not overflow the accept queue (somaxconn is 4096).
  int backlog = 4096;
  size_t log_capacity = 200'000;             // attempt records kept for /_fake/log
  size_t max_body_bytes = 64 * 1024 * 1024;  // image payloads are large
  const Clock* clock = &SystemClock::instance();
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the threads. Returns the bound port. Throws std::system_error
  // when the address cannot be bound.
  uint16_t start();
  // Stops accepting, drops every connection and joins the threads. Idempotent.
  void stop();
  uint16_t port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in effect.
uint64_t raise_open_file_limit();

}  // namespace dispatch::fake_provider
