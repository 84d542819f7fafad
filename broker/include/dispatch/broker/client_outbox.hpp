#pragma once

// Per-client outgoing buffer: a slow or vanished client must never stall the broker.
//
// Sends never block. When a client's ZeroMQ pipe is full (EAGAIN at the high-water mark) its
// messages wait here, in order. A ROUTER cannot say which peer became writable, so each
// backlog is retried on a timer: after 1 ms, doubling up to 64 ms while the client makes no
// progress (many stuck clients must not make the loop spin). The buffer is bounded in messages
// and in bytes:
//   - chunk, heartbeat, status: dropped once `messages` wait (a gap in chunk.seq tells the
//     client; the final result still carries the whole answer);
//   - accepted, rejected: dropped once 2 x `messages` wait (a client that sees no ack
//     resubmits, and the broker deduplicates);
//   - result, error: kept at any message count, but dropped once the backlog holds `bytes`: a
//     client that never reads must not keep every answer in memory twice. The broker keeps
//     finished results in its result store, so a resubmit of the job gets them;
//   - reset: always kept. It is a few bytes, and losing one would let the text of a voided
//     attempt stand in front of the next one.
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

struct OutboxLimits {
  std::size_t messages = 10'000;              // per client
  std::size_t bytes = std::size_t{64} << 20;  // per client, all frames of every waiting message
};

// Total size of a message's frames.
std::size_t frames_bytes(const Frames& frames) noexcept;

struct OutboxStats {
  uint64_t sent = 0;
  uint64_t buffered = 0;             // messages that had to wait at least once
  uint64_t dropped_chunks = 0;       // over the bound
  uint64_t dropped_finals = 0;       // result/error over the byte bound (kept in the store)
  uint64_t dropped_other = 0;        // heartbeat/status/accepted/rejected over their bound
  uint64_t dropped_unreachable = 0;  // client gone
  std::size_t peak_backlog = 0;      // largest single-client backlog seen
};

class ClientOutbox {
 public:
  // Tries to queue `frames` (after the routing frame `route`) without blocking. Must leave
  // `frames` untouched unless it returns SendStatus::sent.
  using SendFn = std::function<SendStatus(std::string_view route, Frames& frames)>;

  ClientOutbox(OutboxLimits limits, SendFn send, const Clock& clock);

  void send(std::string_view route, protocol::Command command, Frames frames);
  // Retries every client whose retry time has come, in order, until its pipe is full again.
  void flush();
  bool has_backlog() const noexcept { return !backlogs_.empty(); }
  // When flush() next has a client to retry (time_point::max() without backlogs).
  Clock::time_point next_retry() const noexcept;
  std::size_t backlog_messages() const noexcept { return backlog_total_; }
  std::size_t backlog_bytes() const noexcept { return backlog_bytes_; }
  std::size_t backlog_of(std::string_view route) const;
  const OutboxStats& stats() const noexcept { return stats_; }

 private:
  struct Pending {
    protocol::Command command;
    Frames frames;
    std::size_t bytes = 0;
  };
  struct Backlog {
    std::deque<Pending> messages;
    std::size_t bytes = 0;
    Clock::time_point next_try{};
    Clock::duration delay{};
  };

  // Sends what the pipe takes. false: nothing could be sent.
  bool drain(std::string_view route, Backlog& backlog);
  void drop_unreachable(std::string_view route, std::size_t count);
  void note_drop(std::string_view route, protocol::Command command, const Backlog& backlog);
  bool keeps(const Backlog& backlog, protocol::Command command, std::size_t bytes) const;
  void count_drop(protocol::Command command);
  void pop_front(Backlog& backlog);

  OutboxLimits limits_;
  SendFn send_;
  const Clock& clock_;
  detail::StringMap<Backlog> backlogs_;  // only clients with waiting messages
  std::size_t backlog_total_ = 0;
  std::size_t backlog_bytes_ = 0;
  OutboxStats stats_;
  RateLimiter drop_log_{2.0, 5.0};
};

}  // namespace dispatch::broker
