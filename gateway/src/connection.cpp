// One HTTP connection: read a request (with deadlines and limits), answer it — through a job
// for the chat endpoints — and read the next. While a job runs the connection keeps reading
// (a little, into the same buffer) so that a client that goes away is noticed at once and its
// job cancelled, and pipelined requests wait in the buffer for their turn.

#include <fmt/format.h>

#include <cstring>

#include "dispatch/formats/http_errors.hpp"
#include "dispatch/formats/status_json.hpp"
#include "dispatch/gateway/http_text.hpp"
#include "dispatch/gateway/status_page.hpp"
#include "server_core.hpp"

namespace dispatch::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using formats::http_error;

namespace {

constexpr std::size_t kWatchChunk = 512;         // answering: notice a close, keep pipelined bytes
constexpr std::size_t kPipelineCap = 64 * 1024;  // pipelined bytes held before reading stops
// Response bytes a client has not taken yet; past this it is too slow and is dropped (an
// answer is bounded, so only a client that stopped reading gets here).
constexpr std::size_t kMaxPendingBytes = 8 * 1024 * 1024;
constexpr std::chrono::milliseconds kLinger{2000};  // reading leftovers before a close

std::optional<std::string_view> header_of(const http::request<http::string_body>& request,
                                          std::string_view name) {
  const auto it = request.find(beast::string_view(name.data(), name.size()));
  if (it == request.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

RequestHeaders headers_of(const http::request<http::string_body>& request) {
  return RequestHeaders{
      header_of(request, "authorization"),        header_of(request, "x-api-key"),
      header_of(request, "x-dispatch-fallbacks"), header_of(request, "x-dispatch-timeout-ms"),
      header_of(request, "x-dispatch-priority"),  header_of(request, "traceparent")};
}

// The path of a request target, without the query and without a scheme and authority
// (absolute-form, as proxies send).
std::string_view path_of(std::string_view target) {
  if (const std::size_t scheme = target.find("://"); scheme != std::string_view::npos) {
    const std::size_t slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  return target.substr(0, target.find('?'));
}

Api api_of_path(std::string_view path) {
  return path == "/v1/messages" ? Api::anthropic : Api::openai;
}

}  // namespace

Connection::Connection(ServerCore& core, tcp::socket socket)
    : core_(core), socket_(std::move(socket)), timer_(socket_.get_executor()) {
  ++core_.metrics().connections_open;
  error_code ec;
  const auto remote = socket_.remote_endpoint(ec);
  if (!ec) peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
}

Connection::~Connection() {
  --core_.metrics().connections_open;
}

void Connection::start() {
  ++core_.metrics().connections_accepted;
  error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  begin_request();
}

void Connection::drain() {
  net::post(socket_.get_executor(), [self = shared_from_this()] { self->drain_now(); });
}

void Connection::drain_now() {
  if (state_ == State::reading && !request_started_) shut();
}

void Connection::warn(std::string_view what) {
  if (const auto dropped = core_.warnings().permit()) {
    spdlog::warn("{} from {}{}", what, peer_,
                 *dropped == 0 ? "" : fmt::format(" ({} similar lines suppressed)", *dropped));
  }
}

// ---- reading a request ----------------------------------------------------------------------

void Connection::begin_request() {
  state_ = State::reading;
  endpoint_ = kNoEndpoint;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(core_.limits().max_header_bytes));
  parser_->body_limit(core_.limits().max_body_bytes);
  parser_->eager(true);
  header_done_ = false;
  request_started_ = buffer_.size() > 0;
  arm_timer(request_started_ ? core_.limits().header_timeout : core_.limits().idle_timeout,
            request_started_ ? Deadline::header : Deadline::idle);
  parse();
}

void Connection::read_more() {
  if (reading_ || state_ == State::closed) return;
  const bool answering = state_ != State::reading;
  if (answering && buffer_.size() >= kPipelineCap) return;  // the client is alive; enough held
  reading_ = true;
  // Into space of its own, never into buffer_: the parser consumes (and so moves) buffer_'s
  // bytes while a read is pending, which would leave the read writing into stale memory.
  socket_.async_read_some(
      net::buffer(read_space_.data(), answering ? kWatchChunk : kReadChunk),
      [self = shared_from_this()](error_code ec, std::size_t bytes) { self->on_read(ec, bytes); });
}

void Connection::on_read(error_code ec, std::size_t bytes) {
  reading_ = false;
  if (state_ == State::closed) return;
  if (ec) return peer_gone(ec);
  if (state_ == State::lingering) return read_more();  // leftovers are dropped
  const auto space = buffer_.prepare(bytes);
  std::memcpy(space.data(), read_space_.data(), bytes);
  buffer_.commit(bytes);
  if (state_ == State::responding) return read_more();
  if (!request_started_) {
    request_started_ = true;
    arm_timer(core_.limits().header_timeout, Deadline::header);
  }
  parse();
}

void Connection::parse() {
  error_code ec;
  while (!parser_->is_done()) {
    if (buffer_.size() == 0) return read_more();
    const std::size_t used = parser_->put(buffer_.data(), ec);
    buffer_.consume(used);
    if (parser_->is_header_done()) on_header_done();
    if (ec == http::error::need_more) return read_more();
    if (ec) return refuse_request(ec);
  }
  on_request();
}

void Connection::on_header_done() {
  if (header_done_ || parser_->is_done()) return;
  header_done_ = true;
  arm_timer(core_.limits().body_timeout, Deadline::body);
  if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
    send("HTTP/1.1 100 Continue\r\n\r\n");  // curl waits for it before sending a large body
  }
}

void Connection::refuse_request(error_code ec) {
  formats::HttpError error;
  if (ec == http::error::header_limit) {
    error = http_error(
        431, fmt::format("request headers larger than {} bytes", core_.limits().max_header_bytes),
        "headers_too_large");
  } else if (ec == http::error::body_limit) {
    error = http_error(
        413, fmt::format("request body larger than {} bytes", core_.limits().max_body_bytes),
        "body_too_large");
  } else {
    error = http_error(400, "malformed HTTP request: " + ec.message(), "malformed_request");
  }
  ++core_.metrics().hostile_requests;
  warn(fmt::format("refused a request ({} {})", error.status, error.message));
  const std::string_view path = header_done_
                                    ? path_of(std::string_view(parser_->get().target().data(),
                                                               parser_->get().target().size()))
                                    : std::string_view();
  if (header_done_) endpoint_ = endpoint_label(path);
  const Api api = header_done_ ? api_of_path(path) : Api::openai;
  state_ = State::responding;
  reply(error_response(api, error, false, false), error.status, false);
}

void Connection::arm_timer(std::chrono::milliseconds after, Deadline deadline) {
  const uint64_t seq = ++timer_seq_;
  timer_.expires_after(after);
  timer_.async_wait([self = shared_from_this(), seq, deadline](error_code ec) {
    if (!ec && seq == self->timer_seq_) self->on_deadline(deadline);
  });
}

void Connection::cancel_timer() {
  ++timer_seq_;
  timer_.cancel();
}

void Connection::on_deadline(Deadline deadline) {
  if (deadline == Deadline::linger) return shut();
  if (state_ != State::reading) return;
  if (deadline == Deadline::idle) return shut();  // an idle keep-alive connection
  ++core_.metrics().hostile_requests;
  const bool headers = deadline == Deadline::header;
  const auto limit = headers ? core_.limits().header_timeout : core_.limits().body_timeout;
  const std::string message = fmt::format("the request {} did not arrive within {} ms",
                                          headers ? "headers" : "body", limit.count());
  warn("timed out a request: " + message);
  state_ = State::responding;
  reply(error_response(Api::openai, http_error(408, message, "request_timeout"), false, false), 408,
        false);
}

// ---- answering ------------------------------------------------------------------------------

void Connection::on_request() {
  cancel_timer();
  request_.emplace(parser_->release());
  parser_.reset();
  state_ = State::responding;
  if (buffer_.size() == 0 && buffer_.capacity() > 2 * kReadChunk) buffer_.shrink_to_fit();
  const bool http10 = request_->version() == 10;
  const bool keep_alive = request_->keep_alive() && !core_.draining();
  const std::string method(request_->method_string());
  const std::string target(request_->target());
  endpoint_ = endpoint_label(path_of(target));
  route(method, path_of(target), keep_alive, http10);
  request_.reset();  // the job holds what it needs
  read_more();       // notice the client leaving; keep what it pipelines
}

void Connection::route(const std::string& method, std::string_view path, bool keep_alive,
                       bool http10) {
  const auto only = [&](std::string_view allowed) {
    if (method == allowed) return true;
    const std::string text = fmt::format("{} is not allowed on {} (use {})", method, path, allowed);
    reply(error_response(api_of_path(path), http_error(405, text, "method_not_allowed"), keep_alive,
                         http10, {}, {{"allow", std::string(allowed)}}),
          405, keep_alive);
    return false;
  };
  if (path == "/v1/chat/completions" || path == "/v1/messages") {
    if (only("POST")) chat(api_of_path(path), keep_alive, http10);
  } else if (path == "/v1/models") {
    if (only("GET")) models(keep_alive, http10);
  } else if (path == "/healthz") {
    if (only("GET"))
      reply(body_response(200, "application/json", R"({"status":"ok"})", keep_alive, http10), 200,
            keep_alive);
  } else if (path == "/readyz") {
    if (only("GET")) readiness(keep_alive, http10);
  } else if (path == "/status") {
    if (only("GET"))
      reply(body_response(200, "text/html; charset=utf-8", status_page_html(), keep_alive, http10),
            200, keep_alive);
  } else if (path == "/status.json") {
    if (only("GET")) status_json(keep_alive, http10);
  } else if (path == "/metrics") {
    if (only("GET"))
      reply(body_response(200, "text/plain; version=0.0.4", core_.metrics().render(), keep_alive,
                          http10),
            200, keep_alive);
  } else {
    const std::string text = fmt::format(
        "unknown path {} {} (served: POST /v1/chat/completions, POST /v1/messages, "
        "GET /v1/models, /healthz, /readyz, /metrics, /status, /status.json)",
        method, path);
    reply(error_response(Api::openai, http_error(404, text, "not_found"), keep_alive, http10), 404,
          keep_alive);
  }
}

void Connection::chat(Api api, bool keep_alive, bool http10) {
  const RequestHeaders headers = headers_of(*request_);
  auto key = core_.admitter().authenticate(headers);
  if (!key) return reply(error_response(api, key.error(), keep_alive, http10), 401, keep_alive);
  if (core_.draining()) {
    const auto error = http_error(503, "the gateway is shutting down", "draining");
    return reply(error_response(api, error, false, http10), 503, false);
  }
  auto admission = core_.admitter().admit(api, *key, headers, request_->body());
  if (!admission) {
    const formats::HttpError& error = admission.error();
    spdlog::debug("refused a chat request from {}: {} {}", peer_, error.status, error.message);
    return reply(error_response(api, error, keep_alive, http10), error.status, keep_alive);
  }
  if (!admission->traceparent_problem.empty()) warn(admission->traceparent_problem);
  start_job(api, std::move(*admission), keep_alive, http10);
}

void Connection::models(bool keep_alive, bool http10) {
  const RequestHeaders headers = headers_of(*request_);
  // Anthropic's SDKs list models at the same path; they always send anthropic-version.
  const Api api = header_of(*request_, "anthropic-version") ? Api::anthropic : Api::openai;
  auto key = core_.admitter().authenticate(headers);
  if (!key) return reply(error_response(api, key.error(), keep_alive, http10), 401, keep_alive);
  reply(body_response(200, "application/json", core_.admitter().models_body(api, *key), keep_alive,
                      http10),
        200, keep_alive);
}

void Connection::readiness(bool keep_alive, bool http10) {
  const uint64_t exchange = ++exchange_;
  const std::weak_ptr<Connection> weak = weak_from_this();
  const auto executor = socket_.get_executor();
  core_.readiness().check([weak, executor, exchange, keep_alive, http10](const Readiness& ready) {
    net::post(executor, [weak, exchange, keep_alive, http10, ready] {
      const auto self = weak.lock();
      if (!self || exchange != self->exchange_ || self->state_ != State::responding) return;
      const std::string body =
          ready.ready ? fmt::format(R"({{"status":"ready","workers":{}}})", ready.workers)
                      : formats::dump_line(
                            nlohmann::json{{"status", "not_ready"}, {"reason", ready.reason}});
      const int status = ready.ready ? 200 : 503;
      self->reply(body_response(status, "application/json", body, keep_alive, http10), status,
                  keep_alive);
    });
  });
}

// The broker's status as `dispatch status --json` prints it, from the probe's cached answer
// (one broker request a second however many status pages are open).
void Connection::status_json(bool keep_alive, bool http10) {
  const uint64_t exchange = ++exchange_;
  const std::weak_ptr<Connection> weak = weak_from_this();
  const auto executor = socket_.get_executor();
  const auto timeout = core_.readiness_timeout();
  core_.readiness().fetch_status([weak, executor, exchange, keep_alive, http10, timeout](
                                     const ReadinessProbe::Answer& answer, bool stopping) {
    net::post(executor, [weak, exchange, keep_alive, http10, timeout, answer, stopping] {
      const auto self = weak.lock();
      if (!self || exchange != self->exchange_ || self->state_ != State::responding) return;
      if (stopping || !answer || !*answer) {
        const auto error =
            stopping ? http_error(503, "the gateway is stopping", "draining")
                     : http_error(503,
                                  fmt::format("the broker did not answer a status request within "
                                              "{} ms",
                                              timeout.count()),
                                  "broker_unavailable");
        return self->reply(error_response(Api::openai, error, keep_alive, http10), 503, keep_alive);
      }
      self->reply(
          body_response(200, "application/json",
                        formats::dump_line(formats::status_to_json(**answer)), keep_alive, http10),
          200, keep_alive);
    });
  });
}

void Connection::start_job(Api api, Admission admission, bool keep_alive, bool http10) {
  const uint64_t exchange = ++exchange_;
  const std::weak_ptr<Connection> weak = weak_from_this();
  const auto executor = socket_.get_executor();
  // Both run on the link's thread: they only hand the event to this connection's io_context.
  CompletionCallback on_done = [weak, executor, exchange](DispatchOutcome outcome) {
    if (auto self = weak.lock()) {
      net::post(executor, [self, exchange, outcome = std::move(outcome)]() mutable {
        self->on_job_done(exchange, std::move(outcome));
      });
    }
  };
  StreamCallback on_event;
  if (admission.stream) {
    on_event = [weak, executor, exchange](const StreamEvent& event) {
      if (auto self = weak.lock()) {
        net::post(executor, [self, exchange, event] { self->on_job_event(exchange, event); });
      }
    };
  }
  try {
    job_id_ = core_.link().submit_for_tenant(admission.tenant, std::move(admission.request),
                                             std::move(on_done), std::move(on_event));
  } catch (const std::exception& e) {
    spdlog::error("could not submit a job for {}: {}", peer_, e.what());
    const auto error =
        http_error(500, std::string("could not submit the job: ") + e.what(), "internal");
    return reply(error_response(api, error, keep_alive, http10), 500, keep_alive);
  }
  job_running_ = true;
  ++core_.metrics().jobs_open;
  if (admission.stream) {
    stream_open_ = true;
    ++core_.metrics().streams_open;
  }
  responder_ = std::make_unique<JobResponder>(
      ResponderOptions{api, admission.stream, admission.include_usage, job_id_, admission.target,
                       core_.clock().unix_ms() / 1000, keep_alive, http10});
}

void Connection::on_job_event(uint64_t exchange, const StreamEvent& event) {
  if (exchange != exchange_ || !responder_ || state_ != State::responding) return;
  after_responder(responder_->on_event(event));
}

void Connection::on_job_done(uint64_t exchange, DispatchOutcome outcome) {
  if (exchange != exchange_ || !job_running_) return;
  job_finished();
  if (!responder_ || state_ != State::responding) return;
  after_responder(responder_->on_outcome(outcome));
}

void Connection::after_responder(std::string bytes) {
  if (!bytes.empty()) send(std::move(bytes));
  if (!responder_ || !responder_->complete() || end_after_write_) return;
  GatewayMetrics& metrics = core_.metrics();
  if (responder_->cancel_job() && job_running_) {
    core_.link().cancel(job_id_);
    job_finished();
  }
  metrics.count_status(endpoint_, responder_->stream_failed() ? 502 : responder_->status());
  metrics.stream_splices += responder_->splicer().splices();
  if (responder_->diverged()) ++metrics.stream_divergences;
  if (responder_->stream_failed()) ++metrics.stream_failures;
  if (responder_->splicer().splices() > 0 || responder_->diverged()) {
    spdlog::info(
        "job {}: stream restarted {} time(s) after bytes were sent: {}", job_id_,
        responder_->splicer().resets_after_send(),
        responder_->diverged() ? "diverged, ended with an error event" : "continued seamlessly");
  }
  end_after_write_ = true;
  close_after_write_ = responder_->close_after();
  if (!writing_ && pending_.empty()) finish_exchange();
}

void Connection::job_finished() {
  job_running_ = false;
  --core_.metrics().jobs_open;
}

void Connection::reply(std::string bytes, int status, bool keep_alive) {
  core_.metrics().count_status(endpoint_, status);
  end_after_write_ = true;
  close_after_write_ = !keep_alive;
  send(std::move(bytes));
}

// ---- writing --------------------------------------------------------------------------------

void Connection::send(std::string bytes) {
  if (state_ == State::closed) return;
  if (pending_.empty()) {
    pending_ = std::move(bytes);
  } else {
    pending_ += bytes;
  }
  if (pending_.size() > kMaxPendingBytes) {
    warn(fmt::format("dropped a client that stopped reading ({} bytes unsent)", pending_.size()));
    if (job_running_) ++core_.metrics().client_disconnects;
    return shut();
  }
  write_more();
}

void Connection::write_more() {
  if (writing_ || pending_.empty() || state_ == State::closed) return;
  writing_ = true;
  in_flight_.swap(pending_);
  pending_.clear();
  net::async_write(
      socket_, net::buffer(in_flight_),
      [self = shared_from_this()](error_code ec, std::size_t) { self->on_written(ec); });
}

void Connection::on_written(error_code ec) {
  writing_ = false;
  in_flight_.clear();
  if (state_ == State::closed) return;
  if (ec) return peer_gone(ec);
  if (!pending_.empty()) return write_more();
  if (end_after_write_) finish_exchange();
}

void Connection::finish_exchange() {
  end_after_write_ = false;
  if (stream_open_) {
    stream_open_ = false;
    --core_.metrics().streams_open;
  }
  responder_.reset();
  if (in_flight_.capacity() > 64 * 1024) std::string().swap(in_flight_);
  if (close_after_write_ || core_.draining()) return linger_then_close();
  begin_request();
}

// ---- ending ---------------------------------------------------------------------------------

void Connection::peer_gone(error_code ec) {
  if (job_running_) {
    ++core_.metrics().client_disconnects;
    spdlog::debug("client {} went away ({}): cancelling job {}", peer_, ec.message(), job_id_);
  }
  shut();
}

// Half-closes and reads what the client still sends for a moment before closing: closing with
// unread bytes makes the kernel reset the connection, which can destroy the response just sent
// (a 413 while the client is still sending its body).
void Connection::linger_then_close() {
  state_ = State::lingering;
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  buffer_.consume(buffer_.size());
  arm_timer(kLinger, Deadline::linger);
  read_more();
}

void Connection::shut() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  cancel_timer();
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (job_running_) {
    core_.link().cancel(job_id_);
    job_finished();
  }
  if (stream_open_) {
    stream_open_ = false;
    --core_.metrics().streams_open;
  }
  responder_.reset();
  core_.remove(this);
}

}  // namespace dispatch::gateway
