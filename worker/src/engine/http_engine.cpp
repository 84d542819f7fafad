#include "dispatch/worker/http_engine.hpp"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dispatch/common/strings.hpp"
#include "http_engine_impl.hpp"

namespace dispatch::worker {
namespace {

using protocol::ErrorKind;

// Response headers beyond this are a broken or hostile server; the transfer fails instead of
// growing without bound (curl itself caps a single header line at 100 KiB).
constexpr std::size_t kMaxResponseHeaderBytes = 64 * 1024;
// Idle easy handles kept for reuse. Each holds curl's per-handle state (a few KB plus its
// receive buffer), so the pool is capped rather than sized to the peak.
constexpr std::size_t kMaxPooledTransfers = 512;
constexpr long kReceiveBufferBytes = 4096;

void ensure_curl_global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK) {
      throw std::runtime_error(std::string("curl_global_init: ") + curl_easy_strerror(rc));
    }
  });
}

// Verbose output without secrets: request headers (Authorization, x-api-key) and bodies are
// never passed on.
int debug_callback(CURL*, curl_infotype type, char* data, size_t size, void*) {
  if (type == CURLINFO_TEXT || type == CURLINFO_HEADER_IN) {
    spdlog::debug("curl: {}", trim(std::string_view(data, size)));
  }
  return 0;
}

}  // namespace

const std::string* find_header(const HttpHeaders& headers, std::string_view name) {
  for (const auto& header : headers) {
    if (iequals(header.name, name)) return &header.value;
  }
  return nullptr;
}

TransportError classify_curl_error(int curl_code, std::string_view curl_message) {
  TransportError error;
  error.curl_code = curl_code;
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
    case CURLE_PROXY:
    case CURLE_SSL_CLIENTCERT:
      error.kind = ErrorKind::network;
      break;
    case CURLE_OPERATION_TIMEDOUT:
      error.kind = ErrorKind::timeout;
      break;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_WRITE_ERROR:
      // Only our own callbacks abort a transfer, and they do so only when it was cancelled.
      error.kind = ErrorKind::cancelled;
      break;
    default:
      error.kind = ErrorKind::internal;
      break;
  }
  const char* generic = curl_easy_strerror(static_cast<CURLcode>(curl_code));
  error.message = curl_message.empty() ? std::string(generic)
                                       : std::string(generic) + ": " + std::string(curl_message);
  return error;
}

HttpEngine::Impl::Impl(EventLoop& event_loop, HttpEngineOptions engine_options)
    : loop(event_loop), options(engine_options) {
  ensure_curl_global_init();
  multi.reset(curl_multi_init());
  if (!multi) throw std::runtime_error("curl_multi_init failed");
  CURLM* m = multi.get();
  curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, &Impl::socket_callback);
  curl_multi_setopt(m, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, &Impl::timer_callback);
  curl_multi_setopt(m, CURLMOPT_TIMERDATA, this);
  curl_multi_setopt(m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
  curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, options.max_host_connections);
  curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, options.max_total_connections);
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, options.connection_cache);
}

HttpEngine::Impl::~Impl() {
  // No listener callbacks from here on: detach every transfer, then let curl close its
  // connections (which may still report sockets to unwatch).
  for (auto& [id, transfer] : transfers) {
    if (transfer->in_multi) curl_multi_remove_handle(multi.get(), transfer->easy.get());
  }
  for (auto& transfer : deferred_removals) {
    if (transfer->in_multi) curl_multi_remove_handle(multi.get(), transfer->easy.get());
  }
  transfers.clear();
  deferred_removals.clear();
  deferred_adds.clear();
  pool.clear();
  multi.reset();
  loop.cancel(curl_timer);
  for (std::size_t fd = 0; fd < watched_sockets.size(); ++fd) {
    if (watched_sockets[fd] != 0) loop.unwatch(static_cast<int>(fd));
  }
}

// Nothing may unwind through curl's C frames: every callback curl calls catches.
int HttpEngine::Impl::socket_callback(CURL*, curl_socket_t fd, int what, void* userp,
                                      void*) noexcept {
  try {
    static_cast<Impl*>(userp)->update_socket(fd, what);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("http engine: watching curl socket {} failed: {}", fd, e.what());
    return -1;  // curl fails the transfers on this socket
  }
}

void HttpEngine::Impl::update_socket(curl_socket_t fd, int what) {
  if (what == CURL_POLL_REMOVE) {
    loop.unwatch(fd);
    if (static_cast<std::size_t>(fd) < watched_sockets.size()) {
      watched_sockets[fd] = 0;
    }
    return;
  }
  uint32_t interest = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) interest |= kReadable;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) interest |= kWritable;
  if (static_cast<std::size_t>(fd) >= watched_sockets.size()) {
    watched_sockets.resize(static_cast<std::size_t>(fd) + 1);
  }
  watched_sockets[fd] = 1;
  loop.watch(fd, interest, [this, fd](uint32_t ready) { on_socket_ready(fd, ready); });
}

int HttpEngine::Impl::timer_callback(CURLM*, long timeout_ms, void* userp) noexcept {
  try {
    static_cast<Impl*>(userp)->update_timer(timeout_ms);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("http engine: arming curl's timer failed: {}", e.what());
    return -1;
  }
}

void HttpEngine::Impl::update_timer(long timeout_ms) {
  loop.cancel(curl_timer);
  curl_timer = kNoTimer;
  if (timeout_ms >= 0) {
    // Never act inline: curl may be mid-call; the loop runs a 0 ms timer on its next pass.
    curl_timer = loop.schedule_after(std::chrono::milliseconds(timeout_ms), [this] {
      curl_timer = kNoTimer;
      socket_action(CURL_SOCKET_TIMEOUT, 0);
    });
  }
}

void HttpEngine::Impl::on_socket_ready(int fd, uint32_t ready) {
  int mask = 0;
  if ((ready & kReadable) != 0) mask |= CURL_CSELECT_IN;
  if ((ready & kWritable) != 0) mask |= CURL_CSELECT_OUT;
  if ((ready & kError) != 0) mask |= CURL_CSELECT_ERR;
  socket_action(fd, mask);
}

void HttpEngine::Impl::socket_action(curl_socket_t fd, int mask) {
  int running = 0;
  ++curl_depth;
  const CURLMcode rc = curl_multi_socket_action(multi.get(), fd, mask, &running);
  --curl_depth;
  if (rc != CURLM_OK) spdlog::error("curl_multi_socket_action: {}", curl_multi_strerror(rc));
  after_curl();
}

void HttpEngine::Impl::after_curl() {
  if (curl_depth > 0) return;
  // Loop: finishing transfers runs listeners, which may cancel or start others.
  for (int round = 0; round < 1'000'000; ++round) {
    bool progressed = flush_deferred();
    int queued = 0;
    CURLMsg* msg = curl_multi_info_read(multi.get(), &queued);
    if (msg != nullptr) {
      progressed = true;
      if (msg->msg == CURLMSG_DONE) finish(msg->easy_handle, msg->data.result);
    }
    if (!progressed) return;
  }
}

bool HttpEngine::Impl::flush_deferred() {
  if (deferred_adds.empty() && deferred_removals.empty()) return false;
  // Adds first: a transfer cancelled before its add is parked in the removals, which keep
  // it alive until here.
  auto adds = std::move(deferred_adds);
  deferred_adds.clear();
  for (Transfer* transfer : adds) {
    if (!transfer->cancelled) add_to_multi(*transfer);
  }
  auto removals = std::move(deferred_removals);
  deferred_removals.clear();
  for (auto& transfer : removals) recycle(std::move(transfer));
  return true;
}

size_t HttpEngine::Impl::header_callback(char* data, size_t size, size_t count,
                                         void* userp) noexcept {
  auto& transfer = *static_cast<Transfer*>(userp);
  try {
    return transfer.engine->on_header_line(transfer, std::string_view(data, size * count));
  } catch (const std::exception& e) {
    spdlog::error("http engine: response header handling failed: {}", e.what());
    transfer.listener_threw = true;
    return 0;
  }
}

size_t HttpEngine::Impl::on_header_line(Transfer& transfer, std::string_view line) {
  const size_t bytes = line.size();
  if (transfer.cancelled || transfer.listener_threw) return 0;
  if (transfer.response_started) return bytes;  // trailers after the body: not used
  transfer.response_header_bytes += bytes;
  if (transfer.response_header_bytes > kMaxResponseHeaderBytes) {
    transfer.header_overflow = true;
    return 0;
  }
  if (line.starts_with("HTTP/")) {
    // A new header block: the previous one was an interim 1xx response.
    transfer.response_headers.clear();
    transfer.status = 0;
    const auto space = line.find(' ');
    if (space != std::string_view::npos) {
      const std::string_view code = line.substr(space + 1, 3);
      std::from_chars(code.data(), code.data() + code.size(), transfer.status);
    }
    return bytes;
  }
  const std::string_view content = trim(line);
  if (content.empty()) {
    if (transfer.status >= 100 && transfer.status < 200) return bytes;
    start_response(transfer);
    return transfer.cancelled || transfer.listener_threw ? 0 : bytes;
  }
  if (line.front() == ' ' || line.front() == '\t') {
    // obs-fold continuation of the previous header's value
    if (!transfer.response_headers.empty()) {
      auto& value = transfer.response_headers.back().value;
      value.push_back(' ');
      value.append(content);
    }
    return bytes;
  }
  const auto colon = content.find(':');
  if (colon == std::string_view::npos) return bytes;  // not a header; tolerate
  HttpHeader header;
  header.name.reserve(colon);
  for (char c : trim(content.substr(0, colon))) header.name.push_back(ascii_lower(c));
  header.value.assign(trim(content.substr(colon + 1)));
  transfer.response_headers.push_back(std::move(header));
  return bytes;
}

size_t HttpEngine::Impl::write_callback(char* data, size_t size, size_t count,
                                        void* userp) noexcept {
  auto& transfer = *static_cast<Transfer*>(userp);
  const size_t bytes = size * count;
  if (transfer.cancelled || transfer.listener_threw) return 0;
  if (!transfer.response_started) {
    transfer.engine->start_response(transfer);
    if (transfer.cancelled || transfer.listener_threw) return 0;
  }
  try {
    transfer.listener->on_body(std::string_view(data, bytes));
  } catch (const std::exception& e) {
    spdlog::error("http engine: on_body threw: {}", e.what());
    transfer.listener_threw = true;
  }
  return transfer.cancelled || transfer.listener_threw ? 0 : bytes;
}

void HttpEngine::Impl::start_response(Transfer& transfer) {
  if (transfer.response_started) return;
  transfer.response_started = true;
  if (transfer.status == 0) {
    long code = 0;
    curl_easy_getinfo(transfer.easy.get(), CURLINFO_RESPONSE_CODE, &code);
    transfer.status = static_cast<int>(code);
  }
  try {
    transfer.listener->on_response_start(transfer.status, transfer.response_headers);
  } catch (const std::exception& e) {
    spdlog::error("http engine: on_response_start threw: {}", e.what());
    transfer.listener_threw = true;
  }
  // The listener has seen them; a long stream should not keep them alive.
  transfer.response_headers.clear();
}

HttpEngine::Impl::TransferPtr HttpEngine::Impl::acquire() {
  if (!pool.empty()) {
    TransferPtr transfer = std::move(pool.back());
    pool.pop_back();
    return transfer;
  }
  auto transfer = std::make_unique<Transfer>();
  transfer->engine = this;
  transfer->easy.reset(curl_easy_init());
  if (!transfer->easy) throw std::runtime_error("curl_easy_init failed");
  return transfer;
}

void HttpEngine::Impl::recycle(TransferPtr transfer) {
  if (transfer->in_multi) {
    curl_multi_remove_handle(multi.get(), transfer->easy.get());
    transfer->in_multi = false;
  }
  if (pool.size() >= kMaxPooledTransfers) return;  // freed here
  // Keeps the handle (and its allocations) but forgets every option and the request.
  curl_easy_reset(transfer->easy.get());
  transfer->id = 0;
  transfer->listener = nullptr;
  transfer->request = HttpRequest{};
  transfer->header_list.reset();
  transfer->response_headers.clear();
  transfer->response_header_bytes = 0;
  transfer->status = 0;
  transfer->response_started = false;
  transfer->cancelled = false;
  transfer->header_overflow = false;
  transfer->listener_threw = false;
  pool.push_back(std::move(transfer));
}

void HttpEngine::Impl::configure(Transfer& transfer, const TransferOptions& transfer_options) {
  configure_connection(transfer, transfer_options);
  configure_method(transfer);
  configure_headers(transfer);
}

// Callbacks, buffers, timeouts and protocol: what every transfer sets the same way.
void HttpEngine::Impl::configure_connection(Transfer& transfer,
                                            const TransferOptions& transfer_options) {
  CURL* easy = transfer.easy.get();
  transfer.error_buffer[0] = '\0';
  curl_easy_setopt(easy, CURLOPT_URL, transfer.request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PRIVATE, &transfer);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error_buffer.data());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::write_callback);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Impl::header_callback);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  // Provider responses are small or streamed in small events: a 4 KiB receive buffer instead
  // of curl's 16 KiB saves 12 KiB per transfer (120 MB at 10,000 in flight) at no cost
  // that matters here; TLS keeps its own record buffer anyway.
  curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, kReceiveBufferBytes);
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
  curl_easy_setopt(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(transfer_options.connect_timeout_ms));
  if (transfer_options.total_timeout_ms > 0) {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(transfer_options.total_timeout_ms));
  }
  if (transfer.request.url.starts_with("https://")) {
    // Wait for a connection that may multiplex (HTTP/2) rather than open a new one each.
    curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
  }
  if (options.verbose) {
    curl_easy_setopt(easy, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(easy, CURLOPT_DEBUGFUNCTION, &debug_callback);
  }
}

// The body is sent from the request the transfer owns, without a copy.
void HttpEngine::Impl::configure_method(Transfer& transfer) {
  CURL* easy = transfer.easy.get();
  const HttpRequest& request = transfer.request;
  if (request.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    if (request.method != "POST") {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
  }
}

void HttpEngine::Impl::configure_headers(Transfer& transfer) {
  curl_slist* list = nullptr;
  bool has_expect = false;
  std::string line;
  for (const auto& header : transfer.request.headers) {
    has_expect = has_expect || iequals(header.name, "expect");
    line.assign(header.name);
    // "Name;" is curl's syntax for sending a header with an empty value.
    if (header.value.empty()) {
      line.push_back(';');
    } else {
      line.append(": ");
      line.append(header.value);
    }
    curl_slist* next = curl_slist_append(list, line.c_str());
    if (next == nullptr) {
      curl_slist_free_all(list);
      throw std::bad_alloc();
    }
    list = next;
  }
  // curl would send "Expect: 100-continue" for large bodies and wait for a 100 that many
  // servers never send: suppress it.
  if (!has_expect) {
    if (curl_slist* next = curl_slist_append(list, "Expect:"); next != nullptr) list = next;
  }
  transfer.header_list.reset(list);
  curl_easy_setopt(transfer.easy.get(), CURLOPT_HTTPHEADER, list);
}

void HttpEngine::Impl::add_to_multi(Transfer& transfer) {
  const CURLMcode rc = curl_multi_add_handle(multi.get(), transfer.easy.get());
  if (rc == CURLM_OK) {
    transfer.in_multi = true;
    return;
  }
  // Report through the loop: listeners never run inside start().
  spdlog::error("curl_multi_add_handle: {}", curl_multi_strerror(rc));
  const TransferId id = transfer.id;
  loop.post([this, id, message = std::string(curl_multi_strerror(rc))] {
    auto it = transfers.find(id);
    if (it == transfers.end()) return;
    TransferPtr failed = std::move(it->second);
    transfers.erase(it);
    TransferListener* listener = failed->listener;
    recycle(std::move(failed));
    TransportError error;
    error.kind = ErrorKind::internal;
    error.message = "curl_multi_add_handle: " + message;
    complete(*listener, error);
  });
}

TransferId HttpEngine::Impl::start(HttpRequest request, const TransferOptions& transfer_options,
                                   TransferListener& listener) {
  TransferPtr transfer = acquire();
  transfer->id = next_id++;
  transfer->listener = &listener;
  transfer->request = std::move(request);
  configure(*transfer, transfer_options);
  Transfer& ref = *transfer;
  const TransferId id = ref.id;
  transfers.emplace(id, std::move(transfer));
  if (curl_depth > 0) {
    deferred_adds.push_back(&ref);
  } else {
    add_to_multi(ref);
  }
  return id;
}

void HttpEngine::Impl::cancel(TransferId id) {
  auto it = transfers.find(id);
  if (it == transfers.end()) return;
  TransferPtr transfer = std::move(it->second);
  transfers.erase(it);
  transfer->cancelled = true;  // our callbacks now refuse bytes, so curl aborts it
  if (curl_depth > 0) {
    deferred_removals.push_back(std::move(transfer));
  } else {
    recycle(std::move(transfer));
  }
}

void HttpEngine::Impl::finish(CURL* easy, CURLcode result) {
  Transfer* raw = nullptr;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, &raw);
  if (raw == nullptr) return;
  auto it = transfers.find(raw->id);
  if (it == transfers.end() || it->second.get() != raw) {
    // Cancelled: already detached, only its removal is pending.
    curl_multi_remove_handle(multi.get(), easy);
    raw->in_multi = false;
    return;
  }
  if (result == CURLE_OK && !raw->response_started) {
    // An empty body never reached the write callback (nor, for HEAD, the header end).
    // The listener may cancel from in there: treat it like a curl callback so the transfer
    // is parked, not freed, under our feet.
    ++curl_depth;
    start_response(*raw);
    --curl_depth;
    if (raw->cancelled) return;  // now owned by deferred_removals
    it = transfers.find(raw->id);
  }
  TransferPtr transfer = std::move(it->second);
  transfers.erase(it);
  TransferListener* listener = transfer->listener;
  std::optional<TransportError> error;
  if (transfer->listener_threw) {
    error = TransportError{ErrorKind::internal, static_cast<int>(result),
                           "a response listener threw; transfer aborted"};
  } else if (result == CURLE_OK) {
    // complete at the HTTP level
  } else if (transfer->header_overflow) {
    error = TransportError{ErrorKind::network, static_cast<int>(result),
                           "response headers exceed 64 KiB"};
  } else {
    error = classify_curl_error(result, transfer->error_buffer.data());
  }
  recycle(std::move(transfer));
  complete(*listener, error);
}

void HttpEngine::Impl::complete(TransferListener& listener,
                                const std::optional<TransportError>& error) {
  try {
    listener.on_complete(error);
  } catch (const std::exception& e) {
    spdlog::error("http engine: on_complete threw: {}", e.what());
  }
}

HttpEngine::HttpEngine(EventLoop& loop, HttpEngineOptions options)
    : impl_(std::make_unique<Impl>(loop, options)) {}

HttpEngine::~HttpEngine() = default;

TransferId HttpEngine::start(HttpRequest request, const TransferOptions& options,
                             TransferListener& listener) {
  return impl_->start(std::move(request), options, listener);
}

void HttpEngine::cancel(TransferId id) {
  impl_->cancel(id);
}

std::size_t HttpEngine::active_transfers() const {
  return impl_->transfers.size();
}

}  // namespace dispatch::worker
