#pragma once

// What the connections of one server share (private to the gateway library). Thread-safe:
// connections run concurrently, each on its own thread's io_context.

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/gateway/admission.hpp"
#include "dispatch/gateway/broker_link.hpp"
#include "dispatch/gateway/metrics.hpp"
#include "dispatch/gateway/readiness.hpp"

namespace dispatch::gateway {

class Connection;

// At most `per_second` warning lines a second for one kind of event; the next line allowed
// says how many were dropped, so a flood of hostile requests cannot flood the log.
class LogLimiter {
 public:
  LogLimiter(const Clock& clock, uint32_t per_second) : clock_(clock), per_second_(per_second) {}
  // The number of lines dropped since the last allowed one, or nullopt: drop this line.
  std::optional<uint64_t> permit();

 private:
  const Clock& clock_;
  const uint32_t per_second_;
  std::mutex mutex_;
  Clock::time_point window_start_{};
  uint32_t in_window_ = 0;
  uint64_t dropped_ = 0;
};

class ServerCore {
 public:
  ServerCore(const GatewayConfig& config, BrokerLink& link, const Clock& clock,
             std::chrono::milliseconds readiness_timeout);

  const HttpLimits& limits() const noexcept { return limits_; }
  const Admitter& admitter() const noexcept { return admitter_; }
  BrokerLink& link() noexcept { return link_; }
  ReadinessProbe& readiness() noexcept { return readiness_; }
  std::chrono::milliseconds readiness_timeout() const noexcept { return readiness_timeout_; }
  GatewayMetrics& metrics() noexcept { return metrics_; }
  const Clock& clock() const noexcept { return clock_; }
  LogLimiter& warnings() noexcept { return warnings_; }

  bool draining() const noexcept { return draining_.load(); }
  void set_draining() noexcept { draining_.store(true); }

  void add(const std::shared_ptr<Connection>& connection);
  void remove(const Connection* connection);
  std::vector<std::shared_ptr<Connection>> connections() const;
  std::size_t connection_count() const;

 private:
  HttpLimits limits_;
  Admitter admitter_;
  BrokerLink& link_;
  const Clock& clock_;
  std::chrono::milliseconds readiness_timeout_;
  GatewayMetrics metrics_;
  LogLimiter warnings_;
  std::atomic<bool> draining_{false};
  mutable std::mutex mutex_;  // guards connections_
  std::unordered_map<const Connection*, std::weak_ptr<Connection>> connections_;
  ReadinessProbe readiness_;  // last: its thread starts once the rest exists
};

// One client connection: reads requests, answers them in order (through jobs for the chat
// endpoints), closes on errors and limits.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using tcp = boost::asio::ip::tcp;

  Connection(ServerCore& core, tcp::socket socket);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start();
  // Drain (any thread): a connection waiting for a request closes now; others close after
  // their response.
  void drain();

 private:
  enum class State { reading, responding, lingering, closed };
  enum class Deadline { idle, header, body, linger };

  // Reading a request.
  void begin_request();
  void read_more();
  void on_read(boost::system::error_code ec, std::size_t bytes);
  void parse();
  void on_header_done();
  void refuse_request(boost::system::error_code ec);
  void arm_timer(std::chrono::milliseconds after, Deadline deadline);
  void cancel_timer();
  void on_deadline(Deadline deadline);
  // Answering it.
  void on_request();
  void route(const std::string& method, std::string_view path, bool keep_alive, bool http10);
  void chat(Api api, bool keep_alive, bool http10);
  void models(bool keep_alive, bool http10);
  void readiness(bool keep_alive, bool http10);
  void status_json(bool keep_alive, bool http10);
  void start_job(Api api, Admission admission, bool keep_alive, bool http10);
  void on_job_event(uint64_t exchange, const StreamEvent& event);
  void on_job_done(uint64_t exchange, DispatchOutcome outcome);
  void after_responder(std::string bytes);
  void job_finished();
  void reply(std::string bytes, int status, bool keep_alive);
  // Writing.
  void send(std::string bytes);
  void write_more();
  void on_written(boost::system::error_code ec);
  void finish_exchange();
  // Ending.
  void peer_gone(boost::system::error_code ec);
  void linger_then_close();
  void shut();
  void drain_now();
  void warn(std::string_view what);

  ServerCore& core_;
  tcp::socket socket_;
  boost::asio::steady_timer timer_;
  static constexpr std::size_t kReadChunk = 4096;
  std::array<char, kReadChunk> read_space_;  // what one read receives, then moved to buffer_
  boost::beast::flat_buffer buffer_;         // received bytes not parsed yet
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::optional<boost::beast::http::request<boost::beast::http::string_body>> request_;
  State state_ = State::reading;
  bool reading_ = false;          // a read is pending
  bool writing_ = false;          // a write is pending
  bool request_started_ = false;  // bytes of the next request arrived
  bool header_done_ = false;
  uint64_t timer_seq_ = 0;                   // only the latest deadline counts
  uint64_t exchange_ = 0;                    // late callbacks of an earlier exchange are ignored
  std::string_view endpoint_ = kNoEndpoint;  // the metrics label of the request in hand
  std::string pending_;                      // bytes to write
  std::string in_flight_;                    // bytes being written
  bool end_after_write_ = false;    // the response is complete once pending bytes are written
  bool close_after_write_ = false;  // and then the connection closes
  std::unique_ptr<JobResponder> responder_;
  std::string job_id_;
  bool job_running_ = false;
  bool stream_open_ = false;
  std::string peer_;  // "address:port", for log lines
};

}  // namespace dispatch::gateway
