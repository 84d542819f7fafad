#include "dispatch/common/trace.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace dispatch {
namespace {

constexpr const char* kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(Traceparent, ParsesTheSpecExample) {
  auto parsed = parse_traceparent(kValid);
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(parsed->parent_id, "00f067aa0ba902b7");
  EXPECT_EQ(parsed->flags, "01");
  EXPECT_EQ(format_traceparent(*parsed), kValid);
}

TEST(Traceparent, RefusesEveryMalformedShape) {
  const char* bad[] = {
      "",
      "00",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   // uppercase trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",   // uppercase parent id
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    // trace id 31 digits
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",  // trace id 33 digits
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",    // parent id 15 digits
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   // all-zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   // all-zero parent id
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version ff
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   // version not hex
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",   // flags not hex
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  // version 00 too long
      "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",   // wrong separators
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  // later version, bad tail
  };
  for (const char* text : bad) {
    auto parsed = parse_traceparent(text);
    EXPECT_FALSE(parsed) << "accepted: '" << text << "'";
    if (!parsed) {
      EXPECT_FALSE(parsed.error().message.empty());
    }
  }
}

TEST(Traceparent, LaterVersionsKeepTheirFirstFourFields) {
  auto parsed = parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(format_traceparent(*parsed), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

TEST(Traceparent, FreshTracesAreValidAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const TraceContext trace = fresh_trace();
    auto reparsed = parse_traceparent(format_traceparent(trace));
    ASSERT_TRUE(reparsed) << reparsed.error().message;
    EXPECT_EQ(*reparsed, trace);
    seen.insert(trace.trace_id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(Traceparent, ChildKeepsTheTraceAndTakesTheSpan) {
  auto parent = parse_traceparent(kValid);
  ASSERT_TRUE(parent);
  const std::string span = new_span_id();
  const TraceContext child = child_of(*parent, span);
  EXPECT_EQ(child.trace_id, parent->trace_id);
  EXPECT_EQ(child.parent_id, span);
  EXPECT_EQ(child.flags, "01");
  EXPECT_TRUE(parse_traceparent(format_traceparent(child)));
}

}  // namespace
}  // namespace dispatch
