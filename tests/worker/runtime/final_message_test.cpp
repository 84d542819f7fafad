// What does not fit one protocol frame is replaced before it is sent.

#include "final_message.hpp"

#include <gtest/gtest.h>

namespace dispatch::worker {
namespace {

namespace proto = dispatch::protocol;

proto::Attempt attempt(std::string outcome) {
  proto::Attempt attempt;
  attempt.provider = "local";
  attempt.model = "m";
  attempt.outcome = std::move(outcome);
  return attempt;
}

proto::Response response_of(std::size_t content_bytes) {
  proto::Response response;
  response.content = std::string(content_bytes, 'x');
  response.provider = "local";
  response.model = "m";
  response.attempts.push_back(attempt("ok"));
  return response;
}

TEST(FinalMessage, AResultThatFitsIsSentAsIs) {
  const proto::Response response = response_of(100);
  const FinalMessage final = encode_result(response, 1024);
  EXPECT_EQ(final.command, proto::Command::result);
  EXPECT_EQ(proto::decode<proto::Response>(final.payload).value(), response);
}

TEST(FinalMessage, AResultOverTheFrameBecomesResponseTooLarge) {
  const FinalMessage final = encode_result(response_of(5000), 1024);
  ASSERT_EQ(final.command, proto::Command::error);
  EXPECT_LE(final.payload.size(), 1024u);
  const proto::Error error = proto::decode<proto::Error>(final.payload).value();
  EXPECT_EQ(error.kind, proto::ErrorKind::invalid_request);
  EXPECT_EQ(error.code, "response_too_large");
  EXPECT_EQ(error.provider, "local");
  EXPECT_EQ(error.model, "m");
  ASSERT_EQ(error.attempts.size(), 1u);
  EXPECT_NE(error.message.find("over the protocol's frame limit of 1024 bytes"), std::string::npos);
}

TEST(FinalMessage, AnErrorOverTheFrameLosesItsAttemptsThenItsLongMessage) {
  proto::Error error;
  error.kind = proto::ErrorKind::server_error;
  error.message = "boom";
  for (int i = 0; i < 100; ++i) error.attempts.push_back(attempt("server_error"));
  FinalMessage final = encode_error(error, 512);
  ASSERT_EQ(final.command, proto::Command::error);
  proto::Error sent = proto::decode<proto::Error>(final.payload).value();
  EXPECT_TRUE(sent.attempts.empty());
  EXPECT_EQ(sent.message, "boom");

  error.message = std::string(100'000, 'y');
  final = encode_error(error, 8192);
  EXPECT_LE(final.payload.size(), 8192u);
  sent = proto::decode<proto::Error>(final.payload).value();
  EXPECT_EQ(sent.message.size(), 4096u + 3u);  // clipped, marked "..."
}

TEST(FinalMessage, TheDefaultBoundIsTheProtocolFrame) {
  const FinalMessage final = encode_result(response_of(proto::Limits::max_message_bytes));
  EXPECT_EQ(final.command, proto::Command::error);
  EXPECT_LE(final.payload.size(), proto::Limits::max_message_bytes);
}

}  // namespace
}  // namespace dispatch::worker
