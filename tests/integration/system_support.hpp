#pragma once

// Helpers shared by the whole-system tests (system_test, multihost_test): bounded polling, a raw
// LLMD/1 client that records every message the broker sends per job (so tests can check order,
// resets and duplicates on the wire, which the client library hides), and readers of the fake
// provider's attempt log.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "dispatch/test/stack.hpp"

namespace dispatch::test {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

inline int64_t ms_since(SteadyClock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - start).count();
}

// Checks `done` until it holds or `timeout` passes; the pause between checks keeps the loop from
// spinning while other processes do the work. Bounded by the deadline.
template <class Predicate>
bool poll_until(Predicate&& done, milliseconds timeout, milliseconds interval = milliseconds(10)) {
  const auto deadline = SteadyClock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

inline protocol::Request make_request(const std::string& provider, const std::string& model,
                                      const std::string& prompt, bool stream) {
  protocol::Request request;
  request.provider = provider;
  request.model = model;
  request.stream = stream;
  protocol::Message message;
  message.role = "user";
  message.content = prompt;
  request.messages.push_back(std::move(message));
  return request;
}

inline uint64_t total_queue_depth(const protocol::StatusReply& status) {
  uint64_t total = 0;
  for (uint64_t depth : status.queue_depth) total += depth;
  return total;
}

inline const protocol::WorkerStatus* find_worker(const protocol::StatusReply& status,
                                                 const std::string& worker_id) {
  for (const auto& worker : status.workers) {
    if (worker.worker_id == worker_id) return &worker;
  }
  return nullptr;
}

// ---- the fake provider's view ------------------------------------------------------------------

inline nlohmann::json fake_attempts(const std::string& host_url) {
  const HttpReply reply = http_request("GET", host_url + "/_fake/log");
  if (reply.status != 200) throw std::runtime_error("GET /_fake/log: " + reply.body);
  return nlohmann::json::parse(reply.body).at("attempts");
}

inline nlohmann::json fake_stats(const std::string& host_url) {
  const HttpReply reply = http_request("GET", host_url + "/_fake/stats");
  if (reply.status != 200) throw std::runtime_error("GET /_fake/stats: " + reply.body);
  return nlohmann::json::parse(reply.body);
}

// Attempts whose base model (before the first '~') is `base_model`.
inline std::size_t count_attempts_for(const nlohmann::json& attempts,
                                      const std::string& base_model) {
  std::size_t n = 0;
  for (const auto& attempt : attempts) {
    const std::string model = attempt.value("model", "");
    if (model.substr(0, model.find('~')) == base_model) ++n;
  }
  return n;
}

// The most provider requests that were open at once, from the fake's own clock: each attempt
// spans from when the request was read (t_ms) to when its answer was written (end_ms). A worker
// only starts its next request after the broker has seen the previous result, so these spans
// never overlap more than the worker's job concurrency. Attempts without an end count as open
// to the end of time.
inline int max_open_attempts(const nlohmann::json& attempts) {
  std::vector<std::pair<double, int>> edges;  // (time, +1 start / -1 end)
  for (const auto& attempt : attempts) {
    edges.emplace_back(attempt.at("t_ms").get<double>(), +1);
    if (attempt.contains("end_ms") && !attempt["end_ms"].is_null()) {
      edges.emplace_back(attempt["end_ms"].get<double>(), -1);
    }
  }
  // At equal times an end is counted before a start.
  std::sort(edges.begin(), edges.end());
  int open = 0;
  int peak = 0;
  for (const auto& [time, delta] : edges) {
    open += delta;
    peak = std::max(peak, open);
  }
  return peak;
}

// A worker config like Stack::default_worker_config() whose providers point at another fake
// provider instance (so each worker's traffic can be told apart).
inline std::string retarget_config(std::string config, const std::string& from_host_url,
                                   const std::string& to_host_url) {
  for (std::size_t at = config.find(from_host_url); at != std::string::npos;
       at = config.find(from_host_url, at + to_host_url.size())) {
    config.replace(at, from_host_url.size(), to_host_url);
  }
  return config;
}

// ---- a raw protocol client ----------------------------------------------------------------------

// What the broker sent about one job, in arrival order.
struct StreamItem {
  bool reset = false;
  uint64_t seq = 0;  // chunk seq, or the reset's next_seq
  std::string content;
};

struct JobRecord {
  int accepted = 0;
  int duplicate_accepts = 0;
  int results = 0;
  int errors = 0;
  int rejections = 0;
  int events_after_end = 0;  // chunk/reset after a result or error: never allowed
  std::vector<StreamItem> stream;
  std::optional<protocol::Response> response;
  std::optional<protocol::Error> error;
  std::optional<protocol::Rejected> rejection;

  int endings() const { return results + errors + rejections; }
};

// One DEALER socket to the broker's frontend, pumped by the test thread.
class RawClient {
 public:
  // `before_connect` configures the socket first (e.g. CURVE keys, a monitor).
  RawClient(zmq::context_t& context, const std::string& endpoint,
            const std::function<void(zmq::socket_t&)>& before_connect = {})
      : socket_(context, zmq::socket_type::dealer) {
    protocol::apply_protocol_socket_options(socket_);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndhwm, 1'000'000);
    socket_.set(zmq::sockopt::rcvhwm, 1'000'000);
    if (before_connect) before_connect(socket_);
    socket_.connect(endpoint);
  }

  // `tenant`: the Submit field a gateway sets.
  void submit(const std::string& job_id, const protocol::Request& request,
              uint32_t queue_timeout_ms = 0, const std::string& tenant = {}) {
    protocol::Submit submit;
    submit.job_id = job_id;
    submit.provider = request.provider;
    submit.stream = request.stream;
    submit.queue_timeout_ms = queue_timeout_ms;
    submit.tenant = tenant;
    jobs[job_id];  // known from now on, even before any answer
    protocol::send_message(socket_, protocol::Command::submit, protocol::encode(submit),
                           protocol::encode(request), protocol::SendMode::blocking);
  }

  void cancel(const std::string& job_id) {
    protocol::send_message(socket_, protocol::Command::cancel,
                           protocol::encode(protocol::Cancel{job_id}), {},
                           protocol::SendMode::blocking);
  }

  // Asks for the broker's status. The broker answers on the same pipe after everything it sent
  // this client before, so once the reply is in, nothing older is still on its way.
  std::optional<protocol::StatusReply> status_barrier(milliseconds timeout) {
    const uint64_t before = status_replies_;
    protocol::send_message(socket_, protocol::Command::status, std::string_view("\x80", 1), {},
                           protocol::SendMode::blocking);
    if (!pump_until([&] { return status_replies_ > before; }, timeout)) return std::nullopt;
    return last_status_;
  }

  // Receives what is waiting, blocking at most `wait` for the first message.
  void pump(milliseconds wait) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, wait);
    for (int i = 0; i < 100'000 && incoming_.receive(socket_, false); ++i) handle();
  }

  bool pump_until(const std::function<bool()>& done, milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      if (done()) return true;
      const auto now = SteadyClock::now();
      if (now >= deadline) return false;
      pump(std::min(milliseconds(20),
                    std::chrono::duration_cast<milliseconds>(deadline - now) + milliseconds(1)));
    }
  }

  std::size_t finished() const {
    return static_cast<std::size_t>(std::count_if(
        jobs.begin(), jobs.end(), [](const auto& entry) { return entry.second.endings() > 0; }));
  }

  std::map<std::string, JobRecord> jobs;
  std::vector<protocol::Rejected> anonymous_rejections;  // rejected without a known job id
  std::string broker_id;
  uint64_t undecodable = 0;

 private:
  void handle() {
    auto parsed = incoming_.parse();
    if (!parsed) {
      ++undecodable;
      return;
    }
    const protocol::FrameView& view = parsed.value();
    switch (view.command) {
      case protocol::Command::accepted: {
        auto accepted = protocol::decode<protocol::Accepted>(view.header);
        if (!accepted) break;
        broker_id = accepted.value().broker_id;
        JobRecord& job = jobs[accepted.value().job_id];
        ++job.accepted;
        if (accepted.value().duplicate) ++job.duplicate_accepts;
        return;
      }
      case protocol::Command::rejected: {
        auto rejected = protocol::decode<protocol::Rejected>(view.header);
        if (!rejected) break;
        auto it = jobs.find(rejected.value().job_id);
        if (rejected.value().job_id.empty() || it == jobs.end()) {
          anonymous_rejections.push_back(rejected.value());
          return;
        }
        ++it->second.rejections;
        it->second.rejection = rejected.value();
        return;
      }
      case protocol::Command::chunk: {
        auto chunk = protocol::decode<protocol::Chunk>(view.header);
        if (!chunk) break;
        JobRecord& job = jobs[chunk.value().job_id];
        if (job.endings() > 0) ++job.events_after_end;
        job.stream.push_back({false, chunk.value().seq, chunk.value().content});
        return;
      }
      case protocol::Command::reset: {
        auto reset = protocol::decode<protocol::StreamReset>(view.header);
        if (!reset) break;
        JobRecord& job = jobs[reset.value().job_id];
        if (job.endings() > 0) ++job.events_after_end;
        job.stream.push_back({true, reset.value().next_seq, {}});
        return;
      }
      case protocol::Command::result: {
        auto end = protocol::decode<protocol::JobEnd>(view.header);
        auto response = protocol::decode<protocol::Response>(view.payload);
        if (!end || !response) break;
        JobRecord& job = jobs[end.value().job_id];
        ++job.results;
        job.response = std::move(response).value();
        return;
      }
      case protocol::Command::error: {
        auto end = protocol::decode<protocol::JobEnd>(view.header);
        auto error = protocol::decode<protocol::Error>(view.payload);
        if (!end || !error) break;
        JobRecord& job = jobs[end.value().job_id];
        ++job.errors;
        job.error = std::move(error).value();
        return;
      }
      case protocol::Command::status: {
        auto status = protocol::decode<protocol::StatusReply>(view.header);
        if (!status) break;
        last_status_ = std::move(status).value();
        ++status_replies_;
        return;
      }
      case protocol::Command::heartbeat:
        return;
      default:
        break;
    }
    ++undecodable;
  }

  zmq::socket_t socket_;
  protocol::IncomingMessage incoming_;
  std::optional<protocol::StatusReply> last_status_;
  uint64_t status_replies_ = 0;
};

// Checks the stream of one job as the protocol promises it: chunks numbered consecutively from
// 0, a reset restarting the numbering at its next_seq, and the text after the last reset equal
// to the final answer. Returns "" when all holds, else what broke.
inline std::string check_stream(const JobRecord& job) {
  uint64_t expected = 0;
  bool have_previous = false;
  uint64_t previous = 0;
  std::string text;
  for (std::size_t i = 0; i < job.stream.size(); ++i) {
    const StreamItem& item = job.stream[i];
    if (item.reset) {
      expected = item.seq;
      have_previous = false;
      text.clear();
      continue;
    }
    if (have_previous && item.seq <= previous) {
      return "chunk seq " + std::to_string(item.seq) + " after " + std::to_string(previous) +
             " (not increasing) at event " + std::to_string(i);
    }
    if (item.seq != expected) {
      return "chunk seq " + std::to_string(item.seq) + ", expected " + std::to_string(expected) +
             " at event " + std::to_string(i);
    }
    previous = item.seq;
    have_previous = true;
    ++expected;
    text += item.content;
  }
  if (!job.response) return "no result";
  if (!job.stream.empty() && text != job.response->content) {
    return "streamed text '" + text + "' differs from the result '" + job.response->content + "'";
  }
  return {};
}

// Fake providers of their own for single workers, so that each worker's provider traffic (and
// its concurrency) can be read from that fake's log. Clear it after the Stack that uses it.
class ExtraFakes {
 public:
  FakeProviderProcess& add(Stack& stack) {
    ChildOptions options;
    options.stderr_path = stack.dir().file("fake-" + std::to_string(fakes_.size()) + ".log");
    fakes_.push_back(std::make_unique<FakeProviderProcess>(
        StackBinaries::from_build().fake_provider, std::vector<std::string>{},
        std::chrono::seconds(10), options));
    return *fakes_.back();
  }

  // Starts one worker whose providers all point at `fake`.
  static std::size_t start_worker_on(Stack& stack, FakeProviderProcess& fake,
                                     const std::vector<std::string>& args) {
    const std::string config =
        retarget_config(stack.default_worker_config(), stack.fake().host_url(), fake.host_url());
    return stack.start_workers(1, config, args).front();
  }

  void clear() { fakes_.clear(); }

 private:
  std::vector<std::unique_ptr<FakeProviderProcess>> fakes_;
};

}  // namespace dispatch::test
