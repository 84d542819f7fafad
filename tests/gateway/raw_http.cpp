#include "raw_http.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "dispatch/common/strings.hpp"

namespace dispatch::gateway::test {

RawConnection::RawConnection(uint16_t port) {
  fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    fd_.reset();
    return;
  }
  const int one = 1;
  ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void RawConnection::send(std::string_view bytes) {
  while (!bytes.empty() && fd_.valid()) {
    const ssize_t sent = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
}

void RawConnection::abort() {
  const linger hard{1, 0};
  ::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  fd_.reset();
}

bool RawConnection::read_some(std::chrono::milliseconds timeout) {
  if (!fd_.valid() || closed_) return false;
  pollfd item{fd_.get(), POLLIN, 0};
  if (::poll(&item, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char buffer[65536];
  const ssize_t got = ::recv(fd_.get(), buffer, sizeof buffer, 0);
  if (got <= 0) {
    closed_ = true;
    return false;
  }
  received_.append(buffer, static_cast<std::size_t>(got));
  return true;
}

bool RawConnection::read_until(std::string_view marker, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (received_.find(marker) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !read_some(left)) return received_.find(marker) != std::string::npos;
  }
  return true;
}

bool RawConnection::read_until_closed(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    read_some(left);
  }
  return true;
}

namespace {

// Parses a chunked body from `text`; the bytes used, or nullopt while incomplete.
std::optional<std::size_t> dechunk(std::string_view text, std::string& body) {
  std::size_t at = 0;
  for (;;) {
    const std::size_t line_end = text.find("\r\n", at);
    if (line_end == std::string_view::npos) return std::nullopt;
    const std::size_t size = std::stoul(std::string(text.substr(at, line_end - at)), nullptr, 16);
    at = line_end + 2;
    if (size == 0) return text.size() >= at + 2 ? std::optional(at + 2) : std::nullopt;
    if (text.size() < at + size + 2) return std::nullopt;
    body.append(text.substr(at, size));
    at += size + 2;
  }
}

}  // namespace

std::optional<HttpResponse> RawConnection::read_response(std::chrono::milliseconds timeout) {
  if (!read_until("\r\n\r\n", timeout)) return std::nullopt;
  const std::size_t head_end = received_.find("\r\n\r\n");
  HttpResponse response;
  const std::string head = received_.substr(0, head_end);
  response.status = std::stoi(head.substr(9, 3));
  std::size_t line = head.find("\r\n");
  while (line != std::string::npos) {
    const std::size_t next = head.find("\r\n", line + 2);
    const std::string field =
        head.substr(line + 2, next == std::string::npos ? std::string::npos : next - line - 2);
    const std::size_t colon = field.find(':');
    response.headers[to_lower(field.substr(0, colon))] = std::string(trim(field.substr(colon + 1)));
    line = next;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now());
  };
  const std::size_t body_start = head_end + 4;
  std::size_t used = 0;
  if (response.headers.count("content-length")) {
    const std::size_t length = std::stoul(response.headers["content-length"]);
    while (received_.size() < body_start + length && left().count() > 0 && read_some(left())) {
    }
    response.complete = received_.size() >= body_start + length;
    used = std::min(received_.size(), body_start + length);
    response.body = received_.substr(body_start, used - body_start);
    response.raw_body = response.body;
  } else if (response.headers["transfer-encoding"] == "chunked") {
    response.chunked = true;
    std::optional<std::size_t> end;
    for (;;) {
      response.body.clear();
      end = dechunk(std::string_view(received_).substr(body_start), response.body);
      if (end || left().count() <= 0 || !read_some(left())) break;
    }
    response.complete = end.has_value();
    used = end ? body_start + *end : received_.size();
    response.raw_body = received_.substr(body_start, used - body_start);
  } else {
    read_until_closed(left());
    used = received_.size();
    response.body = received_.substr(body_start);
    response.raw_body = response.body;
    response.complete = closed_;
  }
  received_.erase(0, used);
  return response;
}

std::string post_request(std::string_view path, std::string_view body,
                         std::string_view extra_headers) {
  std::string request = "POST " + std::string(path) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  request +=
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  request += extra_headers;
  request += "\r\n";
  request += body;
  return request;
}

}  // namespace dispatch::gateway::test
