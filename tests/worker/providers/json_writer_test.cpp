// The request-body writer writes what nlohmann's dump (the DOM the adapters used before) writes
// for the same value, byte for byte: escapes, U+FFFD for invalid UTF-8, numbers.

#include "json_writer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

namespace dispatch::worker::detail {
namespace {

using Json = nlohmann::json;

std::string reference(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string written_string(std::string_view text) {
  JsonWriter out;
  out.value(text);
  return out.take();
}

TEST(JsonWriter, StringsAreEscapedAsNlohmannDoes) {
  const std::string cases[] = {"",
                               "plain",
                               "quote \" and \\ backslash",
                               "\b\f\n\r\t",
                               "\x01\x1f\x7f",
                               "caf\xC3\xA9",
                               "\xE4\xB8\xAD\xF0\x9F\x98\x80",
                               "\xFF",
                               "a\xC3",
                               "\xC3(",
                               "\xE2\x82",
                               "\xED\xA0\x80",
                               "\xF4\x90\x80\x80",
                               "\xC0\xAF",
                               "\xE0\x80\xAF x",
                               std::string("nul\0byte", 8)};
  for (const std::string& text : cases) {
    EXPECT_EQ(written_string(text), reference(Json(text))) << "text of " << text.size() << " bytes";
    EXPECT_EQ(json_escaped_size(text) + 2, reference(Json(text)).size());
  }
}

TEST(JsonWriter, RandomBytesAreEscapedAsNlohmannDoes) {
  std::mt19937 random(20261128);
  const unsigned char interesting[] = {0x00, 0x1f, 0x20, '"',  '\\', 'a',  0x7f, 0x80, 0xbf, 0xc2,
                                       0xc3, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x9f};
  for (int round = 0; round < 20000; ++round) {
    std::string text;
    const int length = static_cast<int>(random() % 12);
    for (int i = 0; i < length; ++i) {
      text.push_back(static_cast<char>(interesting[random() % sizeof interesting]));
    }
    ASSERT_EQ(written_string(text), reference(Json(text))) << "round " << round;
    ASSERT_EQ(json_escaped_size(text) + 2, reference(Json(text)).size()) << "round " << round;
  }
}

TEST(JsonWriter, NumbersAreWrittenAsNlohmannDoes) {
  for (double number : {0.0, 1.0, 0.7, 1.99, 2.0, -0.5, 1e-7, 1e21, 123456789.125, 0.1 + 0.2}) {
    JsonWriter out;
    out.value(number);
    EXPECT_EQ(out.take(), reference(Json(number))) << number;
  }
  JsonWriter nan;
  nan.value(std::nan(""));
  EXPECT_EQ(nan.take(), "null");
  JsonWriter infinite;
  infinite.value(std::numeric_limits<double>::infinity());
  EXPECT_EQ(infinite.take(), "null");
  JsonWriter integers;
  integers.begin_array().value(uint32_t{4096}).value(std::size_t{0}).value(uint64_t{1} << 63);
  integers.end_array();
  EXPECT_EQ(integers.take(), "[4096,0,9223372036854775808]");
}

TEST(JsonWriter, ContainersMembersAndRawValues) {
  JsonWriter out(64);
  out.begin_object().member("model", "m").key("messages").begin_array();
  out.begin_object().member("role", "user").member("content", std::string("hi")).end_object();
  out.begin_object().member("role", "tool").end_object();
  out.end_array().member("stream", true).key("options").begin_object().end_object();
  out.key("schema").raw(R"({"type":"object"})").key("none").null().end_object();
  const std::string text = out.take();
  EXPECT_EQ(text, R"({"model":"m","messages":[{"role":"user","content":"hi"},{"role":"tool"}],)"
                  R"("stream":true,"options":{},"schema":{"type":"object"},"none":null})");
  EXPECT_FALSE(Json::parse(text).is_discarded());
}

TEST(JsonWriter, ReservesItsCapacityOnce) {
  JsonWriter out(1024);
  const char* before = out.text().data();
  out.begin_array();
  for (int i = 0; i < 100; ++i) out.value("abcdefg");
  out.end_array();
  EXPECT_EQ(out.text().data(), before);
  EXPECT_EQ(out.text().size(), 2u + 100u * 9u + 99u);  // brackets, strings, commas
}

}  // namespace
}  // namespace dispatch::worker::detail
