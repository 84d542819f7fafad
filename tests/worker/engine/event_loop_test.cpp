#include "dispatch/worker/event_loop.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

namespace dispatch::worker {
namespace {

using namespace std::chrono_literals;

class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_.data()) != 0) throw std::runtime_error("pipe");
  }
  ~Pipe() {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int read_end() const { return fds_[0]; }
  int write_end() const { return fds_[1]; }
  void close_write() {
    ::close(fds_[1]);
    fds_[1] = -1;
  }
  void put(char c) const { ASSERT_EQ(::write(fds_[1], &c, 1), 1); }
  char take() const {
    char c = 0;
    EXPECT_EQ(::read(fds_[0], &c, 1), 1);
    return c;
  }

 private:
  std::array<int, 2> fds_{-1, -1};
};

template <typename Pred>
bool run_until(EventLoop& loop, Pred done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    loop.run_once(10);
  }
  return true;
}

TEST(EventLoopTimers, RunInDeadlineOrderWithManualClock) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<int> order;
  loop.schedule_after(30ms, [&] { order.push_back(30); });
  loop.schedule_after(10ms, [&] { order.push_back(10); });
  loop.schedule_after(20ms, [&] { order.push_back(20); });
  loop.schedule_after(10ms, [&] { order.push_back(11); });  // same deadline: FIFO
  EXPECT_EQ(loop.pending_timers(), 4u);

  EXPECT_EQ(loop.run_once(0), 0);
  EXPECT_TRUE(order.empty());
  clock.advance(10ms);
  EXPECT_EQ(loop.run_once(0), 2);
  EXPECT_EQ(order, (std::vector<int>{10, 11}));
  clock.advance(25ms);
  EXPECT_EQ(loop.run_once(0), 2);
  EXPECT_EQ(order, (std::vector<int>{10, 11, 20, 30}));
  EXPECT_EQ(loop.pending_timers(), 0u);
}

TEST(EventLoopTimers, CancelledTimerNeverRuns) {
  ManualClock clock;
  EventLoop loop(clock);
  int fired = 0;
  const TimerId keep = loop.schedule_after(5ms, [&] { fired += 1; });
  const TimerId drop = loop.schedule_after(5ms, [&] { fired += 100; });
  loop.cancel(drop);
  loop.cancel(drop);       // twice: no-op
  loop.cancel(kNoTimer);   // no-op
  loop.cancel(123456789);  // unknown: no-op
  EXPECT_EQ(loop.pending_timers(), 1u);
  clock.advance(5ms);
  loop.run_once(0);
  EXPECT_EQ(fired, 1);
  loop.cancel(keep);  // already fired: no-op
  EXPECT_EQ(loop.pending_timers(), 0u);
}

TEST(EventLoopTimers, TimerCancelsAnotherDueTimer) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<int> ran;
  TimerId second = kNoTimer;
  loop.schedule_after(1ms, [&] {
    ran.push_back(1);
    loop.cancel(second);
  });
  second = loop.schedule_after(1ms, [&] { ran.push_back(2); });
  loop.schedule_after(1ms, [&] { ran.push_back(3); });
  clock.advance(1ms);
  EXPECT_EQ(loop.run_once(0), 2);
  EXPECT_EQ(ran, (std::vector<int>{1, 3}));
}

TEST(EventLoopTimers, NeverRunsInlineAndSelfReschedulingDoesNotStarve) {
  ManualClock clock;
  EventLoop loop(clock);
  int runs = 0;
  std::function<void()> again = [&] {
    ++runs;
    loop.schedule_after(0ms, again);
  };
  loop.schedule_after(0ms, again);
  EXPECT_EQ(runs, 0);  // scheduling does not run it
  EXPECT_EQ(loop.run_once(0), 1);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(loop.run_once(0), 1);
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(loop.pending_timers(), 1u);
}

TEST(EventLoopTimers, ManyCancellationsKeepPendingCountExact) {
  ManualClock clock;
  EventLoop loop(clock);
  std::vector<TimerId> ids;
  int fired = 0;
  for (int i = 0; i < 10'000; ++i) {
    ids.push_back(loop.schedule_after(std::chrono::milliseconds(i % 100), [&] { ++fired; }));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i % 10 != 0) loop.cancel(ids[i]);
  }
  EXPECT_EQ(loop.pending_timers(), 1000u);
  clock.advance(100ms);
  loop.run_once(0);
  EXPECT_EQ(fired, 1000);
  EXPECT_EQ(loop.pending_timers(), 0u);
}

TEST(EventLoopTimers, RealClockTimerWaitsItsDelay) {
  EventLoop loop;
  bool fired = false;
  const auto start = std::chrono::steady_clock::now();
  loop.schedule_after(30ms, [&] { fired = true; });
  ASSERT_TRUE(run_until(loop, [&] { return fired; }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
}

TEST(EventLoopTimers, ThrowingCallbackDoesNotStopTheLoop) {
  ManualClock clock;
  EventLoop loop(clock);
  bool later_ran = false;
  loop.schedule_after(0ms, [] { throw std::runtime_error("boom"); });
  loop.schedule_after(0ms, [&] { later_ran = true; });
  EXPECT_EQ(loop.run_once(0), 2);
  EXPECT_TRUE(later_ran);
}

TEST(EventLoopThreads, PostFromAnotherThreadRunsOnLoopThread) {
  EventLoop loop;
  constexpr int kPosts = 1000;
  int ran = 0;  // touched only on the loop thread
  std::atomic<bool> wrong_thread{false};
  const auto loop_thread = std::this_thread::get_id();
  std::thread poster([&] {
    for (int i = 0; i < kPosts; ++i) {
      loop.post([&] {
        if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
        ++ran;
      });
    }
  });
  const bool done = run_until(loop, [&] { return ran == kPosts; });
  poster.join();
  ASSERT_TRUE(done);
  EXPECT_FALSE(wrong_thread.load());
}

TEST(EventLoopThreads, StopFromAnotherThreadEndsRun) {
  EventLoop loop;
  std::atomic<bool> running{false};
  loop.post([&] { running = true; });
  auto finished = std::async(std::launch::async, [&] { loop.run(); });
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!running.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_TRUE(running.load());
  loop.stop();
  ASSERT_EQ(finished.wait_for(5s), std::future_status::ready);
}

TEST(EventLoopThreads, StopBeforeRunReturnsAndRunIsReusable) {
  EventLoop loop;
  loop.stop();
  loop.run();  // returns at once
  int ran = 0;
  loop.post([&] {
    ++ran;
    loop.stop();
  });
  loop.run();
  EXPECT_EQ(ran, 1);
}

EventLoop* g_signal_loop = nullptr;
void stop_on_signal(int) {
  g_signal_loop->stop();
}

TEST(EventLoopThreads, StopFromSignalHandler) {
  EventLoop loop;
  g_signal_loop = &loop;
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_handler = stop_on_signal;
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR1, &action, &previous), 0);
  loop.post([] { ::raise(SIGUSR1); });
  auto finished = std::async(std::launch::async, [&] { loop.run(); });
  EXPECT_EQ(finished.wait_for(5s), std::future_status::ready);
  ::sigaction(SIGUSR1, &previous, nullptr);
  g_signal_loop = nullptr;
}

TEST(EventLoopFds, WatchPipeAndReadWhatArrives) {
  EventLoop loop;
  Pipe pipe;
  std::string got;
  loop.watch(pipe.read_end(), kReadable, [&](uint32_t ready) {
    EXPECT_NE(ready & kReadable, 0u);
    got.push_back(pipe.take());
  });
  EXPECT_EQ(loop.run_once(0), 0);  // nothing written yet
  pipe.put('a');
  ASSERT_TRUE(run_until(loop, [&] { return got.size() == 1; }));
  pipe.put('b');
  pipe.put('c');
  ASSERT_TRUE(run_until(loop, [&] { return got.size() == 3; }));  // level-triggered: both
  EXPECT_EQ(got, "abc");
  loop.unwatch(pipe.read_end());
  pipe.put('d');
  EXPECT_EQ(loop.run_once(20), 0);
}

TEST(EventLoopFds, WritableWatchAndReplacingInterest) {
  EventLoop loop;
  Pipe pipe;
  int writable = 0;
  loop.watch(pipe.write_end(), kWritable, [&](uint32_t ready) {
    EXPECT_NE(ready & kWritable, 0u);
    ++writable;
  });
  ASSERT_TRUE(run_until(loop, [&] { return writable == 1; }));
  int readable = 0;
  loop.watch(pipe.read_end(), kReadable, [&](uint32_t) {
    ++readable;
    pipe.take();
  });
  // Replacing the watch: the new callback and interest win.
  int replaced = 0;
  loop.watch(pipe.write_end(), kWritable, [&](uint32_t) { ++replaced; });
  ASSERT_TRUE(run_until(loop, [&] { return replaced == 1; }));
  EXPECT_EQ(writable, 1);
  pipe.put('x');
  ASSERT_TRUE(run_until(loop, [&] { return readable == 1; }));
}

TEST(EventLoopFds, UnwatchSelfAndOthersInsideCallback) {
  EventLoop loop;
  Pipe first;
  Pipe second;
  int first_calls = 0;
  int second_calls = 0;
  // Both are readable in the same epoll batch; whichever runs first unwatches both.
  const auto unwatch_both = [&] {
    loop.unwatch(first.read_end());
    loop.unwatch(second.read_end());
  };
  loop.watch(first.read_end(), kReadable, [&](uint32_t) {
    ++first_calls;
    unwatch_both();
  });
  loop.watch(second.read_end(), kReadable, [&](uint32_t) {
    ++second_calls;
    unwatch_both();
  });
  first.put('1');
  second.put('2');
  ASSERT_TRUE(run_until(loop, [&] { return first_calls + second_calls > 0; }));
  for (int i = 0; i < 3; ++i) loop.run_once(0);
  EXPECT_EQ(first_calls + second_calls, 1);
}

TEST(EventLoopFds, ReplaceOwnCallbackWhileRunningAndRewatchAfterUnwatch) {
  EventLoop loop;
  Pipe pipe;
  std::vector<std::string> log;
  loop.watch(pipe.read_end(), kReadable, [&](uint32_t) {
    // The running closure is replaced by a new one: the old must stay valid until it returns.
    std::string tag = "old";
    loop.watch(pipe.read_end(), kReadable, [&](uint32_t) {
      log.push_back("new");
      pipe.take();
    });
    log.push_back(tag);
  });
  pipe.put('x');
  ASSERT_TRUE(run_until(loop, [&] { return log.size() == 2; }));
  EXPECT_EQ(log, (std::vector<std::string>{"old", "new"}));

  loop.unwatch(pipe.read_end());
  loop.unwatch(pipe.read_end());  // twice: no-op
  int rewatched = 0;
  loop.watch(pipe.read_end(), kReadable, [&](uint32_t) {
    ++rewatched;
    pipe.take();
  });
  pipe.put('y');
  ASSERT_TRUE(run_until(loop, [&] { return rewatched == 1; }));
}

TEST(EventLoopFds, WatchOfHigherFdInsideCallbackKeepsRunningCallbackValid) {
  EventLoop loop;
  Pipe pipe;
  std::vector<std::unique_ptr<Pipe>> extra;
  int calls = 0;
  loop.watch(pipe.read_end(), kReadable, [&, big_capture = std::string(64, 'x')](uint32_t) {
    // Grow the watch table while this closure runs; its captures must stay readable.
    for (int i = 0; i < 50; ++i) {
      extra.push_back(std::make_unique<Pipe>());
      loop.watch(extra.back()->read_end(), kReadable, [](uint32_t) {});
    }
    EXPECT_EQ(big_capture, std::string(64, 'x'));
    ++calls;
    pipe.take();
  });
  pipe.put('z');
  ASSERT_TRUE(run_until(loop, [&] { return calls == 1; }));
  for (auto& p : extra) loop.unwatch(p->read_end());
}

TEST(EventLoopFds, HangUpIsReported) {
  EventLoop loop;
  auto pipe = std::make_unique<Pipe>();
  uint32_t seen = 0;
  const int fd = pipe->read_end();
  loop.watch(fd, kReadable, [&](uint32_t ready) {
    seen = ready;
    loop.unwatch(fd);
  });
  pipe->close_write();  // the reader sees EOF / hang-up
  ASSERT_TRUE(run_until(loop, [&] { return seen != 0; }));
  EXPECT_NE(seen & kReadable, 0u);
}

}  // namespace
}  // namespace dispatch::worker
