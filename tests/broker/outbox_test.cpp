// ClientOutbox: a slow client is buffered (bounded), a gone one dropped; the broker never waits.

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dispatch/broker/client_outbox.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::broker {
namespace {

using protocol::Command;

class OutboxTest : public ::testing::Test {
 protected:
  // Frames carry a marker in the header frame so delivery order can be checked.
  static Frames message(Command command, const std::string& marker) {
    return make_frames(command, marker);
  }

  SendStatus fake_send(std::string_view route, Frames& frames) {
    ++attempts[std::string(route)];
    if (gone.contains(std::string(route))) return SendStatus::unreachable;
    if (room[std::string(route)] == 0) return SendStatus::would_block;
    --room[std::string(route)];
    delivered[std::string(route)].emplace_back(view(frames.at(2)));
    frames.clear();  // what a real send does: the frames are consumed
    return SendStatus::sent;
  }

  // Lets every backoff expire, then retries.
  void retry() {
    clock.advance(std::chrono::milliseconds(100));
    outbox.flush();
  }

  ManualClock clock;
  std::map<std::string, int> room;  // messages each client's pipe still takes
  std::set<std::string> gone;
  std::map<std::string, std::vector<std::string>> delivered;
  std::map<std::string, int> attempts;
  ClientOutbox outbox{OutboxLimits{4, std::size_t{1} << 20},
                      [this](std::string_view r, Frames& f) { return fake_send(r, f); }, clock};
};

TEST_F(OutboxTest, SendsAtOnceWhenThePipeHasRoom) {
  room["a"] = 10;
  outbox.send("a", Command::accepted, message(Command::accepted, "1"));
  EXPECT_EQ(delivered["a"], (std::vector<std::string>{"1"}));
  EXPECT_FALSE(outbox.has_backlog());
}

TEST_F(OutboxTest, BuffersInOrderWhileThePipeIsFullAndRetriesOnFlush) {
  room["a"] = 1;
  for (int i = 0; i < 4; ++i) {
    outbox.send("a", Command::chunk, message(Command::chunk, std::to_string(i)));
  }
  EXPECT_EQ(delivered["a"], (std::vector<std::string>{"0"}));
  EXPECT_EQ(outbox.backlog_of("a"), 3u);
  retry();
  EXPECT_EQ(outbox.backlog_of("a"), 3u);  // still no room
  room["a"] = 2;
  retry();
  EXPECT_EQ(delivered["a"], (std::vector<std::string>{"0", "1", "2"}));
  // A new message queues behind the backlog even when the pipe has room again, keeping order.
  room["a"] = 0;
  outbox.send("a", Command::chunk, message(Command::chunk, "4"));
  room["a"] = 10;
  retry();
  EXPECT_EQ(delivered["a"], (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  EXPECT_FALSE(outbox.has_backlog());
}

TEST_F(OutboxTest, OverTheBoundChunksAreDroppedButFinalMessagesKept) {
  room["slow"] = 0;
  for (int i = 0; i < 10; ++i) {
    outbox.send("slow", Command::chunk, message(Command::chunk, "c" + std::to_string(i)));
  }
  EXPECT_EQ(outbox.backlog_of("slow"), 4u);
  EXPECT_EQ(outbox.stats().dropped_chunks, 6u);
  outbox.send("slow", Command::reset, message(Command::reset, "reset"));
  outbox.send("slow", Command::result, message(Command::result, "result"));
  outbox.send("slow", Command::error, message(Command::error, "error"));
  outbox.send("slow", Command::heartbeat, message(Command::heartbeat, "hb"));
  EXPECT_EQ(outbox.backlog_of("slow"), 7u);
  EXPECT_EQ(outbox.stats().dropped_other, 1u);
  room["slow"] = 100;
  retry();
  EXPECT_EQ(delivered["slow"],
            (std::vector<std::string>{"c0", "c1", "c2", "c3", "reset", "result", "error"}));
}

// A client that never reads: past the byte bound only resets are buffered. Chunks leave a gap;
// finals are dropped too (the broker keeps them in its result store for a resubmit).
TEST_F(OutboxTest, OverTheByteBoundOnlyResetsAreKept) {
  const std::string text(1'000, 'x');
  const std::size_t size = frames_bytes(message(Command::chunk, text));
  ClientOutbox bounded{OutboxLimits{1'000, 3 * size},
                       [this](std::string_view r, Frames& f) { return fake_send(r, f); }, clock};
  room["deaf"] = 0;
  for (int i = 0; i < 5; ++i) bounded.send("deaf", Command::chunk, message(Command::chunk, text));
  EXPECT_EQ(bounded.backlog_of("deaf"), 3u);
  EXPECT_EQ(bounded.backlog_bytes(), 3 * size);
  EXPECT_EQ(bounded.stats().dropped_chunks, 2u);
  bounded.send("deaf", Command::result, message(Command::result, text));
  bounded.send("deaf", Command::error, message(Command::error, "e"));
  bounded.send("deaf", Command::accepted, message(Command::accepted, "a"));
  EXPECT_EQ(bounded.stats().dropped_finals, 2u);
  EXPECT_EQ(bounded.stats().dropped_other, 1u);
  bounded.send("deaf", Command::reset, message(Command::reset, "reset"));
  EXPECT_EQ(bounded.backlog_of("deaf"), 4u);
  // Another client is unaffected; bytes leave the count as the backlog drains.
  room["fine"] = 10;
  bounded.send("fine", Command::result, message(Command::result, text));
  EXPECT_EQ(delivered["fine"].size(), 1u);
  room["deaf"] = 100;
  clock.advance(std::chrono::milliseconds(100));
  bounded.flush();
  EXPECT_EQ(delivered["deaf"].back(), "reset");
  EXPECT_EQ(bounded.backlog_bytes(), 0u);
  EXPECT_FALSE(bounded.has_backlog());
}

TEST_F(OutboxTest, AcksHaveTheirOwnLargerBound) {
  room["slow"] = 0;
  for (int i = 0; i < 12; ++i) {
    outbox.send("slow", Command::accepted, message(Command::accepted, std::to_string(i)));
  }
  EXPECT_EQ(outbox.backlog_of("slow"), 8u);  // 2 x limit
  EXPECT_EQ(outbox.stats().dropped_other, 4u);
}

TEST_F(OutboxTest, GoneClientIsDroppedWithoutAffectingOthers) {
  room["gone"] = 0;
  room["fine"] = 100;
  outbox.send("gone", Command::chunk, message(Command::chunk, "x"));
  outbox.send("gone", Command::result, message(Command::result, "y"));
  EXPECT_EQ(outbox.backlog_of("gone"), 2u);
  gone.insert("gone");
  outbox.send("fine", Command::result, message(Command::result, "ok"));
  retry();
  EXPECT_FALSE(outbox.has_backlog());
  EXPECT_EQ(outbox.stats().dropped_unreachable, 2u);
  EXPECT_EQ(delivered["fine"], (std::vector<std::string>{"ok"}));
  outbox.send("gone", Command::result, message(Command::result, "z"));
  EXPECT_EQ(outbox.stats().dropped_unreachable, 3u);
  EXPECT_FALSE(outbox.has_backlog());
}

TEST_F(OutboxTest, StuckClientIsRetriedWithExponentialBackoff) {
  using std::chrono::milliseconds;
  room["stuck"] = 0;
  outbox.send("stuck", Command::result, message(Command::result, "r"));
  EXPECT_EQ(attempts["stuck"], 1);
  EXPECT_EQ(outbox.next_retry(), clock.now() + milliseconds(1));
  // Retries at +1, then after 2, 4, 8 ... ms, capped at 64 ms.
  std::vector<long> gaps;
  auto last = clock.now();
  for (int i = 0; i < 2'000 && gaps.size() < 9; ++i) {
    clock.advance(milliseconds(1));
    const int before = attempts["stuck"];
    outbox.flush();
    if (attempts["stuck"] > before) {
      gaps.push_back(std::chrono::duration_cast<milliseconds>(clock.now() - last).count());
      last = clock.now();
    }
  }
  EXPECT_EQ(gaps, (std::vector<long>{1, 2, 4, 8, 16, 32, 64, 64, 64}));
  // Progress resets the backoff.
  room["stuck"] = 1;
  clock.advance(milliseconds(64));
  outbox.flush();
  EXPECT_EQ(delivered["stuck"], (std::vector<std::string>{"r"}));
  EXPECT_FALSE(outbox.has_backlog());
  EXPECT_EQ(outbox.next_retry(), Clock::time_point::max());
}

}  // namespace
}  // namespace dispatch::broker
