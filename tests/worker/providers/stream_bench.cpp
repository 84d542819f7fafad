// worker_stream_bench: thousands of concurrent streaming attempts from one process through the
// real EventLoop + HttpEngine + ProviderAttemptLauncher against the fake provider (OpenAI
// format). Reports the success rate, peak RSS (VmHWM) and its growth per request in flight,
// and the process CPU time per 1,000 stream chunks. Not part of CTest; build in Release:
//
//   cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release
//   cmake --build build-release --target worker_stream_bench fake-provider
//   build-release/tests/worker/providers/worker_stream_bench --streams 5000

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dispatch/test/fake_provider_process.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/event_loop.hpp"
#include "dispatch/worker/http_engine.hpp"
#include "dispatch/worker/providers/launcher.hpp"

#ifndef FAKE_PROVIDER_BINARY
#define FAKE_PROVIDER_BINARY ""
#endif

namespace {

using namespace dispatch;
using namespace dispatch::worker;

// kB from /proc/self/status ("VmHWM:  12345 kB").
long status_kb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

class NullEnvironment final : public Environment {
 public:
  std::optional<std::string> get(const std::string&) const override { return std::nullopt; }
};

struct Stats {
  uint64_t in_flight = 0;
  uint64_t peak_in_flight = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t deltas = 0;
  uint64_t content_chunks = 0;  // completion tokens reported: one SSE content event each
  std::map<std::string, uint64_t> failures;
};

class BenchEvents final : public AttemptListener {
 public:
  BenchEvents(Stats& stats, uint64_t expected_tokens) : stats_(stats), expected_(expected_tokens) {}
  void on_activity() override {}
  void on_delta(const protocol::Chunk&) override { ++stats_.deltas; }
  void on_complete(AttemptOutput output) override {
    --stats_.in_flight;
    stats_.content_chunks += output.usage.completion_tokens;
    if (output.saw_terminator && output.usage.completion_tokens == expected_) {
      ++stats_.ok;
    } else {
      ++stats_.failed;
      ++stats_.failures["incomplete"];
    }
  }
  void on_failed(Failure failure, std::vector<std::string>) override {
    --stats_.in_flight;
    ++stats_.failed;
    ++stats_.failures[std::string(protocol::to_string(failure.kind)) + ": " +
                      failure.message.substr(0, 80)];
  }

 private:
  Stats& stats_;
  uint64_t expected_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Concurrent streaming attempts through the provider launcher"};
  int streams = 5000;
  std::string model = "bench~chunk_delay_ms=100~tokens=20";
  uint64_t tokens = 20;
  std::string fake_binary = FAKE_PROVIDER_BINARY;
  int fake_threads = 1;
  int timeout_s = 120;
  app.add_option("--streams", streams, "concurrent streaming requests")
      ->check(CLI::Range(1, 15000));
  app.add_option("--model", model, "model with fake-provider directives");
  app.add_option("--tokens", tokens, "content chunks each stream must deliver (as in --model)");
  app.add_option("--fake", fake_binary, "fake-provider binary");
  app.add_option("--fake-threads", fake_threads, "fake-provider I/O threads");
  app.add_option("--timeout-s", timeout_s, "give up after this long");
  CLI11_PARSE(app, argc, argv);
  if (fake_binary.empty() || !std::filesystem::exists(fake_binary)) {
    std::cerr << "fake-provider binary not found: '" << fake_binary << "' (use --fake)\n";
    return 2;
  }
  raise_fd_limit();

  dispatch::test::FakeProviderProcess fake(fake_binary,
                                           {"--threads", std::to_string(fake_threads), "--quiet"});
  WorkerConfig config = parse_config("providers:\n  bench: {type: openai, base_url: '" +
                                         fake.openai_base_url() + "', api_key_env: BENCH_KEY}\n",
                                     "bench.yaml", NullEnvironment{});
  config.providers.at("bench").api_key = "sk-bench-key";

  EventLoop loop;
  HttpEngine engine(loop);
  ProviderAttemptLauncher launcher(engine, loop, config);

  protocol::Request request;
  request.messages = {{"user", "hello benchmark", "", {}, {}, "", ""}};
  request.stream = true;

  // Warm-up: one stream, so that lazily allocated state is not counted per request.
  Stats warm;
  {
    BenchEvents events(warm, tokens);
    AttemptSpec spec{&request, {"bench", "warm~tokens=2"}, config.provider("bench"), true, 5000,
                     {}};
    ++warm.in_flight;
    launcher.start(spec, events);
    for (int i = 0; i < 500 && warm.in_flight > 0; ++i) loop.run_once(20);
  }

  const long rss_before_kb = status_kb("VmRSS");
  const double cpu_before = cpu_seconds();
  const auto wall_start = std::chrono::steady_clock::now();

  Stats stats;
  std::vector<std::unique_ptr<BenchEvents>> events;
  events.reserve(static_cast<std::size_t>(streams));
  AttemptSpec spec{&request, {"bench", model}, config.provider("bench"), true, 10000, {}};
  for (int i = 0; i < streams; ++i) {
    events.push_back(std::make_unique<BenchEvents>(stats, tokens));
    ++stats.in_flight;
    launcher.start(spec, *events.back());
  }
  stats.peak_in_flight = stats.in_flight;

  const auto deadline = wall_start + std::chrono::seconds(timeout_s);
  while (stats.in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
    loop.run_once(50);
  }
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  const double cpu_s = cpu_seconds() - cpu_before;
  const long hwm_kb = status_kb("VmHWM");

  // The fake's own count confirms the streams really overlapped on the server side.
  struct StatsListener final : TransferListener {
    std::string body;
    bool done = false;
    void on_response_start(int, const HttpHeaders&) override {}
    void on_body(std::string_view bytes) override { body.append(bytes); }
    void on_complete(const std::optional<TransportError>&) override { done = true; }
  } stats_listener;
  HttpRequest stats_request;
  stats_request.method = "GET";
  stats_request.url = fake.host_url() + "/_fake/stats";
  engine.start(std::move(stats_request), {}, stats_listener);
  for (int i = 0; i < 200 && !stats_listener.done; ++i) loop.run_once(20);

  std::printf("streams:              %d (model %s)\n", streams, model.c_str());
  std::printf("succeeded:            %llu (%.2f%%), failed %llu, unfinished %llu\n",
              static_cast<unsigned long long>(stats.ok),
              100.0 * static_cast<double>(stats.ok) / streams,
              static_cast<unsigned long long>(stats.failed),
              static_cast<unsigned long long>(stats.in_flight));
  for (const auto& [reason, count] : stats.failures) {
    std::printf("  failure x%llu: %s\n", static_cast<unsigned long long>(count), reason.c_str());
  }
  std::printf("wall time:            %.2f s\n", wall_s);
  std::printf("peak in flight:       %llu\n",
              static_cast<unsigned long long>(stats.peak_in_flight));
  std::printf("fake-provider stats:  %s\n", stats_listener.body.c_str());
  std::printf("RSS before streams:   %ld kB\n", rss_before_kb);
  std::printf("peak RSS (VmHWM):     %ld kB\n", hwm_kb);
  std::printf("per request in flight: %.1f kB ((VmHWM - RSS before) / peak in flight)\n",
              static_cast<double>(hwm_kb - rss_before_kb) /
                  static_cast<double>(std::max<uint64_t>(1, stats.peak_in_flight)));
  std::printf("content chunks:       %llu (deltas delivered %llu)\n",
              static_cast<unsigned long long>(stats.content_chunks),
              static_cast<unsigned long long>(stats.deltas));
  std::printf(
      "CPU (user+sys):       %.2f s = %.1f ms per 1,000 content chunks\n", cpu_s,
      1000.0 * cpu_s * 1000.0 / static_cast<double>(std::max<uint64_t>(1, stats.content_chunks)));
  return stats.ok == static_cast<uint64_t>(streams) ? 0 : 1;
}
