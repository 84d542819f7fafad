#include "dispatch/broker/client_outbox.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "dispatch/broker/core.hpp"

namespace dispatch::broker {

namespace {

using protocol::Command;

constexpr std::chrono::milliseconds kFirstRetry{1};
constexpr std::chrono::milliseconds kMaxRetry{64};

bool is_final(Command command) {
  return command == Command::result || command == Command::error || command == Command::reset;
}

bool is_ack(Command command) {
  return command == Command::accepted || command == Command::rejected;
}

}  // namespace

std::size_t frames_bytes(const Frames& frames) noexcept {
  std::size_t total = 0;
  for (const zmq::message_t& frame : frames) total += frame.size();
  return total;
}

ClientOutbox::ClientOutbox(OutboxLimits limits, SendFn send, const Clock& clock)
    : limits_(limits), send_(std::move(send)), clock_(clock) {}

std::size_t ClientOutbox::backlog_of(std::string_view route) const {
  auto it = backlogs_.find(route);
  return it == backlogs_.end() ? 0 : it->second.messages.size();
}

Clock::time_point ClientOutbox::next_retry() const noexcept {
  Clock::time_point next = Clock::time_point::max();
  for (const auto& [route, backlog] : backlogs_) next = std::min(next, backlog.next_try);
  return next;
}

void ClientOutbox::send(std::string_view route, Command command, Frames frames) {
  auto it = backlogs_.find(route);
  if (it == backlogs_.end()) {
    switch (send_(route, frames)) {
      case SendStatus::sent:
        ++stats_.sent;
        return;
      case SendStatus::unreachable:
        drop_unreachable(route, 1);
        return;
      case SendStatus::would_block:
        break;
    }
    it = backlogs_.emplace(std::string(route), Backlog{}).first;
    it->second.delay = kFirstRetry;
    it->second.next_try = clock_.now() + kFirstRetry;
  }
  // Behind a backlog: keep order, apply the bounds.
  Backlog& backlog = it->second;
  const std::size_t bytes = frames_bytes(frames);
  if (!keeps(backlog, command, bytes)) {
    count_drop(command);
    note_drop(route, command, backlog);
    return;
  }
  backlog.messages.push_back(Pending{command, std::move(frames), bytes});
  backlog.bytes += bytes;
  backlog_bytes_ += bytes;
  ++backlog_total_;
  ++stats_.buffered;
  stats_.peak_backlog = std::max(stats_.peak_backlog, backlog.messages.size());
}

bool ClientOutbox::keeps(const Backlog& backlog, Command command, std::size_t bytes) const {
  if (command == Command::reset) return true;
  if (backlog.bytes + bytes > limits_.bytes) return false;
  const std::size_t waiting = backlog.messages.size();
  if (is_final(command)) return true;
  return waiting < (is_ack(command) ? 2 * limits_.messages : limits_.messages);
}

void ClientOutbox::count_drop(Command command) {
  if (command == Command::chunk) {
    ++stats_.dropped_chunks;
  } else if (is_final(command)) {
    ++stats_.dropped_finals;
  } else {
    ++stats_.dropped_other;
  }
}

void ClientOutbox::pop_front(Backlog& backlog) {
  const std::size_t bytes = backlog.messages.front().bytes;
  backlog.bytes -= bytes;
  backlog_bytes_ -= bytes;
  backlog.messages.pop_front();
  --backlog_total_;
}

void ClientOutbox::flush() {
  const Clock::time_point now = clock_.now();
  for (auto it = backlogs_.begin(); it != backlogs_.end();) {
    Backlog& backlog = it->second;
    if (backlog.next_try <= now) {
      const bool progressed = drain(it->first, backlog);
      backlog.delay = progressed ? Clock::duration(kFirstRetry)
                                 : std::min<Clock::duration>(backlog.delay * 2, kMaxRetry);
      backlog.next_try = now + backlog.delay;
    }
    if (backlog.messages.empty()) {
      it = backlogs_.erase(it);
    } else {
      ++it;
    }
  }
}

bool ClientOutbox::drain(std::string_view route, Backlog& backlog) {
  bool progressed = false;
  while (!backlog.messages.empty()) {
    switch (send_(route, backlog.messages.front().frames)) {
      case SendStatus::sent:
        ++stats_.sent;
        pop_front(backlog);
        progressed = true;
        break;
      case SendStatus::would_block:
        return progressed;
      case SendStatus::unreachable: {
        const std::size_t count = backlog.messages.size();
        while (!backlog.messages.empty()) pop_front(backlog);
        drop_unreachable(route, count);
        return true;
      }
    }
  }
  return progressed;
}

void ClientOutbox::drop_unreachable(std::string_view route, std::size_t count) {
  stats_.dropped_unreachable += count;
  if (drop_log_.allow(clock_.now())) {
    spdlog::warn("client {} is gone: dropped {} message(s) for it ({} similar suppressed)",
                 route_hex(route), count, drop_log_.take_suppressed());
  }
}

void ClientOutbox::note_drop(std::string_view route, Command command, const Backlog& backlog) {
  if (drop_log_.allow(clock_.now())) {
    spdlog::warn(
        "client {} reads too slowly: dropped a {} ({} messages, {} bytes waiting; limits {}, {}) "
        "({} similar suppressed)",
        route_hex(route), protocol::to_string(command), backlog.messages.size(), backlog.bytes,
        limits_.messages, limits_.bytes, drop_log_.take_suppressed());
  }
}

}  // namespace dispatch::broker
