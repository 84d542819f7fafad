#include "dispatch/worker/http_engine.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch/common/fd.hpp"
#include "test_http_server.hpp"

namespace dispatch::worker {
namespace {

using namespace std::chrono_literals;
using protocol::ErrorKind;
using test_support::TestHttpServer;

template <typename Pred>
bool run_until(EventLoop& loop, Pred done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    loop.run_once(10);
  }
  return true;
}

struct RecordingListener : TransferListener {
  int status = 0;
  HttpHeaders headers;
  std::string body;
  int starts = 0;
  int body_calls = 0;
  int completes = 0;
  std::optional<TransportError> error;
  std::function<void()> on_start_hook;
  std::function<void(std::string_view)> on_body_hook;
  std::function<void()> on_complete_hook;

  void on_response_start(int response_status, const HttpHeaders& response_headers) override {
    ++starts;
    status = response_status;
    headers = response_headers;
    if (on_start_hook) on_start_hook();
  }
  void on_body(std::string_view bytes) override {
    ++body_calls;
    body.append(bytes);
    if (on_body_hook) on_body_hook(bytes);
  }
  void on_complete(const std::optional<TransportError>& transport_error) override {
    ++completes;
    error = transport_error;
    if (on_complete_hook) on_complete_hook();
  }
  bool done() const { return completes > 0; }
  std::string header(std::string_view name) const {
    const std::string* value = find_header(headers, name);
    return value != nullptr ? *value : std::string("<absent>");
  }
};

HttpRequest get(std::string url) {
  HttpRequest request;
  request.method = "GET";
  request.url = std::move(url);
  return request;
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

uint16_t bound_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

class HttpEngineTest : public ::testing::Test {
 protected:
  TestHttpServer server_;
  EventLoop loop_;
  std::unique_ptr<HttpEngine> engine_ = std::make_unique<HttpEngine>(loop_);
};

TEST_F(HttpEngineTest, StatusHeadersAndBody) {
  RecordingListener listener;
  HttpRequest request;
  request.url = server_.url("/hello");
  request.headers = {{"X-Echo", "ping"}, {"Content-Type", "application/json"}};
  request.body = R"({"model":"m"})";
  engine_->start(std::move(request), {}, listener);
  EXPECT_EQ(engine_->active_transfers(), 1u);
  EXPECT_EQ(listener.starts, 0);  // never called from inside start()
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));

  EXPECT_FALSE(listener.error.has_value());
  EXPECT_EQ(listener.starts, 1);
  EXPECT_EQ(listener.status, 200);
  EXPECT_EQ(listener.body, "hello world");
  EXPECT_EQ(listener.header("x-test-header"), "Yes");
  EXPECT_EQ(listener.header("X-ECHO"), "ping");
  EXPECT_EQ(listener.header("x-body-length"), "13");
  EXPECT_EQ(listener.header("x-method"), "POST");
  for (const auto& h : listener.headers) {
    for (char c : h.name) EXPECT_FALSE(c >= 'A' && c <= 'Z') << h.name;
  }
  EXPECT_EQ(engine_->active_transfers(), 0u);
}

TEST_F(HttpEngineTest, ErrorStatusIsAResponseNotATransportError) {
  RecordingListener listener;
  engine_->start(get(server_.url("/status/503")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  EXPECT_FALSE(listener.error.has_value());
  EXPECT_EQ(listener.status, 503);
  EXPECT_EQ(listener.header("retry-after"), "2");
  EXPECT_EQ(listener.body, R"({"error":"overloaded"})");
}

TEST_F(HttpEngineTest, EmptyBodyStillStartsResponse) {
  RecordingListener listener;
  engine_->start(get(server_.url("/empty")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  EXPECT_FALSE(listener.error.has_value());
  EXPECT_EQ(listener.starts, 1);
  EXPECT_EQ(listener.status, 204);
  EXPECT_EQ(listener.header("x-empty"), "1");
  EXPECT_EQ(listener.body_calls, 0);
}

TEST_F(HttpEngineTest, InterimResponsesAreSkipped) {
  RecordingListener listener;
  engine_->start(get(server_.url("/continue")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  EXPECT_FALSE(listener.error.has_value());
  EXPECT_EQ(listener.starts, 1);
  EXPECT_EQ(listener.status, 200);
  EXPECT_EQ(listener.header("x-final"), "1");
  EXPECT_EQ(listener.header("x-interim"), "<absent>");
  EXPECT_EQ(listener.body, "after-continue");
}

TEST_F(HttpEngineTest, ChunkedBodyIsDeliveredAsItArrives) {
  RecordingListener listener;
  bool server_done_at_first_body = true;
  listener.on_body_hook = [&](std::string_view) {
    if (listener.body_calls == 1) {
      EXPECT_EQ(listener.starts, 1);  // headers before the first body bytes
      server_done_at_first_body = server_.gated_stream_finished();
      server_.open_gate();  // only now may the server send the rest
    }
  };
  engine_->start(get(server_.url("/stream-gated")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  EXPECT_FALSE(server_done_at_first_body);
  EXPECT_FALSE(listener.error.has_value());
  EXPECT_EQ(listener.body, "first\nsecond\n");
  EXPECT_GE(listener.body_calls, 2);
}

TEST_F(HttpEngineTest, SequentialRequestsReuseOneConnection) {
  constexpr int kRequests = 5;
  for (int i = 0; i < kRequests; ++i) {
    RecordingListener listener;
    engine_->start(get(server_.url("/hello")), {}, listener);
    ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
    ASSERT_FALSE(listener.error.has_value());
    ASSERT_EQ(listener.body, "hello world");
  }
  EXPECT_EQ(server_.requests_served(), kRequests);
  EXPECT_EQ(server_.accepted_connections(), 1);
}

TEST_F(HttpEngineTest, StartingTheNextRequestFromOnCompleteReusesTheConnection) {
  constexpr int kRequests = 4;
  int finished = 0;
  RecordingListener listener;
  std::function<void()> next = [&] {
    ++finished;
    if (finished < kRequests) engine_->start(get(server_.url("/hello")), {}, listener);
  };
  listener.on_complete_hook = next;
  engine_->start(get(server_.url("/hello")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return finished == kRequests; }));
  EXPECT_EQ(server_.accepted_connections(), 1);
}

TEST_F(HttpEngineTest, ThousandConcurrentTransfersComplete) {
  constexpr int kTransfers = 1000;
  std::vector<RecordingListener> listeners(kTransfers);
  int completed = 0;
  for (auto& listener : listeners) {
    listener.on_complete_hook = [&] { ++completed; };
    engine_->start(get(server_.url("/hello")), {}, listener);
  }
  EXPECT_EQ(engine_->active_transfers(), static_cast<std::size_t>(kTransfers));
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_until(
      loop_, [&] { return completed == kTransfers; }, 60s));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  int ok = 0;
  for (const auto& listener : listeners) {
    if (!listener.error && listener.status == 200 && listener.body == "hello world" &&
        listener.completes == 1) {
      ++ok;
    }
  }
  EXPECT_EQ(ok, kTransfers);
  EXPECT_EQ(engine_->active_transfers(), 0u);
  std::printf("[          ] %d concurrent transfers in %lld ms over %d connections\n", kTransfers,
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()),
              server_.accepted_connections());
}

TEST_F(HttpEngineTest, HostConnectionLimitIsApplied) {
  HttpEngineOptions options;
  options.max_host_connections = 2;
  engine_ = std::make_unique<HttpEngine>(loop_, options);
  constexpr int kTransfers = 20;
  std::vector<RecordingListener> listeners(kTransfers);
  int completed = 0;
  for (auto& listener : listeners) {
    listener.on_complete_hook = [&] { ++completed; };
    engine_->start(get(server_.url("/hello")), {}, listener);
  }
  ASSERT_TRUE(run_until(loop_, [&] { return completed == kTransfers; }));
  for (const auto& listener : listeners) EXPECT_EQ(listener.body, "hello world");
  EXPECT_LE(server_.accepted_connections(), 2);
}

TEST_F(HttpEngineTest, CancelInsideOnBodyStopsAllCallbacks) {
  RecordingListener listener;
  TransferId id = 0;
  listener.on_body_hook = [&](std::string_view) {
    engine_->cancel(id);
    engine_->cancel(id);  // twice: ignored
  };
  id = engine_->start(get(server_.url("/stream-forever")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.body_calls > 0; }));
  EXPECT_EQ(engine_->active_transfers(), 0u);
  // The connection is closed: the server's next writes fail.
  ASSERT_TRUE(run_until(loop_, [&] { return server_.aborted_streams() == 1; }));
  // And the engine keeps working: a later transfer completes while the cancelled one is silent.
  RecordingListener later;
  engine_->start(get(server_.url("/hello")), {}, later);
  ASSERT_TRUE(run_until(loop_, [&] { return later.done(); }));
  EXPECT_EQ(later.body, "hello world");
  EXPECT_EQ(listener.body_calls, 1);
  EXPECT_EQ(listener.completes, 0);
}

TEST_F(HttpEngineTest, CancelInsideOnResponseStart) {
  RecordingListener listener;
  TransferId id = 0;
  listener.on_start_hook = [&] { engine_->cancel(id); };
  id = engine_->start(get(server_.url("/stream-forever")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.starts > 0; }));
  ASSERT_TRUE(run_until(loop_, [&] { return server_.aborted_streams() == 1; }));
  EXPECT_EQ(listener.body_calls, 0);
  EXPECT_EQ(listener.completes, 0);
}

TEST_F(HttpEngineTest, CancelEmptyBodyTransferFromOnResponseStart) {
  // The response start of an empty body is raised when curl reports completion.
  RecordingListener listener;
  TransferId id = 0;
  listener.on_start_hook = [&] { engine_->cancel(id); };
  id = engine_->start(get(server_.url("/empty")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.starts > 0; }));
  for (int i = 0; i < 5; ++i) loop_.run_once(0);
  EXPECT_EQ(listener.completes, 0);
  EXPECT_EQ(engine_->active_transfers(), 0u);
}

TEST_F(HttpEngineTest, OneListenerCancelsAnotherAndStartsANewOneFromOnBody) {
  RecordingListener victim;
  RecordingListener replacement;
  RecordingListener canceller;
  const TransferId victim_id = engine_->start(get(server_.url("/stream-forever")), {}, victim);
  ASSERT_TRUE(run_until(loop_, [&] { return victim.body_calls > 0; }));
  const int victim_bodies = victim.body_calls;
  canceller.on_body_hook = [&](std::string_view) {
    if (canceller.body_calls == 1) {
      engine_->cancel(victim_id);
      engine_->start(get(server_.url("/hello")), {}, replacement);  // deferred add
    }
  };
  const TransferId canceller_id = engine_->start(get(server_.url("/stream-gated")), {}, canceller);
  (void)canceller_id;
  ASSERT_TRUE(run_until(loop_, [&] { return replacement.done(); }));
  server_.open_gate();
  ASSERT_TRUE(run_until(loop_, [&] { return canceller.done(); }));
  EXPECT_EQ(replacement.body, "hello world");
  EXPECT_EQ(victim.completes, 0);
  EXPECT_LE(victim.body_calls, victim_bodies + 1);  // at most what arrived in the same pass
  EXPECT_EQ(engine_->active_transfers(), 0u);
}

TEST_F(HttpEngineTest, ConnectionRefusedIsNetwork) {
  // Bound but not listening: the kernel answers a SYN with a reset.
  UniqueFd sock(::socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_TRUE(sock.valid());
  const sockaddr_in addr = loopback(0);
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  const uint16_t port = bound_port(sock.get());

  RecordingListener listener;
  engine_->start(get("http://127.0.0.1:" + std::to_string(port) + "/"), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_EQ(listener.error->kind, ErrorKind::network);
  EXPECT_EQ(listener.error->curl_code, CURLE_COULDNT_CONNECT);
  EXPECT_EQ(listener.starts, 0);
  EXPECT_FALSE(listener.error->message.empty());
}

TEST_F(HttpEngineTest, ConnectTimeoutIsTimeout) {
  // A listener with a zero backlog that never accepts: once one connection waits in its
  // queue, the kernel drops further SYNs, so the next connect hangs until our timeout.
  UniqueFd server_socket(::socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_TRUE(server_socket.valid());
  const sockaddr_in any = loopback(0);
  ASSERT_EQ(::bind(server_socket.get(), reinterpret_cast<const sockaddr*>(&any), sizeof any), 0);
  ASSERT_EQ(::listen(server_socket.get(), 0), 0);
  const sockaddr_in target = loopback(bound_port(server_socket.get()));
  std::vector<std::unique_ptr<UniqueFd>> fillers;
  bool queue_full = false;
  for (int i = 0; i < 16 && !queue_full; ++i) {
    auto filler = std::make_unique<UniqueFd>(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    ASSERT_TRUE(filler->valid());
    ::connect(filler->get(), reinterpret_cast<const sockaddr*>(&target), sizeof target);
    pollfd pfd{filler->get(), POLLOUT, 0};
    queue_full = ::poll(&pfd, 1, 100) == 0;  // this connect did not complete: queue is full
    fillers.push_back(std::move(filler));
  }
  ASSERT_TRUE(queue_full);

  RecordingListener listener;
  TransferOptions options;
  options.connect_timeout_ms = 150;
  const auto start = std::chrono::steady_clock::now();
  engine_->start(get("http://127.0.0.1:" + std::to_string(bound_port(server_socket.get())) + "/"),
                 options, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_EQ(listener.error->kind, ErrorKind::timeout);
  EXPECT_EQ(listener.error->curl_code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_GE(elapsed, 140ms);
  EXPECT_LT(elapsed, 3s);
}

TEST_F(HttpEngineTest, TotalTimeoutIsTimeout) {
  RecordingListener listener;
  TransferOptions options;
  options.total_timeout_ms = 100;
  engine_->start(get(server_.url("/stream-forever")), options, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_EQ(listener.error->kind, ErrorKind::timeout);
  EXPECT_GT(listener.body_calls, 0);
}

TEST_F(HttpEngineTest, ServerClosingMidBodyIsNetworkPartialFile) {
  RecordingListener listener;
  engine_->start(get(server_.url("/partial")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_EQ(listener.error->kind, ErrorKind::network);
  EXPECT_EQ(listener.error->curl_code, CURLE_PARTIAL_FILE);
  EXPECT_EQ(listener.status, 200);
  EXPECT_EQ(listener.body, "0123456789");
}

TEST_F(HttpEngineTest, DestructionWithTransfersInFlightIsCleanAndSilent) {
  constexpr int kTransfers = 20;
  std::vector<RecordingListener> listeners(kTransfers);
  for (auto& listener : listeners) engine_->start(get(server_.url("/hold")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] {
    for (const auto& listener : listeners) {
      if (listener.body_calls == 0) return false;
    }
    return true;
  }));
  engine_.reset();
  // Every connection is closed and the loop holds no stale watch of the engine's.
  ASSERT_TRUE(run_until(loop_, [&] { return server_.aborted_streams() == kTransfers; }));
  EXPECT_EQ(loop_.pending_timers(), 0u);
  for (const auto& listener : listeners) EXPECT_EQ(listener.completes, 0);
}

#if !defined(__SANITIZE_ADDRESS__)
TEST_F(HttpEngineTest, HeapPerTransferInFlightIsBounded) {
  // Heap held by curl and the engine per open streaming transfer (connection, easy handle,
  // receive buffer, our bookkeeping). Measured with the allocator's own counters.
  constexpr int kTransfers = 200;
  std::vector<RecordingListener> listeners(kTransfers);
  const std::size_t before = ::mallinfo2().uordblks;
  for (auto& listener : listeners) engine_->start(get(server_.url("/hold")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] {
    for (const auto& listener : listeners) {
      if (listener.body_calls == 0) return false;
    }
    return true;
  }));
  const std::size_t after = ::mallinfo2().uordblks;
  const std::size_t per_transfer = (after - before) / kTransfers;
  std::printf("[          ] heap per in-flight streaming transfer: %zu bytes\n", per_transfer);
  EXPECT_LT(per_transfer, 128u * 1024u);
}
#endif

TEST_F(HttpEngineTest, CancelBeforeAnyProgressAndUnknownIds) {
  RecordingListener listener;
  const TransferId id = engine_->start(get(server_.url("/hello")), {}, listener);
  engine_->cancel(id);
  engine_->cancel(id + 1000);
  engine_->cancel(0);
  EXPECT_EQ(engine_->active_transfers(), 0u);
  RecordingListener later;
  engine_->start(get(server_.url("/hello")), {}, later);
  ASSERT_TRUE(run_until(loop_, [&] { return later.done(); }));
  EXPECT_EQ(listener.starts + listener.body_calls + listener.completes, 0);
}

TEST_F(HttpEngineTest, ThrowingListenerFailsItsTransferAsInternal) {
  RecordingListener listener;
  listener.on_body_hook = [](std::string_view) { throw std::runtime_error("listener bug"); };
  engine_->start(get(server_.url("/stream-forever")), {}, listener);
  ASSERT_TRUE(run_until(loop_, [&] { return listener.done(); }));
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_EQ(listener.error->kind, ErrorKind::internal);
  EXPECT_EQ(listener.body_calls, 1);
  RecordingListener later;  // the engine is unharmed
  engine_->start(get(server_.url("/hello")), {}, later);
  ASSERT_TRUE(run_until(loop_, [&] { return later.done(); }));
  EXPECT_EQ(later.body, "hello world");
}

TEST(ClassifyCurlError, MapsCodesToKinds) {
  const std::vector<std::pair<CURLcode, ErrorKind>> cases = {
      {CURLE_COULDNT_CONNECT, ErrorKind::network},
      {CURLE_COULDNT_RESOLVE_HOST, ErrorKind::network},
      {CURLE_SEND_ERROR, ErrorKind::network},
      {CURLE_RECV_ERROR, ErrorKind::network},
      {CURLE_GOT_NOTHING, ErrorKind::network},
      {CURLE_PARTIAL_FILE, ErrorKind::network},
      {CURLE_SSL_CONNECT_ERROR, ErrorKind::network},
      {CURLE_PEER_FAILED_VERIFICATION, ErrorKind::network},
      {CURLE_HTTP2, ErrorKind::network},
      {CURLE_HTTP2_STREAM, ErrorKind::network},
      {CURLE_OPERATION_TIMEDOUT, ErrorKind::timeout},
      {CURLE_ABORTED_BY_CALLBACK, ErrorKind::cancelled},
      {CURLE_WRITE_ERROR, ErrorKind::cancelled},
      {CURLE_OUT_OF_MEMORY, ErrorKind::internal},
      {CURLE_URL_MALFORMAT, ErrorKind::internal},
      {CURLE_BAD_FUNCTION_ARGUMENT, ErrorKind::internal},
  };
  for (const auto& [code, kind] : cases) {
    const TransportError error = classify_curl_error(code, "detail");
    EXPECT_EQ(error.kind, kind) << curl_easy_strerror(code);
    EXPECT_EQ(error.curl_code, code);
    EXPECT_NE(error.message.find("detail"), std::string::npos);
  }
  EXPECT_FALSE(classify_curl_error(CURLE_COULDNT_CONNECT, "").message.empty());
}

TEST(FindHeader, IsCaseInsensitive) {
  const HttpHeaders headers = {{"content-type", "text/event-stream"}, {"retry-after", "3"}};
  ASSERT_NE(find_header(headers, "Content-Type"), nullptr);
  EXPECT_EQ(*find_header(headers, "CONTENT-TYPE"), "text/event-stream");
  EXPECT_EQ(*find_header(headers, "retry-after"), "3");
  EXPECT_EQ(find_header(headers, "retry-after-ms"), nullptr);
  EXPECT_EQ(find_header({}, "x"), nullptr);
}

TEST(HttpEngineNoServer, MalformedUrlCompletesWithInternalErrorThroughTheLoop) {
  EventLoop loop;
  HttpEngine engine(loop);
  RecordingListener listener;
  engine.start(get("ht!tp://bad url"), {}, listener);
  EXPECT_EQ(listener.completes, 0);
  ASSERT_TRUE(run_until(loop, [&] { return listener.done(); }));
  ASSERT_TRUE(listener.error.has_value());
  EXPECT_NE(listener.error->kind, ErrorKind::cancelled);
}

}  // namespace
}  // namespace dispatch::worker
