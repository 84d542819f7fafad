#pragma once

// A blocking TCP client for tests that must see HTTP byte by byte: hostile requests, SSE
// framing, pipelining, connection limits. Every wait is bounded.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "dispatch/common/fd.hpp"

namespace dispatch::gateway::test {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;                            // de-chunked
  bool chunked = false;
  bool complete = false;  // the body ended as its framing says (length, last chunk)
  std::string raw_body;   // as it came, framing included
};

class RawConnection {
 public:
  explicit RawConnection(uint16_t port);
  bool valid() const { return fd_.valid(); }

  void send(std::string_view bytes);
  // Reads until `marker` has arrived (true) or `timeout` / EOF (false). Everything read so far
  // is in received().
  bool read_until(std::string_view marker,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads until the peer closes; true when it did within `timeout`.
  bool read_until_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // One whole response, consumed from the received bytes.
  std::optional<HttpResponse> read_response(
      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  const std::string& received() const { return received_; }
  bool closed() const { return closed_; }
  void close() { fd_.reset(); }
  // Closes with RST (SO_LINGER 0), as a killed client would.
  void abort();

 private:
  // Reads what is available within `timeout`; false on EOF or timeout without data.
  bool read_some(std::chrono::milliseconds timeout);

  UniqueFd fd_;
  std::string received_;
  bool closed_ = false;
};

// "POST path HTTP/1.1" with a JSON body and the usual headers.
std::string post_request(std::string_view path, std::string_view body,
                         std::string_view extra_headers = {});

}  // namespace dispatch::gateway::test
