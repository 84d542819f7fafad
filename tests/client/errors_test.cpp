#include "dispatch/errors.hpp"

#include <gtest/gtest.h>

#include <typeinfo>

namespace dispatch {
namespace {

protocol::Error wire_error(ErrorKind kind) {
  protocol::Error error;
  error.kind = kind;
  error.message = "boom";
  error.status = 429;
  error.code = "rate_limit_exceeded";
  error.provider = "openai";
  error.model = "gpt-4o";
  error.attempts.push_back(
      protocol::Attempt{"openai", "gpt-4o", "rate_limited", 429, "", "", 0, 5, ""});
  return error;
}

template <class Expected>
void expect_thrown_as(ErrorKind kind) {
  SCOPED_TRACE(std::string(protocol::to_string(kind)));
  try {
    throw_dispatch_error(wire_error(kind));
    FAIL() << "nothing thrown";
  } catch (const Expected& e) {
    EXPECT_EQ(typeid(e), typeid(Expected));
    EXPECT_EQ(e.kind(), kind);
    EXPECT_EQ(e.status(), 429);
    EXPECT_EQ(e.code(), "rate_limit_exceeded");
    EXPECT_EQ(e.provider(), "openai");
    EXPECT_EQ(e.model(), "gpt-4o");
    EXPECT_EQ(e.attempts().size(), 1u);
  }
}

TEST(ErrorsTest, EveryKindThrowsItsOwnClass) {
  expect_thrown_as<UnsupportedProviderError>(ErrorKind::unsupported_provider);
  expect_thrown_as<ModelNotAvailableError>(ErrorKind::model_not_available);
  expect_thrown_as<InvalidRequestError>(ErrorKind::invalid_request);
  expect_thrown_as<AuthenticationError>(ErrorKind::authentication);
  expect_thrown_as<RateLimitedError>(ErrorKind::rate_limited);
  expect_thrown_as<OverloadedError>(ErrorKind::overloaded);
  expect_thrown_as<ServerError>(ErrorKind::server_error);
  expect_thrown_as<TimeoutError>(ErrorKind::timeout);
  expect_thrown_as<NetworkError>(ErrorKind::network);
  expect_thrown_as<ContextLengthExceededError>(ErrorKind::context_length_exceeded);
  expect_thrown_as<ContentFilteredError>(ErrorKind::content_filtered);
  expect_thrown_as<StreamInterruptedError>(ErrorKind::stream_interrupted);
  expect_thrown_as<QueueFullError>(ErrorKind::queue_full);
  expect_thrown_as<CancelledError>(ErrorKind::cancelled);
  expect_thrown_as<InternalError>(ErrorKind::internal);
  expect_thrown_as<DispatchError>(ErrorKind::unknown);
}

TEST(ErrorsTest, ProviderHttpErrorsShareApiError) {
  for (auto kind : {ErrorKind::invalid_request, ErrorKind::authentication, ErrorKind::rate_limited,
                    ErrorKind::overloaded, ErrorKind::server_error}) {
    EXPECT_NE(dynamic_cast<const ApiError*>(make_dispatch_error(wire_error(kind)).get()), nullptr)
        << protocol::to_string(kind);
  }
  EXPECT_EQ(
      dynamic_cast<const ApiError*>(make_dispatch_error(wire_error(ErrorKind::timeout)).get()),
      nullptr);
}

TEST(ErrorsTest, RaiseThroughTheBaseKeepsTheType) {
  std::shared_ptr<const DispatchError> held = make_dispatch_error(wire_error(ErrorKind::timeout));
  EXPECT_THROW(held->raise(), TimeoutError);
  std::exception_ptr ptr = make_dispatch_exception(wire_error(ErrorKind::cancelled));
  EXPECT_THROW(std::rethrow_exception(ptr), CancelledError);
}

TEST(ErrorsTest, WhatNamesKindMessageStatusCodeAndTarget) {
  const auto error = make_dispatch_error(wire_error(ErrorKind::rate_limited));
  EXPECT_STREQ(error->what(),
               "rate_limited: boom (status 429, code rate_limit_exceeded, openai/gpt-4o)");
  const auto bare = make_dispatch_error(make_wire_error(ErrorKind::network, "", ""));
  EXPECT_STREQ(bare->what(), "network: (no message)");
}

}  // namespace
}  // namespace dispatch
