#pragma once

// Per-client outgoing buffer: a slow or vanished client must never stall the broker.
//
// Sends never block. When a client's ZeroMQ pipe is full (EAGAIN at the high-water mark) its
// messages wait here, in order. A ROUTER cannot say which peer became writable, so each
// backlog is retried on a timer: after 1 ms, doubling up to 64 ms while the client makes no
// progress (many stuck clients must not make the loop spin). The buffer is bounded:
//   - chunk, heartbeat, status: dropped once `limit` messages wait (a gap in chunk.seq tells
//     the client; the final result still carries the whole answer);
//   - accepted, rejected: dropped once 2 x `limit` wait (a client that sees no ack resubmits,
//     and the broker deduplicates);
//   - result, error, reset: always kept — they are bounded by the client's own jobs, and losing
//     one would leave the client waiting forever.
// A client that is gone (EHOSTUNREACH: no such peer) has its buffer dropped; finished results
// stay stored in the job table, so a client that reconnects gets them by resubmitting.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string_view>

#include "dispatch/broker/detail/job.hpp"
#include "dispatch/broker/rate_limiter.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::broker {

struct OutboxStats {
  uint64_t sent = 0;
  uint64_t buffered = 0;             // messages that had to wait at least once
  uint64_t dropped_chunks = 0;       // over the bound
  uint64_t dropped_other = 0;        // heartbeat/status/accepted/rejected over their bound
  uint64_t dropped_unreachable = 0;  // client gone
  std::size_t peak_backlog = 0;      // largest single-client backlog seen
};

class ClientOutbox {
 public:
  // Tries to queue `frames` (after the routing frame `route`) without blocking. Must leave
  // `frames` untouched unless it returns SendStatus::sent.
  using SendFn = std::function<SendStatus(std::string_view route, Frames& frames)>;

  ClientOutbox(std::size_t limit, SendFn send, const Clock& clock);

  void send(std::string_view route, protocol::Command command, Frames frames);
  // Retries every client whose retry time has come, in order, until its pipe is full again.
  void flush();
  bool has_backlog() const noexcept { return !backlogs_.empty(); }
  // When flush() next has a client to retry (time_point::max() without backlogs).
  Clock::time_point next_retry() const noexcept;
  std::size_t backlog_messages() const noexcept { return backlog_total_; }
  std::size_t backlog_of(std::string_view route) const;
  const OutboxStats& stats() const noexcept { return stats_; }

 private:
  struct Pending {
    protocol::Command command;
    Frames frames;
  };
  struct Backlog {
    std::deque<Pending> messages;
    Clock::time_point next_try{};
    Clock::duration delay{};
  };

  // Sends what the pipe takes. false: nothing could be sent.
  bool drain(std::string_view route, Backlog& backlog);
  void drop_unreachable(std::string_view route, std::size_t count);
  void note_drop(std::string_view route, protocol::Command command, std::size_t backlog);

  std::size_t limit_;
  SendFn send_;
  const Clock& clock_;
  detail::StringMap<Backlog> backlogs_;  // only clients with waiting messages
  std::size_t backlog_total_ = 0;
  OutboxStats stats_;
  RateLimiter drop_log_{2.0, 5.0};
};

}  // namespace dispatch::broker
