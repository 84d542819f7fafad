#include "http_client.hpp"

#include <algorithm>
#include <thread>

namespace dispatch::fake_provider::test {
namespace {

size_t collect_body(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

size_t collect_header(char* data, size_t size, size_t count, void* out) {
  std::string line(data, size * count);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    const size_t first = value.find_first_not_of(" \t");
    const size_t last = value.find_last_not_of(" \t\r\n");
    value = first == std::string::npos ? "" : value.substr(first, last - first + 1);
    static_cast<std::multimap<std::string, std::string>*>(out)->emplace(name, value);
  }
  return size * count;
}

struct EasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct ListDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

std::vector<std::string> with(std::vector<std::string> base,
                              const std::vector<std::string>& extra) {
  base.insert(base.end(), extra.begin(), extra.end());
  return base;
}

}  // namespace

std::optional<std::string> HttpResult::header(const std::string& name) const {
  const auto it = headers.find(name);
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

json HttpResult::json_body() const {
  return json::parse(body, nullptr, false);
}

HttpResult perform(const HttpCall& call) {
  HttpResult result;
  std::unique_ptr<CURL, EasyDeleter> curl(curl_easy_init());
  std::unique_ptr<curl_slist, ListDeleter> list;
  for (const auto& h : call.headers) list.reset(curl_slist_append(list.release(), h.c_str()));
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_URL, call.url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, call.method.c_str());
  if (call.method == "POST") {
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, call.body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(call.body.size()));
  }
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &result.body);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, collect_header);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &result.headers);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, call.timeout_ms);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  const auto start = std::chrono::steady_clock::now();
  result.curl_code = curl_easy_perform(curl.get());
  result.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &result.status);
  result.error = error;
  return result;
}

std::vector<SseEvent> parse_sse(const std::string& body) {
  std::vector<SseEvent> events;
  SseEvent current;
  bool any = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string::npos) end = body.size();
    std::string line = body.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      if (any) events.push_back(std::move(current));
      current = SseEvent{};
      any = false;
      continue;
    }
    any = true;
    if (line.front() == ':') {
      current.comments.push_back(line.substr(1));
      continue;
    }
    const size_t colon = line.find(':');
    const std::string field = line.substr(0, colon);
    std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (field == "data") current.data += (current.data.empty() ? "" : "\n") + value;
    if (field == "event") current.event = value;
    if (field == "id") current.id = value;
  }
  if (any) events.push_back(std::move(current));
  return events;
}

std::vector<std::string> split_lines(const std::string& body) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string::npos) end = body.size();
    if (end > pos) lines.push_back(body.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

void FakeProviderTest::SetUpTestSuite() {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  fake_ = std::make_unique<dispatch::test::FakeProviderProcess>(FAKE_PROVIDER_BINARY,
                                                                std::vector<std::string>{});
}

void FakeProviderTest::TearDownTestSuite() {
  if (fake_) {
    const auto status = fake_->process().stop();
    EXPECT_TRUE(status.success()) << "fake-provider did not exit cleanly on SIGTERM";
  }
  fake_.reset();
}

void FakeProviderTest::SetUp() {
  const HttpResult reset = perform({"POST", url("/_fake/reset"), {}, "", 5000});
  ASSERT_EQ(reset.status, 200) << reset.error;
}

std::string FakeProviderTest::url(const std::string& path) {
  return fake_->host_url() + path;
}

HttpResult FakeProviderTest::openai(const json& body, std::vector<std::string> headers,
                                    long timeout_ms) {
  return perform(
      {"POST", url("/v1/chat/completions"),
       with({"Authorization: Bearer sk-test", "Content-Type: application/json"}, headers),
       body.dump(), timeout_ms});
}

HttpResult FakeProviderTest::compatible(const json& body, std::vector<std::string> headers,
                                        long timeout_ms) {
  return perform(
      {"POST", url("/compatible-mode/v1/chat/completions"),
       with({"Authorization: Bearer sk-test", "Content-Type: application/json"}, headers),
       body.dump(), timeout_ms});
}

HttpResult FakeProviderTest::anthropic(const json& body, std::vector<std::string> headers,
                                       long timeout_ms) {
  return perform({"POST", url("/v1/messages"),
                  with({"x-api-key: sk-ant-test", "anthropic-version: 2023-06-01",
                        "Content-Type: application/json"},
                       headers),
                  body.dump(), timeout_ms});
}

HttpResult FakeProviderTest::ollama(const json& body, std::vector<std::string> headers,
                                    long timeout_ms) {
  return perform({"POST", url("/api/chat"), with({"Content-Type: application/json"}, headers),
                  body.dump(), timeout_ms});
}

HttpResult FakeProviderTest::dashscope(const json& body, bool stream,
                                       std::vector<std::string> headers, long timeout_ms) {
  std::vector<std::string> base{"Authorization: Bearer sk-ds", "Content-Type: application/json"};
  if (stream) base.emplace_back("X-DashScope-SSE: enable");
  return perform({"POST", url("/api/v1/services/aigc/text-generation/generation"),
                  with(base, headers), body.dump(), timeout_ms});
}

json FakeProviderTest::attempts(const std::string& model) {
  std::unique_ptr<CURL, EasyDeleter> curl(curl_easy_init());
  char* escaped = curl_easy_escape(curl.get(), model.c_str(), static_cast<int>(model.size()));
  const std::string query = escaped;
  curl_free(escaped);
  const HttpResult result = perform({"GET", url("/_fake/log?model=" + query), {}, "", 5000});
  EXPECT_EQ(result.status, 200);
  return result.json_body().value("attempts", json::array());
}

json FakeProviderTest::only_attempt(const std::string& model) {
  const json list = attempts(model);
  EXPECT_EQ(list.size(), 1u) << list.dump(2);
  return list.empty() ? json::object() : list.back();
}

json FakeProviderTest::await_attempt_field(const std::string& model, const std::string& field,
                                           std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  json last = json::object();
  // Bounded by the deadline; each round is one short HTTP request.
  while (std::chrono::steady_clock::now() < deadline) {
    const json list = attempts(model);
    if (!list.empty()) {
      last = list.back();
      if (last.contains(field) && !last[field].is_null()) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "no '" << field << "' on the attempt for " << model << ": " << last.dump();
  return last;
}

}  // namespace dispatch::fake_provider::test
