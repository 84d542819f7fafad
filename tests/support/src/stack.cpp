#include "dispatch/test/stack.hpp"

#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"

namespace dispatch::test {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// How long a stopping process may take before the second SIGTERM (and again before SIGKILL).
// Generous: it costs nothing when the process is quick, and a sanitizer build on a loaded
// 2-core machine is not.
constexpr milliseconds kStopGrace{10000};

bool is_executable(const std::string& path) {
  return !path.empty() && ::access(path.c_str(), X_OK) == 0;
}

size_t collect_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// "dispatch-broker listening frontend=<ep> backend=<ep>[ metrics=<url>]"
struct ListeningLine {
  std::string frontend;
  std::string backend;
  std::string metrics;
};

// The value of ` key=` in `line`, up to the next space; empty when absent.
std::string listening_field(const std::string& line, const std::string& key) {
  const auto at = line.find(" " + key + "=");
  if (at == std::string::npos) return {};
  const auto begin = at + key.size() + 2;
  const auto end = line.find(' ', begin);
  return line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

ListeningLine parse_listening_line(const std::string& line) {
  ListeningLine parsed{listening_field(line, "frontend"), listening_field(line, "backend"),
                       listening_field(line, "metrics")};
  if (parsed.frontend.empty() || parsed.backend.empty()) {
    throw std::runtime_error("unexpected broker line: " + line);
  }
  return parsed;
}

}  // namespace

std::string StackBinaries::missing() const {
  std::string out;
  for (const auto& [name, path] :
       {std::pair<std::string, std::string>{"fake-provider", fake_provider},
        {"dispatch-broker", broker},
        {"dispatch-worker", worker}}) {
    if (!is_executable(path)) out += (out.empty() ? "" : ", ") + name + " (" + path + ")";
  }
  return out;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "dispatch-it-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

HttpReply http_request(const std::string& method, const std::string& url, const std::string& body,
                       milliseconds timeout) {
  HttpReply reply;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw std::runtime_error("curl_easy_init failed");
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &reply.body);
  if (method == "POST") {
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  CURLcode code = curl_easy_perform(curl.get());
  if (code != CURLE_OK) {
    throw std::runtime_error("HTTP " + method + " " + url + ": " + curl_easy_strerror(code));
  }
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &reply.status);
  return reply;
}

Stack::Stack(StackBinaries binaries) : binaries_(std::move(binaries)) {}

Stack::~Stack() {
  // Workers first so that they do not spend their drain on a vanished broker; all of them asked
  // at once, so their drains overlap. Each stop() then checks how that child ended (exit 0, no
  // sanitizer report); the fake provider is checked when its member goes.
  for (auto& worker : workers_) worker.request_stop();
  for (auto& worker : workers_) worker.stop(kStopGrace);
  if (broker_) broker_->stop(kStopGrace);
}

void Stack::start_fake_provider(const std::vector<std::string>& extra_args) {
  ChildOptions options;
  options.stderr_path = dir_.file("fake-provider.log");
  fake_ = std::make_unique<FakeProviderProcess>(binaries_.fake_provider, extra_args,
                                                milliseconds(10000), options);
}

nlohmann::json Stack::fake_log(const std::string& model) {
  std::string url = fake_->host_url() + "/_fake/log";
  if (!model.empty()) {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    char* escaped = curl_easy_escape(curl.get(), model.c_str(), static_cast<int>(model.size()));
    url += "?model=";
    url += escaped;
    curl_free(escaped);
  }
  auto reply = http_request("GET", url);
  if (reply.status != 200)
    throw std::runtime_error("GET /_fake/log: status " + std::to_string(reply.status));
  return nlohmann::json::parse(reply.body).at("attempts");
}

void Stack::reset_fake() {
  auto reply = http_request("POST", fake_->host_url() + "/_fake/reset");
  if (reply.status != 200) throw std::runtime_error("POST /_fake/reset failed");
}

void Stack::start_broker(const std::vector<std::string>& extra_args) {
  broker_args_ = extra_args;
  std::vector<std::string> argv{binaries_.broker, "--frontend",
                                frontend_.empty() ? "tcp://127.0.0.1:0" : frontend_, "--backend",
                                backend_.empty() ? "tcp://127.0.0.1:0" : backend_};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  ChildOptions options;
  options.stderr_path = dir_.file("broker.log");
  broker_ = std::make_unique<ChildProcess>(ChildProcess::spawn(argv, options));
  auto line = broker_->read_line(milliseconds(10000));
  if (!line) {
    // Usually it exited (a port still held after a restart): read its code, so that only a
    // broker that neither listens nor exits fails its check (restart_broker retries).
    const auto exit = broker_->wait_for_exit(milliseconds(2000));
    throw std::runtime_error("dispatch-broker printed no listening line (" +
                             (exit ? "exit " + std::to_string(exit->code) : "still running") +
                             "); log: " + read_text_file(dir_.file("broker.log")));
  }
  const ListeningLine parsed = parse_listening_line(*line);
  frontend_ = parsed.frontend;
  backend_ = parsed.backend;
  broker_metrics_url_ = parsed.metrics;
}

void Stack::restart_broker() {
  broker_->send_signal(SIGKILL);
  broker_->stop();
  broker_.reset();
  // The ports were just released; binding them again can fail for a moment.
  const auto deadline = Clock::now() + milliseconds(10000);
  for (;;) {
    try {
      start_broker(broker_args_);
      return;
    } catch (const std::exception&) {
      if (Clock::now() > deadline) throw;
      std::this_thread::sleep_for(milliseconds(50));
    }
  }
}

std::optional<protocol::StatusReply> Stack::status(milliseconds timeout) {
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(frontend_);
  // The status request header is an empty msgpack map.
  protocol::send_message(socket, protocol::Command::status, std::string_view("\x80", 1), {},
                         protocol::SendMode::blocking);
  protocol::IncomingMessage incoming;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    zmq::poll(&item, 1, std::max<milliseconds>(left, milliseconds(1)));
    while (incoming.receive(socket, false)) {
      auto frames = incoming.parse();
      if (!frames || frames.value().command != protocol::Command::status) continue;
      auto reply = protocol::decode<protocol::StatusReply>(frames.value().header);
      if (reply) return std::move(reply).value();
    }
  }
  return std::nullopt;
}

std::string Stack::default_worker_config(const std::string& extra_defaults) const {
  const std::string host = fake_->host_url();
  return "defaults:\n"
         "  timeout_ms: 10000\n"
         "  retry_count: 2\n"
         "  connect_timeout_ms: 1000\n"
         "  first_token_timeout_ms: 2000\n"
         "  idle_timeout_ms: 2000\n"
         "  backoff: {base_ms: 10, max_ms: 50}\n" +
         extra_defaults +
         "providers:\n"
         "  ollama: {type: ollama, base_url: \"" +
         host +
         "\"}\n"
         "  openai: {type: openai, base_url: \"" +
         fake_->openai_base_url() +
         "\", api_key_env: FAKE_KEY}\n"
         "  claude: {type: anthropic, base_url: \"" +
         host +
         "\", api_key_env: FAKE_KEY}\n"
         "  ali: {type: dashscope, base_url: \"" +
         fake_->dashscope_base_url() +
         "\", api_key_env: FAKE_KEY}\n"
         "  qwen: {type: openai-compatible, base_url: \"" +
         fake_->dashscope_compatible_base_url() + "\", api_key_env: FAKE_KEY}\n";
}

std::vector<std::size_t> Stack::start_workers(int count, const std::string& config_yaml,
                                              const std::vector<std::string>& extra_args) {
  const std::string config = dir_.file("worker-" + std::to_string(++config_counter_) + ".yaml");
  write_text_file(config, config_yaml);
  std::vector<std::size_t> started;
  for (int i = 0; i < count; ++i) {
    ChildOptions options;
    options.extra_env = {"FAKE_KEY=sk-test"};
    options.capture_stdout = false;
    options.stderr_path = dir_.file("worker-" + std::to_string(workers_.size()) + ".log");
    std::vector<std::string> argv{binaries_.worker, "--broker", backend_, "--config", config};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    worker_logs_.push_back(*options.stderr_path);
    workers_.push_back(ChildProcess::spawn(argv, options));
    started.push_back(workers_.size() - 1);
  }
  return started;
}

void Stack::wait_for_workers(std::size_t count, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::size_t seen = 0;
  while (Clock::now() < deadline) {
    if (auto reply = status(milliseconds(1000))) {
      seen = reply->workers.size();
      if (seen == count) return;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  throw std::runtime_error("broker lists " + std::to_string(seen) + " workers, expected " +
                           std::to_string(count));
}

std::string Stack::worker_log(std::size_t index) const {
  return read_text_file(worker_logs_.at(index));
}

}  // namespace dispatch::test
