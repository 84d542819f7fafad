// SIGTERM reaches the event loop through a signalfd, or - when the kernel refuses one - through
// a handler that leaves the signal unblocked, never blocked and ignored.

#include "dispatch/worker/runtime/termination_signals.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>

namespace dispatch::worker {
namespace {

bool readable(int fd) {
  pollfd item{fd, POLLIN, 0};
  return ::poll(&item, 1, 5000) == 1;
}

bool blocked(int signo) {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, signo) == 1;
}

// As main() does before any thread starts.
class TerminationSignalsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &saved_);
  }
  void TearDown() override { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  sigset_t saved_{};
};

TEST_F(TerminationSignalsTest, SignalFdReportsEachSignal) {
  TerminationSignals signals;
  ASSERT_EQ(signals.source(), TerminationSignals::Source::signal_fd);
  pthread_kill(pthread_self(), SIGINT);
  ASSERT_TRUE(readable(signals.fd()));
  EXPECT_EQ(signals.take(), std::vector<int>{SIGINT});
  EXPECT_TRUE(signals.take().empty());
}

TEST_F(TerminationSignalsTest, WithoutSignalFdTheSignalIsUnblockedAndStillArrives) {
  {
    TerminationSignals signals(TerminationSignals::Source::handler);
    ASSERT_EQ(signals.source(), TerminationSignals::Source::handler);
    EXPECT_FALSE(blocked(SIGTERM));
    EXPECT_FALSE(blocked(SIGINT));
    pthread_kill(pthread_self(), SIGTERM);  // without the handler this would end the test
    ASSERT_TRUE(readable(signals.fd()));
    EXPECT_EQ(signals.take(), std::vector<int>{SIGTERM});
  }
  // Gone: the mask is as it was.
  EXPECT_TRUE(blocked(SIGTERM));
}

}  // namespace
}  // namespace dispatch::worker
