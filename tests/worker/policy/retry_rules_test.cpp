#include "dispatch/worker/policy/retry_rules.hpp"

#include <gtest/gtest.h>

#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

TEST(RetryRules, RetryableKinds) {
  EXPECT_TRUE(is_retryable(failure(ErrorKind::network)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::timeout)));  // connect timeout, status 0
  EXPECT_TRUE(is_retryable(failure(ErrorKind::rate_limited, 429)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::overloaded, 529)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::overloaded, 503)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::server_error, 500)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::stream_interrupted)));
}

TEST(RetryRules, RetryableStatusesWhateverTheKind) {
  EXPECT_TRUE(is_retryable(failure(ErrorKind::invalid_request, 408)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::invalid_request, 409)));
  EXPECT_TRUE(is_retryable(failure(ErrorKind::internal, 502)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::internal, 0)));
  EXPECT_TRUE(has_retryable_status(529));
  EXPECT_FALSE(has_retryable_status(404));
}

TEST(RetryRules, ClientErrorsAreNeverRetried) {
  EXPECT_FALSE(is_retryable(failure(ErrorKind::invalid_request, 400)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::authentication, 401)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::authentication, 403)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::model_not_available, 404)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::context_length_exceeded, 400)));
  EXPECT_FALSE(is_retryable(failure(ErrorKind::content_filtered, 400)));
}

TEST(RetryRules, SilenceTimeoutsAreFailedOverNotRetried) {
  auto first = failure(ErrorKind::timeout, 0, "first_token_timeout");
  auto idle = failure(ErrorKind::timeout, 0, "idle_timeout");
  EXPECT_TRUE(is_silence_timeout(first));
  EXPECT_TRUE(is_silence_timeout(idle));
  EXPECT_FALSE(is_retryable(first));
  EXPECT_FALSE(is_retryable(idle));
  EXPECT_FALSE(is_silence_timeout(failure(ErrorKind::timeout)));
}

TEST(RetryRules, ShouldRetryHeader) {
  auto vetoed = failure(ErrorKind::server_error, 500);
  vetoed.should_retry_header = true;
  vetoed.should_retry = false;
  EXPECT_FALSE(is_retryable(vetoed));

  auto forced = failure(ErrorKind::internal, 0);
  forced.should_retry_header = true;
  forced.should_retry = true;
  EXPECT_TRUE(is_retryable(forced));

  auto client_error = failure(ErrorKind::authentication, 401);
  client_error.should_retry_header = true;
  client_error.should_retry = true;
  EXPECT_FALSE(is_retryable(client_error));
}

TEST(RetryRules, HealthFailuresFeedTheBreaker) {
  for (auto kind : {ErrorKind::network, ErrorKind::timeout, ErrorKind::overloaded,
                    ErrorKind::server_error, ErrorKind::stream_interrupted}) {
    EXPECT_TRUE(is_health_failure(kind)) << protocol::to_string(kind);
  }
  // A rate limit is the account's quota, not a broken provider (the broker paces it).
  for (auto kind : {ErrorKind::rate_limited, ErrorKind::invalid_request, ErrorKind::authentication,
                    ErrorKind::model_not_available, ErrorKind::context_length_exceeded,
                    ErrorKind::content_filtered, ErrorKind::cancelled, ErrorKind::internal}) {
    EXPECT_FALSE(is_health_failure(kind)) << protocol::to_string(kind);
  }
}

}  // namespace
}  // namespace dispatch::worker::test
