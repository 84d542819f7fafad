// dispatch-loadgen: offers load to the dispatcher (through the client library) or to an
// OpenAI-compatible HTTP endpoint (the fake provider directly, or a gateway in front of it) and
// reports per-job latency percentiles, success rate, achieved rate and the CPU / memory of the
// processes under test, as one JSON object.
//
//   dispatch-loadgen --target dispatch --broker tcp://127.0.0.1:5555 --provider openai
//       --model 'gpt~latency_ms=5' --rate 1000 --jobs 10000 --warmup 1000
//       --watch broker=1234 --watch worker=1235
//   dispatch-loadgen --target http --url http://127.0.0.1:8080/v1/chat/completions
//       --model 'gpt~latency_ms=5' --stream --concurrency 64 --jobs 20000
//
// Open loop (--rate): jobs are due at evenly spaced times whatever happens to earlier ones, and
// latency counts from the due time, so a stalled target or loadgen cannot hide its queueing
// (coordinated omission). Closed loop (--concurrency): a fixed number in flight, for maximum
// throughput. Not part of CTest: scripts/bench runs it.

#include <curl/curl.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "drivers.hpp"
#include "proc_stats.hpp"
#include "stats.hpp"

namespace {

using namespace dispatch::bench;

class Observer final : public RunObserver {
 public:
  explicit Observer(ProcessWatch& watch) : watch_(watch) {}
  void on_measurement_start() override {
    if (!started_.exchange(true)) watch_.mark_start();
  }
  void on_in_flight(std::size_t in_flight, std::size_t streaming) override {
    raise_to(peak_in_flight_, in_flight);
    raise_to(peak_streaming_, streaming);
  }
  bool started() const { return started_.load(); }
  std::size_t peak_in_flight() const { return peak_in_flight_.load(); }
  std::size_t peak_streaming() const { return peak_streaming_.load(); }

 private:
  static void raise_to(std::atomic<std::size_t>& peak, std::size_t value) {
    std::size_t seen = peak.load(std::memory_order_relaxed);
    while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
  }
  ProcessWatch& watch_;
  std::atomic<bool> started_{false};
  std::atomic<std::size_t> peak_in_flight_{0};
  std::atomic<std::size_t> peak_streaming_{0};
};

bool parse_watch(const std::string& text, WatchedProcess& out) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return false;
  try {
    std::size_t used = 0;
    const long pid = std::stol(text.substr(eq + 1), &used);
    if (used != text.size() - eq - 1 || pid <= 0) return false;
    out = {text.substr(0, eq), static_cast<pid_t>(pid)};
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dispatch-loadgen: latency and throughput of the dispatcher or of an HTTP endpoint"};
  std::string target = "dispatch";
  RunPlan plan;
  DispatchTarget dispatch_target;
  dispatch_target.provider = "openai";
  dispatch_target.model = "gpt-4o-mini";
  dispatch_target.prompt = "Hello, how are you?";
  HttpTarget http_target;
  std::string api_key = "sk-bench";
  double rate = 0;
  std::size_t concurrency = 0;
  double duration_s = 0;
  double warmup_s = 0;
  uint32_t timeout_ms = 30000;
  uint32_t drain_ms = 0;
  std::vector<std::string> watch_args;
  uint32_t sample_ms = 100;
  std::string label;
  std::string output;
  std::string dump_path;

  app.add_option("--target", target, "dispatch | http")
      ->check(CLI::IsMember({"dispatch", "http"}))
      ->capture_default_str();
  app.add_option("--broker", dispatch_target.broker_endpoint, "dispatch: broker frontend")
      ->default_val(std::string("tcp://127.0.0.1:5555"));
  app.add_option("--provider", dispatch_target.provider, "dispatch: provider name")
      ->capture_default_str();
  app.add_option("--clients", dispatch_target.clients, "dispatch: Client objects (I/O threads)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--retry-count", dispatch_target.retry_count, "dispatch: retries per job")
      ->capture_default_str();
  app.add_option("--ack-timeout-ms", dispatch_target.ack_timeout_ms,
                 "dispatch: resubmit after this long without an ack")
      ->capture_default_str();
  app.add_option("--broker-key", dispatch_target.broker_key_file,
                 "dispatch: the broker's NAME.key (CURVE; with --curve-secret)");
  app.add_option("--curve-secret", dispatch_target.curve_secret_file,
                 "dispatch: our own NAME.key_secret (CURVE; with --broker-key)");
  app.add_option("--url", http_target.url, "http: the chat-completions URL");
  app.add_option("--header", http_target.headers, "http: extra header 'Name: value' (repeat)");
  app.add_option("--api-key", api_key, "http: sent as Authorization: Bearer KEY")
      ->capture_default_str();
  app.add_option("--model", dispatch_target.model, "model name (fake-provider directives allowed)")
      ->capture_default_str();
  app.add_option("--prompt", dispatch_target.prompt, "user message")->capture_default_str();
  app.add_flag("--stream", plan.stream, "streamed answers (time to first and last chunk)");
  auto* rate_option = app.add_option("--rate", rate, "open loop: jobs per second offered");
  auto* concurrency_option =
      app.add_option("--concurrency", concurrency, "closed loop: jobs kept in flight");
  rate_option->excludes(concurrency_option);
  app.add_option("--jobs", plan.jobs, "measured jobs")->capture_default_str();
  app.add_option("--duration-s", duration_s, "open loop: measured jobs = rate x this");
  app.add_option("--warmup", plan.warmup_jobs, "jobs sent first and not measured")
      ->capture_default_str();
  app.add_option("--warmup-s", warmup_s, "open loop: warm-up jobs = rate x this");
  app.add_option("--timeout-ms", timeout_ms, "per-job timeout")->capture_default_str();
  app.add_option("--drain-ms", drain_ms,
                 "after the last send, wait this long (default timeout + 5 s)");
  app.add_option("--max-in-flight", plan.max_in_flight,
                 "open loop: a due job with this many unfinished is counted failed, not sent")
      ->capture_default_str();
  app.add_option("--watch", watch_args, "NAME=PID of a process to measure (repeat)");
  app.add_option("--sample-ms", sample_ms, "RSS sampling interval")->capture_default_str();
  app.add_option("--label", label, "copied into the JSON");
  app.add_option("--output,-o", output, "write the JSON here (default stdout)");
  app.add_option("--dump", dump_path,
                 "write every job as CSV (index, due ms, latency ms, first chunk ms, worker ms, "
                 "error) to look at spikes over time");
  CLI11_PARSE(app, argc, argv);

  if (rate > 0) {
    plan.mode = LoadMode::open_loop;
    plan.rate = rate;
    if (duration_s > 0) plan.jobs = static_cast<std::size_t>(rate * duration_s);
    if (warmup_s > 0) plan.warmup_jobs = static_cast<std::size_t>(rate * warmup_s);
  } else if (concurrency > 0) {
    plan.mode = LoadMode::closed_loop;
    plan.concurrency = concurrency;
  } else {
    std::cerr << "dispatch-loadgen: give --rate R (open loop) or --concurrency C (closed loop)\n";
    return 2;
  }
  if (plan.jobs == 0) {
    std::cerr << "dispatch-loadgen: --jobs must be positive\n";
    return 2;
  }
  if (target == "http" && http_target.url.empty()) {
    std::cerr << "dispatch-loadgen: --target http needs --url\n";
    return 2;
  }
  plan.request_timeout = std::chrono::milliseconds(timeout_ms);
  plan.drain_timeout = std::chrono::milliseconds(drain_ms > 0 ? drain_ms : timeout_ms + 5000);

  std::vector<WatchedProcess> watched{{"loadgen", getpid()}};
  for (const auto& text : watch_args) {
    WatchedProcess process;
    if (!parse_watch(text, process)) {
      std::cerr << "dispatch-loadgen: --watch wants NAME=PID, got '" << text << "'\n";
      return 2;
    }
    watched.push_back(process);
  }

  // The client library logs through spdlog's default logger; stdout is for the JSON.
  spdlog::set_default_logger(spdlog::stderr_color_mt("dispatch-loadgen"));
  spdlog::set_level(spdlog::level::warn);

  // Thousands of connections (http) need as many descriptors.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  std::vector<JobRecord> records(plan.total_jobs());
  const std::string started_at = utc_now();
  nlohmann::json report;
  {
    ProcessWatch watch(watched, std::chrono::milliseconds(sample_ms));
    Observer observer(watch);
    try {
      if (target == "http") {
        http_target.headers.push_back("Authorization: Bearer " + api_key);
        http_target.body =
            openai_chat_body(dispatch_target.model, dispatch_target.prompt, plan.stream);
        run_http(http_target, plan, records, observer);
      } else {
        run_dispatch(dispatch_target, plan, records, observer);
      }
    } catch (const std::exception& e) {
      std::cerr << "dispatch-loadgen: " << e.what() << "\n";
      return 1;
    }
    if (!observer.started()) watch.mark_start();
    watch.mark_end();
    report["results"] = summarize_run(plan, records);
    report["processes"] = watch.to_json(plan.jobs);
    report["peaks"] = {{"in_flight", observer.peak_in_flight()},
                       {"streaming", observer.peak_streaming()}};
  }
  curl_global_cleanup();

  if (!dump_path.empty()) {
    std::ofstream dump(dump_path);
    dump << "index,due_ms,latency_ms,first_chunk_ms,worker_ms,error\n";
    for (std::size_t i = 0; i < records.size(); ++i) {
      const JobRecord& r = records[i];
      const auto ms = [](int64_t ns) { return static_cast<double>(ns) / 1e6; };
      dump << i << ',' << ms(r.scheduled_ns) << ','
           << (r.done_ns ? ms(r.done_ns - r.scheduled_ns) : -1.0) << ','
           << (r.first_chunk_ns ? ms(r.first_chunk_ns - r.scheduled_ns) : -1.0) << ','
           << ms(r.worker_ns) << ',' << (r.ok ? "" : r.error) << '\n';
    }
    if (!dump) std::cerr << "dispatch-loadgen: cannot write " << dump_path << "\n";
  }

  report["label"] = label;
  report["started_at"] = started_at;
  nlohmann::json config = {{"target", target},
                           {"mode", plan.mode == LoadMode::open_loop ? "open" : "closed"},
                           {"stream", plan.stream},
                           {"jobs", plan.jobs},
                           {"warmup_jobs", plan.warmup_jobs},
                           {"model", dispatch_target.model},
                           {"timeout_ms", timeout_ms}};
  if (plan.mode == LoadMode::open_loop) {
    config["rate"] = plan.rate;
  } else {
    config["concurrency"] = plan.concurrency;
  }
  if (target == "http") {
    config["url"] = http_target.url;
  } else {
    config["broker"] = dispatch_target.broker_endpoint;
    config["provider"] = dispatch_target.provider;
    config["clients"] = dispatch_target.clients;
    config["retry_count"] = dispatch_target.retry_count;
  }
  report["config"] = config;

  const std::string text = report.dump(2);
  if (output.empty()) {
    std::cout << text << std::endl;
  } else {
    std::ofstream out(output);
    out << text << "\n";
    if (!out) {
      std::cerr << "dispatch-loadgen: cannot write " << output << "\n";
      return 1;
    }
  }
  return 0;
}
