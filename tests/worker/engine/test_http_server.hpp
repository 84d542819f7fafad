#pragma once

// A small HTTP/1.1 server for the engine tests, on 127.0.0.1:<ephemeral> with its own thread.
// Responses are written as raw bytes so tests control framing exactly (chunking, a cut body,
// an interim 100 response). Routes:
//   /hello          200, "hello world", echoes X-Echo and the request body length as headers
//   /empty          204, no body
//   /status/503     503 with a small JSON body
//   /continue       "100 Continue" first, then 200 "after-continue"
//   /stream-gated   chunked: "first\n", waits for open_gate(), then "second\n"
//   /stream-forever chunked: a chunk every 5 ms until the client goes away (bounded)
//   /hold           chunked: one chunk, then silence until the client goes away (bounded)
//   /partial        Content-Length: 100, 10 bytes, then the connection is closed

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>  // before any Boost.Asio header: see test_http_server.cpp

namespace dispatch::worker::test_support {

class TestHttpServer {
 public:
  TestHttpServer();
  ~TestHttpServer();
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  uint16_t port() const;
  std::string url(std::string_view path) const;

  int accepted_connections() const { return accepted_.load(); }
  int requests_served() const { return requests_.load(); }
  // Streams whose writes failed because the client closed the connection.
  int aborted_streams() const { return aborted_streams_.load(); }
  bool gated_stream_finished() const { return gated_finished_.load(); }
  void open_gate() { gate_open_.store(true); }

 private:
  struct Impl;
  friend struct Impl;
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> aborted_streams_{0};
  std::atomic<bool> gate_open_{false};
  std::atomic<bool> gated_finished_{false};
  std::unique_ptr<Impl> impl_;
};

}  // namespace dispatch::worker::test_support
