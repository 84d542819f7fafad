#pragma once

// The client's protocol state machine, free of sockets and threads so that tests can drive it
// with a ManualClock: jobs in flight, acknowledgements and resubmission, stream order,
// heartbeats, broker liveness, deadlines. The I/O thread (ClientEngine in client.cpp) feeds it
// received messages and ticks, and sends what it puts in the outbox.

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
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::detail {

// One ZeroMQ message as the DEALER sends it, frame by frame: [tag, command, header, payload?].
using EncodedMessage = std::vector<std::string>;

// What the caller of one job is told.
struct JobCallbacks {
  StreamCallback on_event;     // null: the caller wants no chunks
  CompletionCallback on_done;  // always called exactly once
};

struct SessionSettings {
  std::string broker_endpoint = kDefaultBrokerEndpoint;  // for messages
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

// The broker's status, or why there is none: no answer in time (network, broker_unreachable) or
// the broker refused the connection (see Session::fail_all).
using StatusOutcome = Result<protocol::StatusReply, protocol::Error>;
using StatusCallback = std::function<void(StatusOutcome)>;

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

// The order of one job's stream as its caller sees it. Tells each received chunk apart as the
// next one, one past a gap, a repeat, or the first of a restarted answer, and says which
// events the caller must see for it, so that text the caller holds is never voided silently.
//
// A chunk whose seq is below the next expected one is a repeat only when it is the chunk
// delivered last (same seq, same content, thinking and tool-call fragments): dropping it
// leaves the caller's text right even if it was in fact the first chunk of a restarted answer.
// Any other lower seq means the answer restarted without a `reset` reaching us: a redelivery
// the broker did not announce, or a resubmission to a restarted broker. The caller then gets a
// reset (next_seq 0, as every new delivery numbers from 0) before the chunk, and a gap if the
// restarted answer's first chunks were lost.
class StreamOrder {
 public:
  // The events to deliver for `chunk`, in order, to `emit` (none for a repeat).
  void on_chunk(protocol::Chunk chunk, const StreamCallback& emit);
  // A reset relayed by the broker: the answer restarts at `reset.next_seq`.
  void on_reset(protocol::StreamReset reset, const StreamCallback& emit);
  // The answer restarts from seq 0 (a new broker instance got the job); `emit` sees a reset
  // when chunks of the voided answer had been delivered.
  void restart(std::string reason, const StreamCallback& emit);

  uint32_t resets() const noexcept { return resets_; }
  bool gap() const noexcept { return gap_; }

 private:
  static uint64_t fingerprint(const protocol::Chunk& chunk);
  bool is_repeat(const protocol::Chunk& chunk) const;
  void emit_reset(uint64_t next_seq, std::string reason, const StreamCallback& emit);

  uint64_t next_seq_ = 0;
  bool shown_since_reset_ = false;  // chunks of the current answer were delivered
  uint64_t last_fingerprint_ = 0;   // of the chunk delivered last (seq next_seq_ - 1)
  uint32_t resets_ = 0;
  bool gap_ = false;  // of the current answer: what was missed before a reset is void
};

class Session {
 public:
  Session(SessionSettings settings, Clock& clock, Random& random);

  // Starts a job under `job.job_id`; it asks for chunk events when callbacks.on_event is set.
  void submit(PreparedJob job, JobCallbacks callbacks);
  void submit(const std::string& job_id, const DispatchRequest& request, JobCallbacks callbacks) {
    const bool want_chunks = static_cast<bool>(callbacks.on_event);
    submit(prepare_job(settings_, job_id, request, want_chunks), std::move(callbacks));
  }
  void cancel(const std::string& job_id);
  void request_status(std::chrono::milliseconds timeout, StatusCallback done);

  // One received message (frames after the DEALER's empty envelope, if any).
  void on_message(std::span<const std::string_view> frames);
  // Timers: resubmits, heartbeats, liveness, deadlines. Cheap when nothing is due.
  void tick();
  // Ends everything: cancels unfinished jobs at the broker and fails them locally.
  void shutdown();
  // The broker refused the connection (a handshake failure): nothing sent on it can be answered,
  // so every unfinished job and status request fails now with `error`.
  void fail_all(const protocol::Error& error);

  std::vector<EncodedMessage> take_outbox();
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
    JobCallbacks callbacks;
    bool accepted = false;
    std::string accepted_by;  // broker_id of the acknowledging broker
    uint32_t unacked_submits = 0;
    Clock::time_point resubmit_at;
    Clock::time_point deadline;
    bool cancel_requested = false;
    Clock::time_point cancel_deadline;
    StreamOrder stream;
  };
  using JobMap = std::unordered_map<std::string, Job>;
  struct StatusWaiter {
    Clock::time_point deadline;
    std::chrono::milliseconds timeout;
    StatusCallback done;
  };

  void send_submit(Job& job);
  void send_cancel(const std::string& job_id);
  void send(protocol::Command command, std::string header, std::string payload = {});
  void note_broker_id(const std::string& broker_id, const std::string& except_job);
  void finish(JobMap::iterator it, DispatchOutcome outcome);
  void fail(JobMap::iterator it, protocol::Error error);
  void on_accepted(std::string_view header);
  void on_status_reply(std::string_view header);
  void on_chunk(std::string_view header);
  void on_reset(std::string_view header);
  void on_end(protocol::Command command, std::string_view header, std::string_view payload);
  void on_rejected(std::string_view header);
  void check_broker(Clock::time_point now);
  // Fails jobs past a deadline, resubmits unacknowledged ones; returns their next timer.
  Clock::time_point run_job_timers(Clock::time_point now);
  Clock::time_point expire_status_waiters(Clock::time_point now);
  void lower_wakeup(Clock::time_point at) {
    if (at < next_wakeup_) next_wakeup_ = at;
  }
  std::chrono::milliseconds ack_wait(uint32_t submits_so_far);

  SessionSettings settings_;
  Clock& clock_;
  Random& random_;  // resubmission jitter only; job ids come from random_hex_id()
  JobMap jobs_;
  std::vector<StatusWaiter> status_waiters_;
  std::vector<EncodedMessage> outbox_;
  std::string broker_id_;
  Clock::time_point last_sent_;
  Clock::time_point last_received_;
  Clock::time_point next_wakeup_;
  bool reconnect_requested_ = false;
  Stats stats_;
};

}  // namespace dispatch::detail
