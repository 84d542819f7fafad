#pragma once

// HTTP transfers over libcurl's multi socket API, driven by the EventLoop: O(active) work per
// wake-up, thousands of transfers in flight, keep-alive connection reuse (HTTP/2 where the
// server offers it over TLS). Single-threaded: call everything on the loop thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "dispatch/worker/event_loop.hpp"
#include "dispatch/worker/http.hpp"

namespace dispatch::worker {

// Receives one transfer's progress. Callbacks run on the loop thread, never re-entrantly from
// HttpEngine::start().
class TransferListener {
 public:
  virtual ~TransferListener() = default;
  // Status line and all headers of the final response have arrived (1xx are skipped).
  virtual void on_response_start(int status, const HttpHeaders& headers) = 0;
  virtual void on_body(std::string_view bytes) = 0;
  // Exactly once per transfer unless it was cancelled: nullopt = complete at the HTTP level.
  virtual void on_complete(const std::optional<TransportError>& error) = 0;
};

using TransferId = uint64_t;

struct HttpEngineOptions {
  long max_host_connections = 0;   // 0 = unlimited (CURLMOPT_MAX_HOST_CONNECTIONS)
  long max_total_connections = 0;  // 0 = unlimited
  long connection_cache = 20000;   // CURLMOPT_MAXCONNECTS: idle keep-alive connections kept
  bool verbose = false;
};

class HttpEngine {
 public:
  explicit HttpEngine(EventLoop& loop, HttpEngineOptions options = {});
  ~HttpEngine();  // aborts every transfer without callbacks
  HttpEngine(const HttpEngine&) = delete;
  HttpEngine& operator=(const HttpEngine&) = delete;

  // The listener must outlive the transfer (until on_complete or cancel).
  TransferId start(HttpRequest request, const TransferOptions& options, TransferListener& listener);
  // Aborts at once; no callback follows. Safe to call from inside this transfer's callbacks.
  // Unknown or finished ids are ignored.
  void cancel(TransferId id);

  std::size_t active_transfers() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Maps a curl result code to the taxonomy (network / timeout / cancelled / internal).
TransportError classify_curl_error(int curl_code, std::string_view curl_message);

}  // namespace dispatch::worker
