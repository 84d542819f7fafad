#pragma once

// The client's protocol state machine, free of sockets and threads so that tests can drive it
// with a ManualClock: jobs in flight, acknowledgements and resubmission, stream order,
// heartbeats, broker liveness, deadlines. The I/O thread (client_engine.cpp) feeds it received
// messages and ticks, and sends what it puts in the outbox.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dispatch/client.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::detail {

// One ZeroMQ message as the DEALER sends it: [tag, command, header, payload?].
using Frames = std::vector<std::string>;

struct JobSink {
  StreamCallback on_event;     // null: the caller wants no chunks
  CompletionCallback on_done;  // always called exactly once
};

struct SessionSettings {
  std::chrono::milliseconds ack_timeout{1000};
  std::chrono::milliseconds max_ack_timeout{4000};
  uint32_t max_submits = 3;
  std::chrono::milliseconds heartbeat_interval{1000};
  uint32_t liveness = 4;
  std::chrono::milliseconds default_request_timeout{30000};
  std::chrono::milliseconds deadline_allowance{60000};
  std::chrono::milliseconds cancel_grace{2000};
  uint32_t queue_timeout_ms = 0;

  static SessionSettings from(const ClientOptions& options);
};

using StatusCallback = std::function<void(std::optional<protocol::StatusReply>)>;

// 32 random lowercase hex digits.
std::string make_job_id(Random& random);

// A job encoded and ready to hand to the I/O thread. Built on the caller's thread so that a
// large request (images) is serialised there, not on the thread every other job shares.
struct PreparedJob {
  std::string job_id;
  protocol::Submit submit;
  std::string model;
  std::string payload;  // encoded protocol::Request
  std::chrono::milliseconds request_timeout{0};
};

// `want_chunks` asks the broker for chunk events and makes the worker stream.
PreparedJob prepare_job(const SessionSettings& settings, std::string job_id,
                        const DispatchRequest& request, bool want_chunks);

class Session {
 public:
  Session(SessionSettings settings, Clock& clock, Random& random);

  std::string new_job_id() { return make_job_id(random_); }

  // Starts a job; it asks for chunk events when sink.on_event is set.
  void submit(PreparedJob job, JobSink sink);
  void submit(const std::string& job_id, const DispatchRequest& request, JobSink sink) {
    const bool want_chunks = static_cast<bool>(sink.on_event);
    submit(prepare_job(settings_, job_id, request, want_chunks), std::move(sink));
  }
  void cancel(const std::string& job_id);
  void request_status(std::chrono::milliseconds timeout, StatusCallback done);

  // One received message (frames after the DEALER's empty envelope, if any).
  void on_message(std::span<const std::string_view> frames);
  // Timers: resubmits, heartbeats, liveness, deadlines. Cheap when nothing is due.
  void tick();
  // Ends everything: cancels unfinished jobs at the broker and fails them locally.
  void shutdown();

  std::vector<Frames> take_outbox();
  // True once after the broker went silent: the caller replaces the socket, then calls
  // on_reconnected() which resubmits every unfinished job.
  bool take_reconnect_request();
  void on_reconnected();

  // The earliest time tick() has something to do.
  Clock::time_point next_wakeup() const;
  std::size_t unfinished() const noexcept { return jobs_.size(); }
  bool has_work() const noexcept { return !jobs_.empty() || !status_waiters_.empty(); }
  const std::string& broker_id() const noexcept { return broker_id_; }

  // Counters for tests and diagnostics.
  struct Stats {
    uint64_t submits_sent = 0;
    uint64_t resubmits = 0;
    uint64_t reconnects = 0;
    uint64_t heartbeats_sent = 0;
    uint64_t broker_changes = 0;
    uint64_t ignored_messages = 0;
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  struct Job {
    std::string id;
    protocol::Submit submit;
    std::string model;    // for error messages
    std::string payload;  // encoded Request, kept for resubmission
    JobSink sink;
    bool accepted = false;
    std::string accepted_by;  // broker_id of the acknowledging broker
    uint32_t unacked_submits = 0;
    Clock::time_point resubmit_at;
    Clock::time_point deadline;
    bool cancel_requested = false;
    Clock::time_point cancel_deadline;
    uint64_t next_seq = 0;
    uint32_t resets = 0;
    bool gap = false;
    bool received_chunks = false;
  };
  struct StatusWaiter {
    Clock::time_point deadline;
    StatusCallback done;
  };

  void send_submit(Job& job);
  void send_cancel(const std::string& job_id);
  void send(protocol::Command command, std::string header, std::string payload = {});
  void note_broker_id(const std::string& broker_id, const std::string& except_job);
  void finish(std::unordered_map<std::string, Job>::iterator it, DispatchOutcome outcome);
  void fail(std::unordered_map<std::string, Job>::iterator it, protocol::Error error);
  void on_chunk(std::string_view header);
  void on_reset(std::string_view header);
  void on_end(protocol::Command command, std::string_view header, std::string_view payload);
  void on_rejected(std::string_view header);
  void lower_wakeup(Clock::time_point at) {
    if (at < next_wakeup_) next_wakeup_ = at;
  }
  std::chrono::milliseconds ack_wait(uint32_t submits_so_far);

  SessionSettings settings_;
  Clock& clock_;
  Random& random_;
  std::unordered_map<std::string, Job> jobs_;
  std::vector<StatusWaiter> status_waiters_;
  std::vector<Frames> outbox_;
  std::string broker_id_;
  Clock::time_point last_sent_;
  Clock::time_point last_received_;
  Clock::time_point next_wakeup_;
  bool reconnect_requested_ = false;
  Stats stats_;
};

}  // namespace dispatch::detail
