#include "dispatch/fake_provider/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dispatch/fake_provider/attempt_log.hpp"
#include "dispatch/fake_provider/directives.hpp"
#include "dispatch/fake_provider/quota.hpp"
#include "dispatch/fake_provider/wire_format.hpp"
#include "format_common.hpp"
#include "http_text.hpp"

namespace dispatch::fake_provider {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;
using nlohmann::json;

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

namespace {

constexpr auto use_awaitable = net::use_awaitable;

// What the connection loop does after a request has been answered.
enum class Next { keep_alive, close, closed };

struct Route {
  Format format;
  std::string_view path;
};

// Paths exactly as the official SDKs build them from their base URLs.
constexpr Route kChatRoutes[] = {
    {Format::openai, "/v1/chat/completions"},
    {Format::anthropic, "/v1/messages"},
    {Format::ollama, "/api/chat"},
    {Format::dashscope_compatible, "/compatible-mode/v1/chat/completions"},
    {Format::dashscope, "/api/v1/services/aigc/text-generation/generation"},
};

template <typename Body>
Headers headers_of(const http::request<Body>& request) {
  Headers headers;
  for (const auto& field : request) {
    headers.add(std::string(field.name_string()), std::string(field.value()));
  }
  return headers;
}

// The API key a request is charged to: x-api-key (Anthropic), else the Bearer token, else none
// (a local Ollama sends no key: all such requests share one quota).
std::string api_key_of(const Headers& headers) {
  if (const auto key = headers.get("x-api-key"); key && !key->empty()) return std::string(*key);
  return detail::bearer_token(headers).value_or("");
}

bool is_rate_limit_header(const std::string& name) {
  return name.rfind("x-ratelimit-", 0) == 0 || name.rfind("anthropic-ratelimit-", 0) == 0;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "+") + p;
  return out.empty() ? "ok" : out;
}

}  // namespace

class Server::Impl {
 public:
  explicit Impl(ServerOptions options)
      : options_(std::move(options)),
        clock_(*options_.clock),
        started_(clock_.now()),
        flap_epoch_(started_),
        instance_(static_cast<uint64_t>(clock_.unix_ms())),
        log_(options_.log_capacity),
        quota_(options_.limits, clock_),
        acceptor_(ioc_) {}

  ~Impl() { stop(); }

  uint16_t start() {
    const uint64_t files = raise_open_file_limit();
    const tcp::endpoint endpoint(net::ip::make_address(options_.host), options_.port);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(options_.backlog);
    port_ = acceptor_.local_endpoint().port();
    net::co_spawn(ioc_, accept_loop(), net::detached);
    const int threads = std::max(1, options_.threads);
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
    spdlog::info("fake-provider listening on {}:{} ({} thread(s), open-file limit {})",
                 options_.host, port_, threads, files);
    return port_;
  }

  void stop() {
    if (stopped_.exchange(true)) return;
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  uint16_t port() const { return port_; }

 private:
  // Counts a connection for /_fake/stats while it lives.
  class ConnectionGuard {
   public:
    explicit ConnectionGuard(Impl& s) : s_(s) {
      const int64_t now = ++s_.open_connections_;
      raise_peak(s_.peak_open_connections_, now);
    }
    ~ConnectionGuard() { --s_.open_connections_; }
    ConnectionGuard(const ConnectionGuard&) = delete;
    ConnectionGuard& operator=(const ConnectionGuard&) = delete;

   private:
    Impl& s_;
  };

  class StreamGuard {
   public:
    explicit StreamGuard(Impl& s) : s_(s) {
      const int64_t now = ++s_.active_streams_;
      raise_peak(s_.peak_active_streams_, now);
    }
    ~StreamGuard() { --s_.active_streams_; }
    StreamGuard(const StreamGuard&) = delete;
    StreamGuard& operator=(const StreamGuard&) = delete;

   private:
    Impl& s_;
  };

  static void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
    int64_t seen = peak.load();
    while (value > seen && !peak.compare_exchange_weak(seen, value)) {
    }
  }

  double ms_since_start() const {
    return std::chrono::duration<double, std::milli>(clock_.now() - started_).count();
  }

  // ---- accepting -------------------------------------------------------------------------

  net::awaitable<void> accept_loop() {
    net::steady_timer backoff(ioc_);
    for (;;) {
      error_code ec;
      // One thread needs no strand; several serialise each connection on its own.
      const net::any_io_executor executor = options_.threads > 1
                                                ? net::any_io_executor(net::make_strand(ioc_))
                                                : net::any_io_executor(ioc_.get_executor());
      tcp::socket socket =
          co_await acceptor_.async_accept(executor, net::redirect_error(use_awaitable, ec));
      if (ec == net::error::operation_aborted) co_return;
      if (ec) {
        // Out of file descriptors: back off instead of spinning on the same error.
        spdlog::warn("accept failed: {}", ec.message());
        backoff.expires_after(std::chrono::milliseconds(50));
        co_await backoff.async_wait(net::redirect_error(use_awaitable, ec));
        continue;
      }
      net::co_spawn(executor, session(std::move(socket)), net::detached);
    }
  }

  // GCC 12 destroys temporaries of a co_await full-expression wrongly (double free seen), so
  // every coroutine here takes references to named objects, never temporaries.
  static net::awaitable<bool> write(tcp::socket& socket, const std::string& data) {
    error_code ec;
    co_await net::async_write(socket, net::buffer(data), net::redirect_error(use_awaitable, ec));
    co_return !ec;
  }

  net::awaitable<bool> send_simple(tcp::socket& socket, int status, const std::string& content_type,
                                   const std::string& body, bool keep_alive) {
    const detail::ResponseHead head{status, content_type, body.size(), keep_alive, {}};
    const std::string bytes = detail::render_head(head, clock_.unix_ms() / 1000) + body;
    co_return co_await write(socket, bytes);
  }

  // ---- one connection ----------------------------------------------------------------------

  net::awaitable<void> session(tcp::socket socket) {
    ConnectionGuard guard(*this);
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    boost::beast::flat_buffer buffer;
    // Bounded by the client: each iteration consumes one request or ends the connection.
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(64 * 1024);
      parser.body_limit(options_.max_body_bytes);
      error_code ec;
      co_await http::async_read_header(socket, buffer, parser,
                                       net::redirect_error(use_awaitable, ec));
      if (!ec && boost::beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        // curl waits a second for this before sending a large body.
        const std::string go_on = "HTTP/1.1 100 Continue\r\n\r\n";
        if (!co_await write(socket, go_on)) co_return;
      }
      if (!ec && !parser.is_done()) {
        co_await http::async_read(socket, buffer, parser, net::redirect_error(use_awaitable, ec));
      }
      if (ec) {
        const bool peer_gone = ec == http::error::end_of_stream || ec == net::error::eof ||
                               ec == net::error::connection_reset ||
                               ec == net::error::operation_aborted ||
                               ec == http::error::partial_message;
        if (!peer_gone) {
          const bool too_large = ec == http::error::body_limit;
          const std::string content_type = "application/json";
          const std::string body =
              too_large ? std::string(R"({"error":"request body too large"})")
                        : json{{"error", "malformed HTTP request: " + ec.message()}}.dump();
          co_await send_simple(socket, too_large ? 413 : 400, content_type, body, false);
        }
        break;
      }
      ++requests_total_;
      http::request<http::string_body> request = parser.release();
      const Next next = co_await dispatch(socket, request);
      if (next == Next::closed) co_return;
      if (next == Next::close || !request.keep_alive()) break;
    }
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
  }

  net::awaitable<Next> dispatch(tcp::socket& socket,
                                const http::request<http::string_body>& request) {
    const std::string_view target(request.target().data(), request.target().size());
    const size_t question = target.find('?');
    const std::string_view path = target.substr(0, question);
    const std::string_view query =
        question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
    const bool keep_alive = request.keep_alive();
    const auto method = request.method();

    for (const Route& route : kChatRoutes) {
      if (path != route.path) continue;
      if (method != http::verb::post) break;
      co_return co_await chat(socket, request, route.format);
    }
    std::optional<std::pair<int, std::string>> reply;  // status, JSON body
    if (path.rfind("/_fake/", 0) == 0) {
      reply = control(method, path, query);
    } else if (method == http::verb::get) {
      reply = listing(path, headers_of(request));
    }
    if (!reply) {
      const bool known = std::any_of(std::begin(kChatRoutes), std::end(kChatRoutes),
                                     [&](const Route& r) { return r.path == path; });
      reply = known ? std::pair(405, std::string(R"({"error":"method not allowed"})"))
                    : std::pair(404, std::string(R"({"error":"404 page not found"})"));
    }
    const std::string content_type =
        reply->second.rfind("Ollama", 0) == 0 ? "text/plain; charset=utf-8" : "application/json";
    if (!co_await send_simple(socket, reply->first, content_type, reply->second, keep_alive)) {
      co_return Next::closed;
    }
    co_return Next::keep_alive;
  }

  // GET endpoints of the providers: model listings (with the provider's auth) and Ollama's
  // liveness answers.
  std::optional<std::pair<int, std::string>> listing(std::string_view path,
                                                     const Headers& headers) {
    ResponseContext context;
    context.model = "";
    const auto authorised = [&](Format format) -> std::optional<std::pair<int, std::string>> {
      const WireFormat& wire = wire_format(format);
      if (auto error = wire.check_auth(headers, options_.required_key)) {
        context.request_id = wire.request_id(instance_, 0);
        const HttpReply reply = wire.error_reply(*error, context);
        return std::pair(reply.status, reply.body);
      }
      return std::nullopt;
    };
    if (path == "/v1/models") {
      // The Anthropic SDK lists models at the same path; it always sends anthropic-version, and
      // its key as x-api-key (SDK 0.x) or Authorization: Bearer (SDK 1.x).
      const bool anthropic = headers.get("anthropic-version") || headers.get("x-api-key");
      if (auto denied = authorised(anthropic ? Format::anthropic : Format::openai)) return denied;
      return std::pair(
          200, anthropic ? anthropic_models_body() : openai_models_body(clock_.unix_ms() / 1000));
    }
    if (path == "/compatible-mode/v1/models") {
      if (auto denied = authorised(Format::dashscope_compatible)) return denied;
      return std::pair(200, openai_models_body(clock_.unix_ms() / 1000));
    }
    if (path == "/api/tags") return std::pair(200, ollama_tags_body(clock_.unix_ms() * 1'000'000));
    if (path == "/api/version") return std::pair(200, std::string(R"({"version":"0.12.6"})"));
    if (path == "/") return std::pair(200, std::string("Ollama is running"));
    return std::nullopt;
  }

  // ---- control endpoints -------------------------------------------------------------------

  std::optional<std::pair<int, std::string>> control(http::verb method, std::string_view path,
                                                     std::string_view query) {
    if (path == "/_fake/log" && method == http::verb::get) {
      const std::optional<std::string> model = detail::query_value(query, "model");
      return std::pair(
          200, log_.to_json(model ? std::optional<std::string_view>(*model) : std::nullopt).dump());
    }
    if (path == "/_fake/stats" && method == http::verb::get) {
      return std::pair(200, json{{"open_connections", open_connections_.load()},
                                 {"peak_open_connections", peak_open_connections_.load()},
                                 {"active_streams", active_streams_.load()},
                                 {"peak_active_streams", peak_active_streams_.load()},
                                 {"requests_total", requests_total_.load()},
                                 {"attempts_total", attempts_total_.load()},
                                 {"rate_limited_total", rate_limited_total_.load()},
                                 {"status_429_total", status_429_total_.load()},
                                 {"limit_rpm", options_.limits.rpm},
                                 {"limit_tpm", options_.limits.tpm},
                                 {"uptime_ms", ms_since_start()}}
                                .dump());
    }
    if (path == "/_fake/reset" && method == http::verb::post) {
      log_.clear();
      {
        std::lock_guard lock(mutex_);
        fail_counts_.clear();
        flap_epoch_ = clock_.now();
      }
      requests_total_ = 0;
      attempts_total_ = 0;
      rate_limited_total_ = 0;
      status_429_total_ = 0;
      quota_.clear();
      peak_open_connections_ = open_connections_.load();
      peak_active_streams_ = active_streams_.load();
      spdlog::info("reset: log, counters, quotas and flap timers cleared");
      return std::pair(200, std::string(R"({"ok":true})"));
    }
    return std::pair(404, std::string(R"({"error":"unknown control endpoint"})"));
  }

  // ---- provider requests -------------------------------------------------------------------

  net::awaitable<Next> chat(tcp::socket& socket, const http::request<http::string_body>& request,
                            Format format) {
    const WireFormat& wire = wire_format(format);
    const Headers headers = headers_of(request);
    const json body = json::parse(request.body(), nullptr, false);
    std::string model;
    if (body.is_object()) {
      const auto it = body.find("model");
      if (it != body.end() && it->is_string()) model = it->get<std::string>();
    }
    AttemptRecord record;
    record.t_ms = ms_since_start();
    record.unix_ms = clock_.unix_ms();
    record.format = std::string(format_name(format));
    record.path = std::string(request.target());
    record.model = model;
    record.header_directives = std::string(headers.get("x-fake-directives").value_or(""));
    record.traceparent = std::string(headers.get("traceparent").value_or(""));
    record.stream = wire.wants_stream(body, headers);
    Exchange exchange(*this, socket, wire, request.keep_alive());
    exchange.begin(std::move(record));
    co_return co_await exchange.run(body, headers);
  }

  // One provider request: decides what happens (directives, auth, validation) and writes it,
  // keeping the attempt's log record up to date.
  class Exchange {
   public:
    Exchange(Impl& server, tcp::socket& socket, const WireFormat& wire, bool keep_alive)
        : s_(server),
          socket_(socket),
          wire_(wire),
          keep_alive_(keep_alive),
          arrived_(server.clock_.now()),
          timer_(socket.get_executor()) {}

    void begin(AttemptRecord record) {
      model_ = record.model;
      header_directives_ = record.header_directives;
      stream_ = record.stream;
      path_ = record.path;
      id_ = s_.log_.begin(std::move(record));
      ++s_.attempts_total_;
      context_.seq = id_.seq;
      context_.request_id = wire_.request_id(s_.instance_, id_.seq);
      context_.model = model_;
      context_.created_unix_s = s_.clock_.unix_ms() / 1000;
      context_.unix_ns = s_.clock_.unix_ms() * 1'000'000;
      context_.elapsed_ns = [clock = &s_.clock_, arrived = arrived_] {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(clock->now() - arrived).count();
      };
      s_.log_.update(id_, [&](AttemptRecord& r) { r.request_id = context_.request_id; });
    }

    net::awaitable<Next> run(const json& body, const Headers& headers) {
      std::optional<Rejection> rejection = take_directives();
      if (!rejection) {
        if (d_.latency_ms) co_await sleep(*d_.latency_ms);
        if (d_.reset) {
          // SO_LINGER 0 turns close() into a RST: the client sees a reset, not an orderly end.
          error_code ignored;
          socket_.set_option(net::socket_base::linger(true, 0), ignored);
          socket_.close(ignored);
          finish("reset", 0);
          co_return Next::closed;
        }
        if (d_.hang) {
          s_.log_.update(id_, [](AttemptRecord& r) { r.outcome = "hang"; });
          co_await wait_for_client_close();
          finish("hang", 0);
          co_return Next::closed;
        }
        rejection = decide(body, headers);
      }
      if (rejection) co_return co_await send_error(rejection->error, rejection->outcome);
      if (stream_) co_return co_await send_stream();
      co_return co_await send_complete();
    }

   private:
    // An error reply and the outcome it is logged under.
    struct Rejection {
      FakeError error;
      std::string outcome;
    };

    std::optional<Rejection> take_directives() {
      auto parsed = parse_directives(model_, header_directives_);
      if (auto* problem = std::get_if<std::string>(&parsed)) {
        return Rejection{invalid_request(*problem), "bad_directive"};
      }
      d_ = std::get<Directives>(std::move(parsed));
      return std::nullopt;
    }

    // Auth, validation and the scripted errors, in the order a real provider would check;
    // on success request_ and plan_ hold what to answer.
    std::optional<Rejection> decide(const json& body, const Headers& headers) {
      if (auto error = wire_.check_auth(headers, s_.options_.required_key)) {
        return Rejection{*error, error->status == 401 ? "auth_failed" : "invalid_request"};
      }
      auto validated = wire_.parse(body, headers);
      if (auto* error = std::get_if<FakeError>(&validated))
        return Rejection{*error, "invalid_request"};
      request_ = std::get<ChatRequest>(std::move(validated));
      plan_ = plan_reply(request_, d_.tokens.value_or(s_.options_.default_tokens));

      // Charged at admission with the whole planned reply; finish() reconciles to what was sent.
      if (s_.quota_.enabled()) {
        api_key_ = api_key_of(headers);
        quota_ = s_.quota_.admit(api_key_, plan_.prompt_tokens + plan_.completion_tokens);
        if (!quota_->admitted) {
          ++s_.rate_limited_total_;
          const ErrorKind kind =
              quota_->requests_exceeded ? ErrorKind::rate_limited : ErrorKind::rate_limited_tokens;
          return Rejection{FakeError{429, kind, {}, {}}, "rate_limited"};
        }
      }

      if (d_.flap_ms && s_.flapping(*d_.flap_ms)) {
        return Rejection{FakeError{503, ErrorKind::unavailable, {}, {}}, "flap"};
      }
      if ((d_.status || d_.fail_first) &&
          s_.should_fail(model_ + "|" + header_directives_, d_.fail_first)) {
        const int status = static_cast<int>(d_.status.value_or(500));
        return Rejection{FakeError{status, kind_for_status(status), {}, {}},
                         "status_" + std::to_string(status)};
      }
      if (d_.base_model == "no-such-model") {
        return Rejection{FakeError{404, ErrorKind::not_found, {}, {}}, "model_not_found"};
      }
      if (d_.context_length) {
        return Rejection{FakeError{400, ErrorKind::context_length, {}, {}}, "context_length"};
      }
      if (d_.content_filter) {
        return Rejection{FakeError{400, ErrorKind::content_filter, {}, {}}, "content_filter"};
      }
      s_.log_.update(id_, [this](AttemptRecord& r) {
        r.prompt_tokens = plan_.prompt_tokens;
        r.completion_tokens = plan_.completion_tokens;
      });
      return std::nullopt;
    }

    net::awaitable<void> sleep(int64_t ms) {
      if (ms <= 0) co_return;
      timer_.expires_after(std::chrono::milliseconds(ms));
      error_code ec;
      co_await timer_.async_wait(net::redirect_error(use_awaitable, ec));
    }

    // Reads (and discards) until the peer closes; records when it did.
    net::awaitable<void> wait_for_client_close() {
      char scratch[4096];
      error_code ec;
      // Bounded by the peer: ends on its close or reset.
      while (!ec) {
        co_await socket_.async_read_some(net::buffer(scratch),
                                         net::redirect_error(use_awaitable, ec));
      }
      const double at = s_.ms_since_start();
      s_.log_.update(id_, [at](AttemptRecord& r) { r.client_closed_ms = at; });
      error_code ignored;
      socket_.close(ignored);
    }

    void mark_headers() {
      const double at = s_.ms_since_start();
      s_.log_.update(id_, [at](AttemptRecord& r) { r.headers_ms = at; });
    }

    void finish(const std::string& outcome, int status, int64_t chunks = 0) {
      if (quota_ && quota_->admitted) {
        // What was delivered: an error costs its prompt; a stream broken off its chunks sent.
        const int64_t completion = status < 200 || status >= 400 ? 0
                                   : stream_ ? std::min(chunks, plan_.completion_tokens)
                                             : plan_.completion_tokens;
        s_.quota_.reconcile(api_key_, quota_->ticket, plan_.prompt_tokens + completion);
      }
      const double at = s_.ms_since_start();
      s_.log_.update(id_, [&](AttemptRecord& r) {
        r.outcome = outcome;
        r.status = status;
        r.end_ms = at;
        r.chunks_sent = chunks;
      });
      s_.log_attempt(
          id_.seq, wire_.format(), path_, model_, stream_, outcome, status,
          at - std::chrono::duration<double, std::milli>(arrived_ - s_.started_).count());
    }

    // A failed write means the client went away.
    Next client_gone(int status, int64_t chunks) {
      const double at = s_.ms_since_start();
      s_.log_.update(id_, [at](AttemptRecord& r) { r.client_closed_ms = at; });
      finish("client_closed", status, chunks);
      return Next::closed;
    }

    HeaderList reply_headers(const HttpReply& reply) const {
      HeaderList headers = wire_.common_headers(context_);
      if (quota_) {
        // The real limits replace the format's constant rate-limit headers.
        std::erase_if(headers, [](const auto& h) { return is_rate_limit_header(h.first); });
        HeaderList limits =
            quota_headers(*quota_, wire_.format() == Format::anthropic, s_.clock_.unix_ms());
        headers.insert(headers.end(), limits.begin(), limits.end());
      }
      headers.insert(headers.end(), reply.headers.begin(), reply.headers.end());
      const bool refused_by_quota = quota_ && !quota_->admitted;  // carries its own Retry-After
      if (reply.status >= 400 && !refused_by_quota) {
        if (d_.retry_after_ms)
          headers.emplace_back("retry-after-ms", std::to_string(*d_.retry_after_ms));
        if (d_.retry_after_date) {
          // Rounded up so the date is at least two seconds ahead at second resolution.
          headers.emplace_back("retry-after",
                               detail::http_date((s_.clock_.unix_ms() + 2000 + 999) / 1000));
        } else if (d_.retry_after_s) {
          headers.emplace_back("retry-after", std::to_string(*d_.retry_after_s));
        }
      }
      return headers;
    }

    std::string head_for(const HttpReply& reply, std::optional<size_t> length) const {
      detail::ResponseHead head{reply.status, reply.content_type, length, keep_alive_,
                                reply_headers(reply)};
      return detail::render_head(head, s_.clock_.unix_ms() / 1000);
    }

    net::awaitable<Next> send_error(const FakeError& error, const std::string& outcome) {
      const HttpReply reply = wire_.error_reply(error, context_);
      if (reply.status == 429) ++s_.status_429_total_;
      const std::string bytes = head_for(reply, reply.body.size()) + reply.body;
      const bool ok = co_await write(socket_, bytes);
      if (!ok) co_return client_gone(reply.status, 0);
      mark_headers();
      finish(outcome, reply.status);
      co_return Next::keep_alive;
    }

    net::awaitable<Next> send_complete() {
      const ReplyPlan& plan = plan_;
      // A non-streamed answer takes as long as generating it would.
      const int64_t chunks =
          static_cast<int64_t>(plan.thinking_chunks.size() + plan.text_chunks.size() +
                               (plan.tool_call ? plan.tool_call->fragments.size() + 1 : 0));
      co_await sleep(d_.first_token_ms.value_or(0) + d_.chunk_delay_ms.value_or(0) * chunks);
      if (d_.error_mid_stream) {
        const FakeError error = wire_.mid_stream_error();
        const std::string outcome = "error_mid_stream";
        co_return co_await send_error(error, outcome);
      }

      HttpReply reply = wire_.reply(request_, plan, context_);
      std::vector<std::string> outcome;
      if (d_.malformed_at) {
        reply.body.resize(reply.body.size() / 2);  // truncated JSON, honest Content-Length
        outcome.emplace_back("malformed");
      }
      if (d_.cut_after || d_.stall_after) {
        // Declares the whole body, sends half of it.
        const std::string half =
            head_for(reply, reply.body.size()) + reply.body.substr(0, reply.body.size() / 2);
        if (!co_await write(socket_, half)) {
          co_return client_gone(200, 0);
        }
        mark_headers();
        if (d_.cut_after) {
          error_code ignored;
          socket_.close(ignored);
          finish("cut", 200);
        } else {
          s_.log_.update(id_, [](AttemptRecord& r) {
            r.outcome = "stall";
            r.status = 200;
          });
          co_await wait_for_client_close();
          finish("stall", 200);
        }
        co_return Next::closed;
      }
      const std::string bytes = head_for(reply, reply.body.size()) + reply.body;
      if (!co_await write(socket_, bytes)) co_return client_gone(200, 0);
      mark_headers();
      finish(joined(outcome), 200);
      co_return Next::keep_alive;
    }

    net::awaitable<Next> send_stream() {
      using Kind = StreamEvent::Kind;
      StreamGuard guard(s_);
      std::vector<StreamEvent> events = wire_.stream(request_, plan_, context_);
      const int64_t content_total =
          std::count_if(events.begin(), events.end(),
                        [](const StreamEvent& e) { return e.kind == Kind::content; });
      // The earliest stream fault wins; one asked for beyond the last chunk fires after it.
      enum class Fault { none, error, cut, stall };
      Fault fault = Fault::none;
      int64_t fault_at = std::numeric_limits<int64_t>::max();
      const auto consider = [&](std::optional<int64_t> n, Fault f) {
        if (n && std::min(*n, content_total) < fault_at) {
          fault_at = std::min(*n, content_total);
          fault = f;
        }
      };
      consider(d_.error_mid_stream, Fault::error);
      consider(d_.cut_after, Fault::cut);
      consider(d_.stall_after, Fault::stall);
      // Nothing to wait for and nothing to break off: the whole response goes out in one write
      // (the same bytes; one send instead of three per stream).
      const bool instant = fault == Fault::none && d_.first_token_ms.value_or(0) <= 0 &&
                           d_.chunk_delay_ms.value_or(0) <= 0;

      const auto bytes_of = [](StreamEvent& e) {
        return e.render ? e.render() : std::move(e.bytes);
      };
      HttpReply head_reply;
      head_reply.content_type = wire_.stream_content_type();
      std::string pending = head_for(head_reply, std::nullopt);
      if (instant) {
        size_t total = pending.size() + detail::kLastChunk.size();
        for (const StreamEvent& e : events) total += e.bytes.size() + 16;
        pending.reserve(total);
      }
      size_t next = 0;
      size_t written = 0;  // events written (DashScope numbers them)
      for (; next < events.size() && events[next].kind == Kind::preamble; ++next, ++written) {
        detail::append_chunk(pending, bytes_of(events[next]));
      }
      if (!instant) {
        if (!co_await write(socket_, pending)) co_return client_gone(200, 0);
        pending.clear();
        mark_headers();
      }

      int64_t sent = 0;
      std::vector<std::string> outcome;
      bool first_after_content = true;
      for (; next < events.size(); ++next) {
        StreamEvent& event = events[next];
        if (fault != Fault::none && sent == fault_at) break;
        int64_t delay = 0;
        if (event.kind == Kind::content) {
          delay = sent == 0 ? d_.first_token_ms.value_or(0) : d_.chunk_delay_ms.value_or(0);
        } else if ((event.kind == Kind::trailer || event.kind == Kind::terminator) &&
                   first_after_content) {
          first_after_content = false;
          delay = sent == 0 ? d_.first_token_ms.value_or(0) : d_.chunk_delay_ms.value_or(0);
        }
        if (delay > 0) {
          if (!pending.empty() && !co_await write(socket_, pending))
            co_return client_gone(200, sent);
          pending.clear();
          co_await sleep(delay);
        }
        if (event.kind == Kind::terminator && d_.no_terminator) continue;
        std::string bytes = bytes_of(event);
        if (event.kind == Kind::content) {
          ++sent;
          if (d_.malformed_at && sent == *d_.malformed_at) {
            bytes = wire_.malformed_event(context_, written + 1);
          }
          if (sent == 1 && !instant) {
            const double at = s_.ms_since_start();
            s_.log_.update(id_, [at](AttemptRecord& r) { r.first_chunk_ms = at; });
          }
        }
        detail::append_chunk(pending, bytes);
        ++written;
      }
      if (d_.malformed_at && *d_.malformed_at <= sent) outcome.emplace_back("malformed");

      if (fault == Fault::error && sent == fault_at) {
        pending +=
            detail::chunk(wire_.error_event(wire_.mid_stream_error(), context_, written + 1));
        pending += detail::kLastChunk;
        if (!co_await write(socket_, pending)) co_return client_gone(200, sent);
        finish("error_mid_stream", 200, sent);
        co_return Next::keep_alive;
      }
      if (instant) {
        pending += detail::kLastChunk;
        if (!co_await write(socket_, pending)) co_return client_gone(200, sent);
        mark_headers();
        if (sent > 0) {
          const double at = s_.ms_since_start();
          s_.log_.update(id_, [at](AttemptRecord& r) { r.first_chunk_ms = at; });
        }
        if (d_.no_terminator) outcome.emplace_back("no_terminator");
        finish(joined(outcome), 200, sent);
        co_return Next::keep_alive;
      }
      if (!pending.empty() && !co_await write(socket_, pending)) co_return client_gone(200, sent);
      pending.clear();
      if (fault == Fault::cut && sent == fault_at) {
        // No terminating zero-length chunk: the client sees a truncated body.
        error_code ignored;
        socket_.close(ignored);
        finish("cut", 200, sent);
        co_return Next::closed;
      }
      if (fault == Fault::stall && sent == fault_at) {
        s_.log_.update(id_, [&](AttemptRecord& r) {
          r.outcome = "stall";
          r.status = 200;
          r.chunks_sent = sent;
        });
        co_await wait_for_client_close();
        finish("stall", 200, sent);
        co_return Next::closed;
      }
      const std::string last_chunk(detail::kLastChunk);
      if (!co_await write(socket_, last_chunk)) co_return client_gone(200, sent);
      if (d_.no_terminator) outcome.emplace_back("no_terminator");
      finish(joined(outcome), 200, sent);
      co_return Next::keep_alive;
    }

    Impl& s_;
    tcp::socket& socket_;
    const WireFormat& wire_;
    const bool keep_alive_;
    const Clock::time_point arrived_;
    net::steady_timer timer_;  // every delay of this exchange
    AttemptId id_;
    ResponseContext context_;
    Directives d_;
    ChatRequest request_;
    ReplyPlan plan_;
    std::optional<QuotaDecision> quota_;  // set once the quota was consulted
    std::string api_key_;                 // what the quota charged
    std::string model_;
    std::string header_directives_;
    std::string path_;
    bool stream_ = false;
  };

  bool flapping(int64_t ms) {
    std::lock_guard lock(mutex_);
    return clock_.now() - flap_epoch_ < std::chrono::milliseconds(ms);
  }

  // fail_first=N: the first N requests for this key fail; without it every request fails.
  bool should_fail(const std::string& key, std::optional<int64_t> fail_first) {
    if (!fail_first) return true;
    std::lock_guard lock(mutex_);
    return ++fail_counts_[key] <= *fail_first;
  }

  // One stderr line per attempt, at most kLinesPerSecond; the rest are counted and reported.
  void log_attempt(uint64_t seq, Format format, const std::string& path, const std::string& model,
                   bool stream, const std::string& outcome, int status, double duration_ms) {
    if (options_.quiet) return;
    constexpr int kLinesPerSecond = 50;
    std::lock_guard lock(log_line_mutex_);
    const auto now = clock_.now();
    if (now - line_window_start_ >= std::chrono::seconds(1)) {
      if (suppressed_lines_ > 0) spdlog::info("({} attempt lines suppressed)", suppressed_lines_);
      line_window_start_ = now;
      lines_in_window_ = 0;
      suppressed_lines_ = 0;
    }
    if (lines_in_window_ >= kLinesPerSecond) {
      ++suppressed_lines_;
      return;
    }
    ++lines_in_window_;
    spdlog::info("attempt #{} {} {} model={} stream={} -> {} {} ({:.1f} ms)", seq,
                 format_name(format), path, model, stream, outcome, status, duration_ms);
  }

  ServerOptions options_;
  const Clock& clock_;
  const Clock::time_point started_;
  std::mutex mutex_;  // guards fail_counts_ and flap_epoch_
  std::unordered_map<std::string, int64_t> fail_counts_;
  Clock::time_point flap_epoch_;
  const uint64_t instance_;
  AttemptLog log_;
  QuotaLimiter quota_;
  std::atomic<int64_t> open_connections_{0};
  std::atomic<int64_t> peak_open_connections_{0};
  std::atomic<int64_t> active_streams_{0};
  std::atomic<int64_t> peak_active_streams_{0};
  std::atomic<int64_t> requests_total_{0};
  std::atomic<int64_t> attempts_total_{0};
  std::atomic<int64_t> rate_limited_total_{0};  // 429s sent by --limit-rpm / --limit-tpm
  std::atomic<int64_t> status_429_total_{0};    // every 429 sent, scripted ones included
  std::mutex log_line_mutex_;
  Clock::time_point line_window_start_{};
  int lines_in_window_ = 0;
  int64_t suppressed_lines_ = 0;
  std::atomic<bool> stopped_{false};
  uint16_t port_ = 0;
  // Declared after every piece of state the connections touch: destroying the io_context
  // destroys the suspended connection coroutines, whose guards update that state.
  net::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;
uint16_t Server::start() {
  return impl_->start();
}
void Server::stop() {
  impl_->stop();
}
uint16_t Server::port() const {
  return impl_->port();
}

}  // namespace dispatch::fake_provider
