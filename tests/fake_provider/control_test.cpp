// Control endpoints (/_fake/log, /_fake/reset, /_fake/stats), CLI flags, HTTP behaviour and
// the in-process library.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "dispatch/fake_provider/server.hpp"
#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

class Control : public FakeProviderTest {};

json minimal_openai(const std::string& model) {
  return json{{"model", model}, {"messages", {user("hi")}}};
}

json stats() {
  return perform({"GET", FakeProviderTest::url("/_fake/stats"), {}, "", 5000}).json_body();
}

TEST_F(Control, LogRecordsEachAttempt) {
  openai(minimal_openai("log-a~tokens=2"));
  openai(json{{"model", "log-b"}, {"stream", true}, {"messages", {user("x")}}});
  anthropic(json{{"model", "log-c"}, {"max_tokens", 5}, {"messages", {user("x")}}});
  const HttpResult all = perform({"GET", url("/_fake/log"), {}, "", 5000});
  ASSERT_EQ(all.status, 200);
  const json list = all.json_body()["attempts"];
  ASSERT_EQ(list.size(), 3u);
  for (size_t i = 0; i < list.size(); ++i) {
    const json& a = list[i];
    EXPECT_EQ(a["seq"], i + 1);
    EXPECT_TRUE(a["t_ms"].is_number_float());
    EXPECT_GE(a["t_ms"].get<double>(), 0);
    EXPECT_GT(a["unix_ms"].get<int64_t>(), 1'700'000'000'000);
    EXPECT_EQ(a["outcome"], "ok");
    EXPECT_EQ(a["status"], 200);
    EXPECT_TRUE(a["end_ms"].is_number());
    EXPECT_FALSE(a.contains("client_closed_ms"));
  }
  EXPECT_LT(list[0]["t_ms"].get<double>(), list[1]["t_ms"].get<double>());
  EXPECT_EQ(list[0]["format"], "openai");
  EXPECT_EQ(list[0]["path"], "/v1/chat/completions");
  EXPECT_EQ(list[0]["model"], "log-a~tokens=2");
  EXPECT_EQ(list[0]["stream"], false);
  EXPECT_EQ(list[1]["stream"], true);
  EXPECT_EQ(list[2]["format"], "anthropic");

  const json filtered = attempts("log-a~tokens=2");
  ASSERT_EQ(filtered.size(), 1u);
  EXPECT_EQ(filtered[0]["seq"], 1);
  EXPECT_TRUE(attempts("log-a").empty()) << "the filter matches the exact model string";
}

TEST_F(Control, FormatsAndOutcomesAreNamed) {
  compatible(minimal_openai("f1"));
  ollama(json{{"model", "f2"}, {"stream", false}, {"messages", {user("x")}}});
  dashscope(json{{"model", "f3"}, {"input", {{"messages", {user("x")}}}}}, false);
  perform({"POST", url("/v1/chat/completions"), {}, minimal_openai("f4").dump(), 5000});
  openai(json{{"model", "f5"}});
  EXPECT_EQ(only_attempt("f1")["format"], "dashscope-compatible");
  EXPECT_EQ(only_attempt("f2")["format"], "ollama");
  EXPECT_EQ(only_attempt("f3")["format"], "dashscope");
  EXPECT_EQ(only_attempt("f4")["outcome"], "auth_failed");
  EXPECT_EQ(only_attempt("f4")["status"], 401);
  EXPECT_EQ(only_attempt("f5")["outcome"], "invalid_request");
}

TEST_F(Control, ResetClearsLogAndCounters) {
  const std::string m = "reset-me~fail_first=1";
  EXPECT_EQ(openai(minimal_openai(m)).status, 500);
  EXPECT_EQ(openai(minimal_openai(m)).status, 200);
  ASSERT_EQ(perform({"POST", url("/_fake/reset"), {}, "", 5000}).status, 200);
  EXPECT_TRUE(attempts(m).empty());
  EXPECT_EQ(openai(minimal_openai(m)).status, 500) << "the fail_first counter starts again";
  EXPECT_EQ(only_attempt(m)["seq"], 1);
}

TEST_F(Control, StatsCountConnectionsAndStreams) {
  const json idle = stats();
  EXPECT_GE(idle["open_connections"].get<int>(), 1);  // this request's own connection
  EXPECT_EQ(idle["active_streams"], 0);

  // One hanging request and one stalled stream, each in its own thread with a client timeout.
  std::thread hang([] { openai(minimal_openai("stats-hang~hang"), {}, 2000); });
  std::thread stall([] {
    openai(
        json{{"model", "stats-stall~stall_after=1"}, {"stream", true}, {"messages", {user("x")}}},
        {}, 2000);
  });
  json busy;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1800);
  // Bounded poll until both are in place.
  while (std::chrono::steady_clock::now() < deadline) {
    busy = stats();
    if (busy["open_connections"].get<int>() >= 3 && busy["active_streams"].get<int>() >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(busy["open_connections"].get<int>(), 3) << busy.dump();
  EXPECT_EQ(busy["active_streams"], 1) << busy.dump();
  EXPECT_GE(busy["requests_total"].get<int>(), 3);
  hang.join();
  stall.join();
  const json a = await_attempt_field("stats-hang~hang", "client_closed_ms");
  EXPECT_EQ(a["outcome"], "hang");
  const json after = await_attempt_field("stats-stall~stall_after=1", "client_closed_ms");
  EXPECT_EQ(after["outcome"], "stall");
  EXPECT_GE(stats()["peak_active_streams"].get<int>(), 1);
}

TEST_F(Control, UnknownPathsAndMethods) {
  EXPECT_EQ(perform({"GET", url("/nope"), {}, "", 5000}).status, 404);
  EXPECT_EQ(perform({"GET", url("/v1/chat/completions"), {}, "", 5000}).status, 405);
  EXPECT_EQ(perform({"GET", url("/_fake/nope"), {}, "", 5000}).status, 404);
}

// A plain TCP connection for bytes curl would not send; closed on scope exit.
class RawConnection {
 public:
  explicit RawConnection(uint16_t port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    connected_ =
        fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    timeval timeout{2, 0};  // bounds every read below
    if (connected_) setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }
  bool send_all(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      const ssize_t n = write(fd_, bytes.data() + sent, bytes.size() - sent);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // What one read returns within the 2 s timeout ("" on timeout or close).
  std::string read_some() {
    char buffer[4096];
    const ssize_t n = read(fd_, buffer, sizeof buffer);
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
  }

 private:
  int fd_;
  bool connected_ = false;
};

TEST_F(Control, MalformedHttpGetsA400) {
  RawConnection connection(fake().port());
  ASSERT_TRUE(connection.connected());
  ASSERT_TRUE(connection.send_all("THIS IS NOT HTTP\r\n\r\n"));
  const std::string reply = connection.read_some();
  EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
}

TEST_F(Control, ExpectContinueIsAnsweredBeforeTheBody) {
  // curl sends "Expect: 100-continue" above 1 MiB and waits a second for this interim reply.
  const std::string body = minimal_openai("expect~tokens=2").dump();
  RawConnection connection(fake().port());
  ASSERT_TRUE(connection.connected());
  ASSERT_TRUE(connection.send_all(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
      "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n"));
  EXPECT_EQ(connection.read_some(), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(connection.send_all(body));
  const std::string reply = connection.read_some();
  EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK", 0), 0u) << reply;
}

TEST_F(Control, KeepAliveReusesTheConnection) {
  CURL* curl = curl_easy_init();
  ASSERT_NE(curl, nullptr);
  curl_slist* headers = curl_slist_append(nullptr, "Authorization: Bearer k");
  const std::string body = minimal_openai("keepalive~tokens=2").dump();
  std::string sink;
  curl_easy_setopt(curl, CURLOPT_URL, url("/v1/chat/completions").c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void*) { return s * n; });
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
  long connects = -1;
  ASSERT_EQ(curl_easy_perform(curl), CURLE_OK);
  curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
  EXPECT_EQ(connects, 1);
  ASSERT_EQ(curl_easy_perform(curl), CURLE_OK);
  curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
  EXPECT_EQ(connects, 0) << "the second request reused the connection";
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
}

TEST_F(Control, LargeImageBody) {
  const std::string image = "data:image/png;base64," + std::string(2 * 1024 * 1024, 'A');
  const json body{{"model", "big~tokens=3"},
                  {"messages",
                   {{{"role", "user"},
                     {"content", {{{"type", "image_url"}, {"image_url", {{"url", image}}}}}}}}}};
  const HttpResult r = openai(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body()["choices"][0]["message"]["content"], "[1 images] reply");
}

TEST(FakeProviderCli, RequireKeyTokensAndThreads) {
  dispatch::test::FakeProviderProcess fake(
      FAKE_PROVIDER_BINARY, {"--require-key", "secret", "--tokens", "3", "--threads", "2"});
  const std::string body = minimal_openai("m").dump();
  const std::string chat = fake.host_url() + "/v1/chat/completions";
  EXPECT_EQ(perform({"POST", chat, {"Authorization: Bearer other"}, body, 5000}).status, 401);
  const HttpResult ok = perform({"POST", chat, {"Authorization: Bearer secret"}, body, 5000});
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(ok.json_body()["usage"]["completion_tokens"], 3);
  const std::string messages = fake.host_url() + "/v1/messages";
  const std::string anthropic_body =
      json{{"model", "m"}, {"max_tokens", 5}, {"messages", {user("x")}}}.dump();
  EXPECT_EQ(perform({"POST",
                     messages,
                     {"x-api-key: other", "anthropic-version: 2023-06-01"},
                     anthropic_body,
                     5000})
                .status,
            401);
  EXPECT_EQ(perform({"POST",
                     messages,
                     {"x-api-key: secret", "anthropic-version: 2023-06-01"},
                     anthropic_body,
                     5000})
                .status,
            200);
  EXPECT_EQ(perform({"POST",
                     messages,
                     {"Authorization: Bearer other", "anthropic-version: 2026-10-21"},
                     anthropic_body,
                     5000})
                .status,
            401);
  EXPECT_EQ(perform({"POST",
                     messages,
                     {"Authorization: Bearer secret", "anthropic-version: 2026-10-21"},
                     anthropic_body,
                     5000})
                .status,
            200);
  EXPECT_TRUE(fake.process().stop().success());
}

TEST(FakeProviderCli, RejectsBadArguments) {
  auto child = dispatch::test::ChildProcess::spawn({FAKE_PROVIDER_BINARY, "--listen", "nonsense"});
  const auto status = child.wait_for_exit(std::chrono::seconds(5));
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->exited);
  EXPECT_NE(status->code, 0);
}

TEST(FakeProviderLibrary, RunsInProcess) {
  dispatch::fake_provider::ServerOptions options;
  options.quiet = true;
  options.default_tokens = 2;
  dispatch::fake_provider::Server server(options);
  const uint16_t port = server.start();
  ASSERT_NE(port, 0);
  const HttpResult r =
      perform({"POST",
               "http://127.0.0.1:" + std::to_string(port) + "/api/chat",
               {},
               json{{"model", "m"}, {"stream", false}, {"messages", {user("x")}}}.dump(),
               5000});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json_body()["message"]["content"], "reply to:");
  server.stop();
  server.stop();  // idempotent
}

}  // namespace
}  // namespace dispatch::fake_provider::test
