// The frame envelope: tag, command, frame count, per-frame size.

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "dispatch/protocol/zmq_io.hpp"
#include "test_util.hpp"

namespace dispatch::protocol {
namespace {

using Code = DecodeError::Code;

Decoded<FrameView> parse(std::vector<std::string_view> frames) {
  return parse_frames(frames);
}

TEST(Frames, WellFormedMessages) {
  const std::string header = encode(Cancel{"j"});
  auto cancel = parse({"LLMD1", "cancel", header});
  ASSERT_TRUE(cancel) << cancel.error().message;
  EXPECT_EQ(cancel.value().command, Command::cancel);
  EXPECT_EQ(cancel.value().header, header);
  EXPECT_TRUE(cancel.value().payload.empty());

  auto submit = parse({"LLMD1", "submit", "H", "P"});
  ASSERT_TRUE(submit);
  EXPECT_EQ(submit.value().command, Command::submit);
  EXPECT_EQ(submit.value().header, "H");
  EXPECT_EQ(submit.value().payload, "P");

  auto status = parse({"LLMD1", "status", kEmptyMap});
  ASSERT_TRUE(status);
  EXPECT_EQ(status.value().command, Command::status);
}

TEST(Frames, TagAndVersion) {
  auto v2 = parse({"LLMD2", "submit", "H", "P"});
  ASSERT_FALSE(v2);
  EXPECT_EQ(v2.error().code, Code::version_mismatch);
  EXPECT_EQ(v2.error().message, "peer speaks LLMD2, this peer speaks LLMD1");
  // Another version may also use another frame layout: the tag is checked first.
  auto v10 = parse({"LLMD10", "hello"});
  ASSERT_FALSE(v10);
  EXPECT_EQ(v10.error().code, Code::version_mismatch);
  EXPECT_EQ(parse({"LLMD", "cancel", "H"}).error().code, Code::version_mismatch);
  EXPECT_EQ(parse({"LLMD1 ", "cancel", "H"}).error().code, Code::version_mismatch);

  auto http = parse({"GET / HTTP/1.1", "cancel", "H"});
  ASSERT_FALSE(http);
  EXPECT_EQ(http.error().code, Code::bad_tag);
  EXPECT_EQ(parse({"", "cancel", "H"}).error().code, Code::bad_tag);
  EXPECT_EQ(parse({"llmd1", "cancel", "H"}).error().code, Code::bad_tag);
  // A binary tag is quoted printably and bounded.
  const std::string noise(1000, '\x01');
  auto binary = parse({noise, "cancel", "H"});
  ASSERT_FALSE(binary);
  EXPECT_LT(binary.error().message.size(), 120u);
}

TEST(Frames, Commands) {
  auto unknown = parse({"LLMD1", "launch", "H"});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Code::unknown_command);
  EXPECT_EQ(unknown.error().message, "unknown command 'launch'");
  EXPECT_EQ(parse({"LLMD1", "", "H"}).error().code, Code::unknown_command);
  EXPECT_EQ(parse({"LLMD1", "Submit", "H", "P"}).error().code, Code::unknown_command);
}

TEST(Frames, FrameCounts) {
  EXPECT_EQ(parse({}).error().code, Code::bad_frame_count);
  EXPECT_EQ(parse({"LLMD1"}).error().code, Code::bad_frame_count);
  EXPECT_EQ(parse({"LLMD1", "cancel"}).error().code, Code::bad_frame_count);
  auto missing_payload = parse({"LLMD1", "submit", "H"});
  ASSERT_FALSE(missing_payload);
  EXPECT_EQ(missing_payload.error().code, Code::bad_frame_count);
  EXPECT_EQ(missing_payload.error().message, "submit takes 4 frames, got 3");
  EXPECT_EQ(parse({"LLMD1", "cancel", "H", "P"}).error().code, Code::bad_frame_count);
  EXPECT_EQ(parse({"LLMD1", "result", "H", "P", "X"}).error().code, Code::bad_frame_count);
  for (auto c : {"submit", "job", "result", "error"}) {
    EXPECT_TRUE(parse({"LLMD1", c, "H", "P"})) << c;
    EXPECT_FALSE(parse({"LLMD1", c, "H"})) << c;
  }
}

TEST(Frames, FrameSizeLimit) {
  const std::string big(Limits::max_message_bytes + 1, 'x');
  auto over = parse({"LLMD1", "submit", "H", big});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, Code::malformed);
  EXPECT_NE(over.error().message.find("frame 3"), std::string::npos);
  const std::string_view at_limit(big.data(), Limits::max_message_bytes);
  EXPECT_TRUE(parse({"LLMD1", "submit", "H", at_limit}));
}

TEST(Frames, OutgoingFramesShape) {
  const OutgoingFrames dealer(Command::submit, "H", "P");
  ASSERT_EQ(dealer.frames().size(), 4u);
  EXPECT_EQ(dealer.frames()[0], "LLMD1");
  EXPECT_EQ(dealer.frames()[1], "submit");
  EXPECT_TRUE(parse_frames(dealer.frames()));

  const OutgoingFrames routed(std::string_view("\x00\x01\x02\x03\x04", 5), Command::accepted, "H");
  ASSERT_EQ(routed.frames().size(), 4u);  // routing id + 3 (no payload for accepted)
  EXPECT_EQ(routed.frames()[0].size(), 5u);
  EXPECT_TRUE(parse_frames(routed.frames().subspan(1)));

  // A payload handed to a command without one is not sent.
  const OutgoingFrames no_payload(Command::chunk, "H", "ignored");
  EXPECT_EQ(no_payload.frames().size(), 3u);
}

TEST(Frames, RandomFramesNeverCrash) {
  std::mt19937_64 rng(42);
  const std::vector<std::string> pool = {"LLMD1", "LLMD2", "submit", "cancel", "status",
                                         "",      "job",   "x",      "\x80",   "result"};
  for (int i = 0; i < 20000; ++i) {
    std::vector<std::string> frames(rng() % 7);
    for (auto& f : frames) {
      if (rng() % 3 == 0) {
        f.resize(rng() % 12);
        for (auto& ch : f) ch = static_cast<char>(rng());
      } else {
        f = pool[rng() % pool.size()];
      }
    }
    std::vector<std::string_view> views(frames.begin(), frames.end());
    auto parsed = parse_frames(views);
    if (parsed) {
      EXPECT_EQ(views.size(), command_has_payload(parsed.value().command) ? 4u : 3u);
      EXPECT_EQ(views[0], "LLMD1");
    } else {
      EXPECT_FALSE(parsed.error().message.empty());
    }
  }
}

}  // namespace
}  // namespace dispatch::protocol
