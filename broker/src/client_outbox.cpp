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

ClientOutbox::ClientOutbox(std::size_t limit, SendFn send, const Clock& clock)
    : limit_(limit), send_(std::move(send)), clock_(clock) {}

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
  const std::size_t waiting = backlog.messages.size();
  const bool keep =
      is_final(command) || (is_ack(command) ? waiting < 2 * limit_ : waiting < limit_);
  if (!keep) {
    if (command == Command::chunk) {
      ++stats_.dropped_chunks;
    } else {
      ++stats_.dropped_other;
    }
    note_drop(route, command, waiting);
    return;
  }
  backlog.messages.push_back(Pending{command, std::move(frames)});
  ++backlog_total_;
  ++stats_.buffered;
  stats_.peak_backlog = std::max(stats_.peak_backlog, backlog.messages.size());
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
        backlog.messages.pop_front();
        --backlog_total_;
        progressed = true;
        break;
      case SendStatus::would_block:
        return progressed;
      case SendStatus::unreachable: {
        const std::size_t count = backlog.messages.size();
        backlog_total_ -= count;
        backlog.messages.clear();
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

void ClientOutbox::note_drop(std::string_view route, Command command, std::size_t backlog) {
  if (drop_log_.allow(clock_.now())) {
    spdlog::warn(
        "client {} reads too slowly: dropped a {} ({} messages waiting, limit {}) "
        "({} similar suppressed)",
        route_hex(route), protocol::to_string(command), backlog, limit_,
        drop_log_.take_suppressed());
  }
}

}  // namespace dispatch::broker
