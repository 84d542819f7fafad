// Included first on purpose: it brings <utility>, which Boost 1.74's awaitable.hpp uses
// (std::exchange) without including.
#include "test_http_server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

namespace dispatch::worker::test_support {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// Streams that wait on the client are bounded so a broken test cannot hang the server.
constexpr int kMaxStreamChunks = 2000;
constexpr auto kGateTimeout = 5s;
constexpr auto kHoldTimeout = 10s;

std::string chunk(std::string_view data) {
  char size[32];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out(size, static_cast<std::size_t>(n));
  out.append(data);
  out.append("\r\n");
  return out;
}

constexpr std::string_view kChunkedHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

}  // namespace

struct TestHttpServer::Impl {
  TestHttpServer& owner;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  uint16_t port = 0;

  explicit Impl(TestHttpServer& server) : owner(server) {
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(4096);  // the 1,000-transfer test connects in one burst
    port = acceptor.local_endpoint().port();
    asio::co_spawn(io, accept_loop(), asio::detached);
    thread = std::thread([this] { io.run(); });
  }

  ~Impl() {
    io.stop();
    thread.join();
  }

  awaitable<void> accept_loop() {
    for (;;) {
      tcp::socket socket = co_await acceptor.async_accept(use_awaitable);
      owner.accepted_.fetch_add(1);
      socket.set_option(tcp::no_delay(true));
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }

  awaitable<void> session(tcp::socket socket) {
    try {
      beast::flat_buffer buffer;
      for (;;) {
        http::request<http::string_body> request;
        co_await http::async_read(socket, buffer, request, use_awaitable);
        owner.requests_.fetch_add(1);
        const bool keep_alive = co_await respond(socket, request);
        if (!keep_alive || !request.keep_alive()) break;
      }
    } catch (const std::exception&) {
      // the client closed the connection: normal end of a session
    }
    beast::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
  }

  static awaitable<void> write(tcp::socket& socket, std::string_view bytes) {
    co_await asio::async_write(socket, asio::buffer(bytes.data(), bytes.size()), use_awaitable);
  }

  awaitable<bool> respond(tcp::socket& socket, const http::request<http::string_body>& request) {
    const std::string target(request.target());
    asio::steady_timer timer(io);
    if (target == "/hello") {
      std::string echo;
      if (auto it = request.find("X-Echo"); it != request.end()) echo = std::string(it->value());
      const std::string body = "hello world";
      std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test-Header: Yes\r\n";
      head += "X-Echo: " + echo + "\r\n";
      head += "X-Body-Length: " + std::to_string(request.body().size()) + "\r\n";
      head += "X-Method: " + std::string(request.method_string()) + "\r\n";
      head += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
      co_await write(socket, head + body);
      co_return true;
    }
    if (target == "/empty") {
      co_await write(socket, "HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n");
      co_return true;
    }
    if (target == "/status/503") {
      const std::string body = R"({"error":"overloaded"})";
      co_await write(socket,
                     "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n"
                     "Content-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body);
      co_return true;
    }
    if (target == "/continue") {
      co_await write(socket,
                     "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                     "HTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 14\r\n\r\nafter-continue");
      co_return true;
    }
    if (target == "/stream-gated") {
      co_await write(socket, std::string(kChunkedHead) + chunk("first\n"));
      const auto deadline = std::chrono::steady_clock::now() + kGateTimeout;
      while (!owner.gate_open_.load() && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(1ms);
        co_await timer.async_wait(use_awaitable);
      }
      co_await write(socket, chunk("second\n") + "0\r\n\r\n");
      owner.gated_finished_.store(true);
      co_return true;
    }
    if (target == "/stream-forever") {
      co_await write(socket, kChunkedHead);
      try {
        for (int i = 0; i < kMaxStreamChunks; ++i) {
          co_await write(socket, chunk("data: {\"n\":" + std::to_string(i) + "}\n\n"));
          timer.expires_after(5ms);
          co_await timer.async_wait(use_awaitable);
        }
      } catch (const std::exception&) {
        owner.aborted_streams_.fetch_add(1);
      }
      co_return false;
    }
    if (target == "/hold") {
      co_await write(socket, std::string(kChunkedHead) + chunk("held\n"));
      // Wait for the client to go away: a read completes (with an error) when it closes.
      char byte = 0;
      timer.expires_after(kHoldTimeout);
      timer.async_wait([&socket](const beast::error_code& ec) {
        if (!ec) socket.cancel();
      });
      beast::error_code ec;
      co_await socket.async_read_some(asio::buffer(&byte, 1),
                                      asio::redirect_error(use_awaitable, ec));
      timer.cancel();
      if (ec) owner.aborted_streams_.fetch_add(1);
      co_return false;
    }
    if (target == "/partial") {
      co_await write(socket, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
      co_return false;  // closes with 90 bytes owed
    }
    co_await write(socket, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    co_return true;
  }
};

TestHttpServer::TestHttpServer() : impl_(std::make_unique<Impl>(*this)) {}

TestHttpServer::~TestHttpServer() = default;

uint16_t TestHttpServer::port() const {
  return impl_->port;
}

std::string TestHttpServer::url(std::string_view path) const {
  return "http://127.0.0.1:" + std::to_string(port()) + std::string(path);
}

}  // namespace dispatch::worker::test_support
