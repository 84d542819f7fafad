// fake_provider_load: opens N concurrent streaming requests against fake-provider (curl multi
// driven by epoll through the socket API, so the client is not the bottleneck) and reports how
// many completed, the peak of concurrently open connections the server saw (/_fake/stats),
// and the server's peak RSS (VmHWM) and CPU time.
//
//   fake_provider_load --connections 5000 --tokens 20 --chunk-delay-ms 100
//
// Not part of CTest: it is a measurement, run by hand or by scripts/bench.

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch/test/fake_provider_process.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Options {
  int connections = 5000;
  int tokens = 20;
  int chunk_delay_ms = 100;
  int server_threads = 1;
  int ramp_ms = 0;
  long timeout_ms = 60000;
  std::string binary = FAKE_PROVIDER_BINARY;
  std::string url;  // an already running server (then --pid for its RSS / CPU)
  int pid = 0;
};

struct Transfer {
  CURL* easy = nullptr;
  std::string tail;  // last bytes, to see the terminator
  size_t bytes = 0;
  bool is_stats = false;
  std::string body;  // stats reply
};

size_t on_data(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  t->bytes += n;
  if (t->is_stats) {
    t->body.append(data, n);
  } else {
    t->tail.append(data, n);
    if (t->tail.size() > 64) t->tail.erase(0, t->tail.size() - 64);
  }
  return n;
}

// epoll + curl multi socket API.
class Loop {
 public:
  Loop() : epoll_(epoll_create1(EPOLL_CLOEXEC)), multi_(curl_multi_init()) {
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Loop::on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Loop::on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, 100000L);
  }
  ~Loop() {
    curl_multi_cleanup(multi_);
    close(epoll_);
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  CURLM* multi() { return multi_; }

  // Waits up to `max_wait_ms` and lets curl act on what is ready.
  void step(int max_wait_ms) {
    epoll_event events[512];
    const int wait = timer_ms_ < 0 ? max_wait_ms : std::min<long>(timer_ms_, max_wait_ms);
    const int n = epoll_wait(epoll_, events, 512, wait);
    int running = 0;
    if (n <= 0) {
      curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
      return;
    }
    for (int i = 0; i < n; ++i) {
      int flags = 0;
      if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(multi_, events[i].data.fd, flags, &running);
    }
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  }

 private:
  static int on_socket(CURL*, curl_socket_t fd, int what, void* user, void*) {
    auto* self = static_cast<Loop*>(user);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(self->epoll_, EPOLL_CTL_DEL, fd, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.data.fd = fd;
    if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
    if (epoll_ctl(self->epoll_, EPOLL_CTL_MOD, fd, &ev) != 0)
      epoll_ctl(self->epoll_, EPOLL_CTL_ADD, fd, &ev);
    return 0;
  }
  static int on_timer(CURLM*, long timeout_ms, void* user) {
    static_cast<Loop*>(user)->timer_ms_ = timeout_ms;
    return 0;
  }

  int epoll_;
  CURLM* multi_;
  long timer_ms_ = -1;
};

struct ProcessSample {
  double cpu_s = 0;
  long hwm_kb = 0;
  long rss_kb = 0;
};

ProcessSample sample(int pid) {
  ProcessSample s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close_paren = content.rfind(')');
  if (close_paren != std::string::npos) {
    std::istringstream fields(content.substr(close_paren + 2));
    std::vector<std::string> values;
    std::string v;
    while (fields >> v) values.push_back(v);
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the state field.
    if (values.size() > 12) {
      s.cpu_s = static_cast<double>(std::stoll(values[11]) + std::stoll(values[12])) /
                static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) s.hwm_kb = std::stol(line.substr(6));
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kb = std::stol(line.substr(6));
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"fake_provider_load: concurrent streaming requests against fake-provider"};
  app.add_option("--connections", o.connections, "concurrent streaming requests")
      ->check(CLI::Range(1, 15000));
  app.add_option("--tokens", o.tokens, "tokens per reply");
  app.add_option("--chunk-delay-ms", o.chunk_delay_ms, "delay between chunks");
  app.add_option("--server-threads", o.server_threads, "fake-provider --threads");
  app.add_option("--ramp-ms", o.ramp_ms, "spread the starts over this long");
  app.add_option("--timeout-ms", o.timeout_ms, "per-request timeout");
  app.add_option("--binary", o.binary, "fake-provider to start");
  app.add_option("--url", o.url, "use a running server, e.g. http://127.0.0.1:PORT");
  app.add_option("--pid", o.pid, "its PID (for RSS / CPU)");
  CLI11_PARSE(app, argc, argv);

  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  std::optional<dispatch::test::FakeProviderProcess> fake;
  if (o.url.empty()) {
    fake.emplace(o.binary, std::vector<std::string>{"--threads", std::to_string(o.server_threads)});
    o.url = fake->host_url();
    o.pid = fake->process().pid();
  }
  const ProcessSample before = o.pid ? sample(o.pid) : ProcessSample{};

  Loop loop;
  const std::string model = "load~chunk_delay_ms=" + std::to_string(o.chunk_delay_ms) +
                            "~tokens=" + std::to_string(o.tokens);
  const std::string body = json{{"model", model},
                                {"stream", true},
                                {"messages", {{{"role", "user"}, {"content", "load test"}}}}}
                               .dump();
  curl_slist* headers = curl_slist_append(nullptr, "Authorization: Bearer load");
  headers = curl_slist_append(headers, "Content-Type: application/json");
  const std::string chat_url = o.url + "/v1/chat/completions";
  const std::string stats_url = o.url + "/_fake/stats";

  std::vector<std::unique_ptr<Transfer>> transfers(static_cast<size_t>(o.connections));
  const auto make = [&](Transfer& t) {
    t.easy = curl_easy_init();
    curl_easy_setopt(t.easy, CURLOPT_URL, chat_url.c_str());
    curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(t.easy, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(t.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, o.timeout_ms);
    curl_easy_setopt(t.easy, CURLOPT_FORBID_REUSE, 1L);
    curl_multi_add_handle(loop.multi(), t.easy);
  };
  Transfer stats;
  stats.is_stats = true;
  bool stats_running = false;
  auto next_stats = Clock::now();
  const auto start_stats = [&] {
    stats.body.clear();
    stats.easy = curl_easy_init();
    curl_easy_setopt(stats.easy, CURLOPT_URL, stats_url.c_str());
    curl_easy_setopt(stats.easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(stats.easy, CURLOPT_WRITEDATA, &stats);
    curl_easy_setopt(stats.easy, CURLOPT_PRIVATE, &stats);
    curl_easy_setopt(stats.easy, CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(loop.multi(), stats.easy);
    stats_running = true;
  };

  const auto started = Clock::now();
  int added = 0;
  int finished = 0;
  int succeeded = 0;
  int in_flight = 0;
  int peak_in_flight = 0;
  long peak_server_connections = 0;
  long peak_server_streams = 0;
  std::map<std::string, int> failures;
  double first_done_s = -1;
  std::vector<double> durations_s;    // per successful stream, curl's total time
  std::vector<double> first_bytes_s;  // per successful stream, time to the first byte
  double last_done_s = 0;
  const auto deadline = started + std::chrono::milliseconds(o.timeout_ms + o.ramp_ms + 10000);
  // Bounded by the deadline and by every transfer finishing.
  while (finished < o.connections && Clock::now() < deadline) {
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    const int due =
        o.ramp_ms <= 0
            ? o.connections
            : std::min(o.connections, static_cast<int>(o.connections * elapsed_ms / o.ramp_ms) + 1);
    for (; added < due; ++added) {
      transfers[static_cast<size_t>(added)] = std::make_unique<Transfer>();
      make(*transfers[static_cast<size_t>(added)]);
      ++in_flight;
    }
    peak_in_flight = std::max(peak_in_flight, in_flight);
    if (!stats_running && Clock::now() >= next_stats) start_stats();
    loop.step(20);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(loop.multi(), &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      const CURLcode code = msg->data.result;
      double total_s = 0;
      double first_byte_s = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME, &total_s);
      curl_easy_getinfo(msg->easy_handle, CURLINFO_STARTTRANSFER_TIME, &first_byte_s);
      curl_multi_remove_handle(loop.multi(), msg->easy_handle);
      curl_easy_cleanup(msg->easy_handle);
      if (t->is_stats) {
        const json s = json::parse(t->body, nullptr, false);
        if (!s.is_discarded()) {
          peak_server_connections =
              std::max(peak_server_connections, s.value("open_connections", 0L));
          peak_server_streams = std::max(peak_server_streams, s.value("active_streams", 0L));
        }
        stats_running = false;
        next_stats = Clock::now() + std::chrono::milliseconds(100);
        continue;
      }
      --in_flight;
      ++finished;
      const double done_s = std::chrono::duration<double>(Clock::now() - started).count();
      if (first_done_s < 0) first_done_s = done_s;
      last_done_s = done_s;
      const bool complete =
          t->tail.size() >= 14 && t->tail.compare(t->tail.size() - 14, 14, "data: [DONE]\n\n") == 0;
      if (code == CURLE_OK && status == 200 && complete) {
        ++succeeded;
        durations_s.push_back(total_s);
        first_bytes_s.push_back(first_byte_s);
      } else {
        ++failures[std::string(curl_easy_strerror(code)) + " / HTTP " + std::to_string(status)];
      }
      t->easy = nullptr;
    }
  }
  const ProcessSample after = o.pid ? sample(o.pid) : ProcessSample{};
  long server_peak_reported = 0;
  {
    // One last blocking read of the server's own peak counter.
    CURL* easy = curl_easy_init();
    Transfer last;
    last.is_stats = true;
    curl_easy_setopt(easy, CURLOPT_URL, stats_url.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &last);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 5000L);
    if (curl_easy_perform(easy) == CURLE_OK) {
      const json s = json::parse(last.body, nullptr, false);
      if (!s.is_discarded()) server_peak_reported = s.value("peak_open_connections", 0L);
    }
    curl_easy_cleanup(easy);
  }
  for (auto& t : transfers) {
    if (t && t->easy) {
      curl_multi_remove_handle(loop.multi(), t->easy);
      curl_easy_cleanup(t->easy);
    }
  }
  curl_slist_free_all(headers);

  const double wall_s = std::chrono::duration<double>(Clock::now() - started).count();
  const auto percentile = [](std::vector<double> values, double p) {
    if (values.empty()) return 0.0;
    std::sort(values.begin(), values.end());
    return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
  };
  json failures_json = json::object();
  for (const auto& [reason, count] : failures) failures_json[reason] = count;
  const json report{{"connections", o.connections},
                    {"tokens", o.tokens},
                    {"chunk_delay_ms", o.chunk_delay_ms},
                    {"server_threads", o.server_threads},
                    {"succeeded", succeeded},
                    {"failed", o.connections - succeeded},
                    {"failures", failures_json},
                    {"client_peak_in_flight", peak_in_flight},
                    {"server_open_connections_peak_polled", peak_server_connections},
                    {"server_active_streams_peak_polled", peak_server_streams},
                    {"server_peak_open_connections", server_peak_reported},
                    {"first_done_s", first_done_s},
                    {"stream_seconds_p50", percentile(durations_s, 0.5)},
                    {"stream_seconds_p99", percentile(durations_s, 0.99)},
                    {"stream_seconds_max", percentile(durations_s, 1.0)},
                    {"first_byte_seconds_p50", percentile(first_bytes_s, 0.5)},
                    {"first_byte_seconds_p99", percentile(first_bytes_s, 0.99)},
                    {"last_done_s", last_done_s},
                    {"wall_s", wall_s},
                    {"server_cpu_s", after.cpu_s - before.cpu_s},
                    {"server_cpu_percent_of_one_core",
                     wall_s > 0 ? 100.0 * (after.cpu_s - before.cpu_s) / wall_s : 0},
                    {"server_vm_hwm_kb", after.hwm_kb},
                    {"server_vm_rss_kb", after.rss_kb}};
  std::cout << report.dump(2) << std::endl;
  if (fake) fake->process().stop();
  curl_global_cleanup();
  return succeeded == o.connections ? 0 : 1;
}
