#include "dispatch/worker/stream_parsers.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace dispatch::worker {

// Found by argument-dependent lookup, so they live in the type's namespace.
bool operator==(const SseEvent& a, const SseEvent& b) {
  return a.event == b.event && a.data == b.data && a.id == b.id;
}

void PrintTo(const SseEvent& e, std::ostream* os) {
  *os << "{event=" << e.event << " data=" << e.data << " id=" << e.id << "}";
}

namespace {

struct Collected {
  std::vector<SseEvent> events;
  bool ok = true;
  bool partial = false;
};

Collected parse_sse(const std::vector<std::string_view>& pieces, std::size_t bound = 1u << 20) {
  SseParser parser(bound);
  Collected out;
  for (auto piece : pieces) {
    out.ok = parser.feed(piece, [&](const SseEvent& e) { out.events.push_back(e); }) && out.ok;
  }
  out.partial = parser.has_partial_event();
  return out;
}

// Feeds `stream` cut at every single point, at every pair of points (short streams) and one
// byte at a time; each way must give exactly `expected`.
void expect_sse_at_every_split(std::string_view stream, const std::vector<SseEvent>& expected,
                               bool expect_partial = false) {
  SCOPED_TRACE(std::string("stream: ") + std::string(stream));
  const auto whole = parse_sse({stream});
  EXPECT_EQ(whole.events, expected);
  EXPECT_EQ(whole.partial, expect_partial);
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    const auto split = parse_sse({stream.substr(0, i), stream.substr(i)});
    ASSERT_EQ(split.events, expected) << "split at " << i;
    ASSERT_EQ(split.partial, expect_partial) << "split at " << i;
  }
  if (stream.size() <= 160) {
    for (std::size_t i = 0; i <= stream.size(); ++i) {
      for (std::size_t j = i; j <= stream.size(); ++j) {
        const auto split =
            parse_sse({stream.substr(0, i), stream.substr(i, j - i), stream.substr(j)});
        ASSERT_EQ(split.events, expected) << "split at " << i << "," << j;
      }
    }
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < stream.size(); ++i) bytes.push_back(stream.substr(i, 1));
  EXPECT_EQ(parse_sse(bytes).events, expected);
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (std::size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos)) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

SseEvent ev(std::string event, std::string data, std::string id = "") {
  return SseEvent{std::move(event), std::move(data), std::move(id)};
}

const std::string kOpenAiStream =
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
    ": keep-alive comment\n\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"
    "data: [DONE]\n\n";

const std::vector<SseEvent> kOpenAiEvents = {
    ev("", R"({"choices":[{"delta":{"content":"Hel"}}]})"),
    ev("", R"({"choices":[{"delta":{"content":"lo"}}]})"),
    ev("", "[DONE]"),
};

TEST(SseParser, OpenAiStreamAtEverySplitPoint) {
  expect_sse_at_every_split(kOpenAiStream, kOpenAiEvents);
}

TEST(SseParser, CrLfLineEndsAtEverySplitPoint) {
  expect_sse_at_every_split(replace_all(kOpenAiStream, "\n", "\r\n"), kOpenAiEvents);
}

TEST(SseParser, CrOnlyLineEndsAtEverySplitPoint) {
  expect_sse_at_every_split(replace_all(kOpenAiStream, "\n", "\r"), kOpenAiEvents);
}

TEST(SseParser, MixedLineEnds) {
  expect_sse_at_every_split("data: a\r\rdata: b\r\n\ndata: c\n\r\n",
                            {ev("", "a"), ev("", "b"), ev("", "c")});
}

TEST(SseParser, AnthropicNamedEventsAndPings) {
  const std::string stream =
      "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
      "event: ping\ndata: {\"type\": \"ping\"}\n\n"
      "event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n"
      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  expect_sse_at_every_split(stream, {
                                        ev("message_start", R"({"type":"message_start"})"),
                                        ev("ping", R"({"type": "ping"})"),
                                        ev("content_block_delta", R"({"delta":{"text":"Hi"}})"),
                                        ev("message_stop", R"({"type":"message_stop"})"),
                                    });
}

TEST(SseParser, DashScopeNoSpaceAfterColonAndStatusComment) {
  const std::string stream =
      "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"text\":\"a\"}}\n\n"
      "id:2\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"text\":\"b\"}}\n\n";
  expect_sse_at_every_split(stream, {ev("result", R"({"output":{"text":"a"}})", "1"),
                                     ev("result", R"({"output":{"text":"b"}})", "2")});
}

TEST(SseParser, MultiLineDataJoinedWithNewline) {
  expect_sse_at_every_split("data: line one\ndata:line two\ndata\ndata: \n\n",
                            {ev("", "line one\nline two\n\n")});
}

TEST(SseParser, OnlyOneLeadingSpaceIsStripped) {
  expect_sse_at_every_split("data:  two spaces\n\n", {ev("", " two spaces")});
}

TEST(SseParser, EventWithoutDataIsNotDispatchedAndResetsType) {
  expect_sse_at_every_split("event: orphan\n\ndata: x\n\n", {ev("", "x")});
}

TEST(SseParser, EmptyDataFieldStillDispatches) {
  expect_sse_at_every_split("data\n\n", {ev("", "")});
}

TEST(SseParser, IdPersistsAcrossEventsAndUnknownFieldsAreIgnored) {
  expect_sse_at_every_split("id: 7\nretry: 100\nfoo: bar\ndata: a\n\ndata: b\n\n",
                            {ev("", "a", "7"), ev("", "b", "7")});
}

TEST(SseParser, ColonInsideValueIsKept) {
  expect_sse_at_every_split("data: {\"url\":\"http://x\"}\n\n", {ev("", R"({"url":"http://x"})")});
}

TEST(SseParser, TrailingEventWithoutBlankLineIsPartial) {
  expect_sse_at_every_split("data: done\n\ndata: cut", {ev("", "done")}, true);
  expect_sse_at_every_split("data: done\n\ndata: cut\n", {ev("", "done")}, true);
  const auto complete = parse_sse({"data: x\n\n"});
  EXPECT_FALSE(complete.partial);
}

TEST(SseParser, LineLongerThanBoundOverflows) {
  SseParser parser(16);
  int events = 0;
  const auto count = [&](const SseEvent&) { ++events; };
  EXPECT_TRUE(parser.feed("data: short\n\n", count));
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(parser.feed("data: this line is far too long", count));
  EXPECT_TRUE(parser.overflowed());
  // Once overflowed, input is ignored and nothing more is dispatched.
  EXPECT_FALSE(parser.feed("\n\ndata: ok\n\n", count));
  EXPECT_EQ(events, 1);
  EXPECT_FALSE(parser.has_partial_event());
}

TEST(SseParser, ManyDataLinesAccumulatingPastBoundOverflow) {
  SseParser parser(32);
  int events = 0;
  bool ok = true;
  for (int i = 0; i < 20 && ok; ++i) {
    ok = parser.feed("data: 0123456\n", [&](const SseEvent&) { ++events; });
  }
  EXPECT_FALSE(ok);
  EXPECT_TRUE(parser.overflowed());
  EXPECT_EQ(events, 0);
}

TEST(SseParser, CompleteLineInOneFeedOverflowsToo) {
  SseParser parser(8);
  EXPECT_FALSE(parser.feed("data: 0123456789\n\n", [](const SseEvent&) {}));
  EXPECT_TRUE(parser.overflowed());
}

TEST(SseParser, ManyEventsInOneFeed) {
  std::string stream;
  std::vector<SseEvent> expected;
  for (int i = 0; i < 500; ++i) {
    stream += "data: " + std::to_string(i) + "\n\n";
    expected.push_back(ev("", std::to_string(i)));
  }
  EXPECT_EQ(parse_sse({stream}).events, expected);
}

// ---- NDJSON -----------------------------------------------------------------------------

std::vector<std::string> parse_ndjson(const std::vector<std::string_view>& pieces,
                                      bool finish = true) {
  NdjsonParser parser;
  std::vector<std::string> lines;
  const auto collect = [&](std::string_view line) { lines.emplace_back(line); };
  for (auto piece : pieces) parser.feed(piece, collect);
  if (finish) parser.finish(collect);
  return lines;
}

void expect_ndjson_at_every_split(std::string_view stream,
                                  const std::vector<std::string>& expected) {
  SCOPED_TRACE(std::string("stream: ") + std::string(stream));
  EXPECT_EQ(parse_ndjson({stream}), expected);
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    ASSERT_EQ(parse_ndjson({stream.substr(0, i), stream.substr(i)}), expected) << "split " << i;
  }
  for (std::size_t i = 0; i <= stream.size(); ++i) {
    for (std::size_t j = i; j <= stream.size(); ++j) {
      ASSERT_EQ(parse_ndjson({stream.substr(0, i), stream.substr(i, j - i), stream.substr(j)}),
                expected)
          << "split " << i << "," << j;
    }
  }
}

TEST(NdjsonParser, OllamaStreamAtEverySplitPoint) {
  expect_ndjson_at_every_split(
      "{\"message\":{\"content\":\"He\"},\"done\":false}\n"
      "{\"message\":{\"content\":\"y\"},\"done\":false}\n"
      "{\"done\":true,\"eval_count\":2}",
      {R"({"message":{"content":"He"},"done":false})",
       R"({"message":{"content":"y"},"done":false})", R"({"done":true,"eval_count":2})"});
}

TEST(NdjsonParser, CrLfAndBlankLines) {
  expect_ndjson_at_every_split("{\"a\":1}\r\n\r\n  \n{\"b\":2}\r\n\n",
                               {R"({"a":1})", R"({"b":2})"});
}

TEST(NdjsonParser, LastLineWithoutNewlineOnlyOnFinish) {
  EXPECT_EQ(parse_ndjson({"{\"a\":1}\n{\"b\""}, false), std::vector<std::string>{R"({"a":1})"});
  EXPECT_EQ(parse_ndjson({"{\"a\":1}\n{\"b\"", ":2}"}, true),
            (std::vector<std::string>{R"({"a":1})", R"({"b":2})"}));
}

TEST(NdjsonParser, OverflowStopsParsing) {
  NdjsonParser parser(10);
  std::vector<std::string> lines;
  const auto collect = [&](std::string_view line) { lines.emplace_back(line); };
  EXPECT_TRUE(parser.feed("{\"a\":1}\n", collect));
  EXPECT_FALSE(parser.feed("{\"long\":\"01234", collect));
  EXPECT_TRUE(parser.overflowed());
  EXPECT_FALSE(parser.feed("\n{}\n", collect));
  parser.finish(collect);
  EXPECT_EQ(lines, std::vector<std::string>{R"({"a":1})"});
  NdjsonParser whole_line(4);
  EXPECT_FALSE(whole_line.feed("0123456789\n", collect));
}

}  // namespace
}  // namespace dispatch::worker
