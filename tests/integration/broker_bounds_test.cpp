// The broker's memory bounds under a byte flood, on the whole stack: 8 clients keep sending
// 8 MiB jobs for a provider no worker serves while another client sends ordinary jobs to a
// served provider. With default flags the broker must stay under 1 GiB of RSS, refuse the flood
// with typed rejections, keep serving the ordinary jobs, and end the accepted flood jobs after
// the unknown-provider grace. Figures (peak RSS, probe latencies) are printed for the record;
// nothing here asserts a tight time.

#include <gtest/gtest.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "system_support.hpp"

namespace dispatch::test {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default) that RSS
// counts; children started from now on keep it small so that RSS shows what the broker holds.
// (Only ASan reads the variable; the children inherit it.)
void keep_asan_quarantine_small() {
  const char* current = std::getenv("ASAN_OPTIONS");
  const std::string options =
      std::string(current != nullptr ? current : "") + ":quarantine_size_mb=4";
  ::setenv("ASAN_OPTIONS", options.c_str(), 1);
}

// Resident set size of `pid` in bytes (VmRSS of /proc/PID/status); 0 when unreadable.
uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// One flooding client on its own DEALER: keeps up to `window` submits unanswered, each with the
// same big payload (encoded once) and a fresh job id, and records what the broker answers.
class Flooder {
 public:
  Flooder(zmq::context_t& context, const std::string& endpoint, std::string name)
      : socket_(context, zmq::socket_type::dealer), name_(std::move(name)) {
    protocol::apply_protocol_socket_options(socket_);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  void top_up(const std::string& payload, std::size_t window) {
    while (sent_ - answered_ < window) {
      protocol::Submit submit;
      submit.job_id = name_ + "-" + std::to_string(sent_++);
      submit.provider = "nobody-serves-this";
      submit.queue_timeout_ms = 3'600'000;  // as long as the broker lets anyone wait
      protocol::send_message(socket_, protocol::Command::submit, protocol::encode(submit), payload,
                             protocol::SendMode::blocking);
    }
  }

  void pump() {
    for (int i = 0; i < 10'000 && incoming_.receive(socket_, false); ++i) {
      auto parsed = incoming_.parse();
      if (!parsed) continue;
      const protocol::FrameView& view = parsed.value();
      if (view.command == protocol::Command::accepted) {
        ++answered_;
        ++accepted;
      } else if (view.command == protocol::Command::rejected) {
        ++answered_;
        if (auto r = protocol::decode<protocol::Rejected>(view.header))
          rejections.push_back(r.value());
      } else if (view.command == protocol::Command::error) {
        if (auto e = protocol::decode<protocol::Error>(view.payload)) errors.push_back(e.value());
      }
    }
  }

  std::size_t sent() const { return sent_; }

  std::size_t accepted = 0;
  std::vector<protocol::Rejected> rejections;
  std::vector<protocol::Error> errors;

 private:
  zmq::socket_t socket_;
  protocol::IncomingMessage incoming_;
  std::string name_;
  std::size_t sent_ = 0;
  std::size_t answered_ = 0;
};

TEST(BrokerBounds, ByteFloodToAnUnservedProviderStaysUnderOneGibAndOthersAreServed) {
  keep_asan_quarantine_small();
  Stack stack(StackBinaries::from_build());
  ASSERT_EQ(stack.binaries().missing(), "");
  stack.start_fake_provider();
  stack.start_broker({});  // default bounds
  stack.start_workers(1, stack.default_worker_config());
  stack.wait_for_workers(1);
  const pid_t broker_pid = stack.broker().pid();
  const uint64_t rss_at_start = resident_bytes(broker_pid);

  // 8 MiB of payload per job (the Request's prompt), encoded once.
  const std::string payload = protocol::encode(
      make_request("nobody-serves-this", "m", std::string(8 * kMiB - 256, 'x'), false));
  zmq::context_t context(1);
  std::vector<std::unique_ptr<Flooder>> flooders;
  for (int i = 0; i < 8; ++i) {
    flooders.push_back(
        std::make_unique<Flooder>(context, stack.frontend(), "flood" + std::to_string(i)));
  }
  RawClient probe(context, stack.frontend());

  // The same ordinary job without a flood, for comparison.
  std::vector<int64_t> quiet_ms;
  for (int i = 0; i < 5; ++i) {
    const std::string id = "quiet-" + std::to_string(i);
    const auto sent_at = SteadyClock::now();
    probe.submit(id, make_request("ollama", "probe", "hello", false));
    ASSERT_TRUE(
        probe.pump_until([&] { return probe.jobs[id].endings() > 0; }, milliseconds(30'000)));
    quiet_ms.push_back(ms_since(sent_at));
  }
  std::sort(quiet_ms.begin(), quiet_ms.end());

  uint64_t peak_rss = rss_at_start;
  std::vector<int64_t> probe_ms;
  const auto flood_until = SteadyClock::now() + std::chrono::seconds(8);
  int probes = 0;
  while (SteadyClock::now() < flood_until) {
    // An ordinary job, one at a time: how long does another client wait during the flood?
    const std::string id = "probe-" + std::to_string(probes++);
    const auto sent_at = SteadyClock::now();
    probe.submit(id, make_request("ollama", "probe", "hello", false));
    bool answered = false;
    while (!answered && SteadyClock::now() < sent_at + std::chrono::seconds(30)) {
      for (auto& flooder : flooders) {
        flooder->top_up(payload, 4);
        flooder->pump();
      }
      probe.pump(milliseconds(5));
      peak_rss = std::max(peak_rss, resident_bytes(broker_pid));
      answered = probe.jobs[id].endings() > 0;
    }
    ASSERT_TRUE(answered) << id << " unanswered for 30 s during the flood";
    ASSERT_EQ(probe.jobs[id].results, 1)
        << id << ": "
        << (probe.jobs[id].error ? probe.jobs[id].error->message : std::string("no result"));
    probe_ms.push_back(ms_since(sent_at));
  }

  // What the flood got: typed rejections naming a byte or per-client bound.
  std::map<std::string, int> codes;
  std::size_t submitted = 0;
  std::size_t accepted = 0;
  for (auto& flooder : flooders) {
    submitted += flooder->sent();
    accepted += flooder->accepted;
    for (const protocol::Rejected& rejection : flooder->rejections) {
      EXPECT_EQ(rejection.kind, protocol::ErrorKind::queue_full);
      ++codes[rejection.code];
    }
  }
  const auto status = stack.status(milliseconds(10'000));
  ASSERT_TRUE(status.has_value());
  std::sort(probe_ms.begin(), probe_ms.end());
  std::cout << "flood: " << submitted << " submits of 8 MiB, " << accepted << " accepted;";
  for (const auto& [code, n] : codes) std::cout << " " << code << " " << n;
  std::cout << "\nbroker RSS: " << rss_at_start / kMiB << " MiB at start, peak " << peak_rss / kMiB
            << " MiB; payload held " << status->payload_bytes / kMiB << " MiB of "
            << status->payload_bytes_limit / kMiB << " MiB\nprobe jobs: " << probe_ms.size()
            << ", median " << probe_ms[probe_ms.size() / 2] << " ms, max " << probe_ms.back()
            << " ms (without the flood: median " << quiet_ms[quiet_ms.size() / 2] << " ms)"
            << std::endl;

  EXPECT_LT(peak_rss, 1024 * kMiB);
  EXPECT_GT(codes["client_bytes"] + codes["queue_bytes"], 0);
  EXPECT_LE(status->payload_bytes, 512 * kMiB);
  EXPECT_EQ(status->payload_bytes_limit, 512 * kMiB);
  EXPECT_GT(status->rejected.count("client_bytes") + status->rejected.count("queue_bytes"), 0u);
  EXPECT_TRUE(stack.broker().running());

  // The accepted flood jobs do not wait out their hour: no worker ever offered the provider,
  // so they end unsupported_provider / unknown_provider after the grace (10 s by default).
  Flooder& first = *flooders.front();
  ASSERT_GT(first.accepted, 0u);
  ASSERT_TRUE(poll_until(
      [&] {
        first.pump();
        return !first.errors.empty();
      },
      milliseconds(60'000)));
  for (const protocol::Error& error : first.errors) {
    EXPECT_EQ(error.kind, protocol::ErrorKind::unsupported_provider);
    EXPECT_EQ(error.code, "unknown_provider");
  }
}

}  // namespace
}  // namespace dispatch::test
