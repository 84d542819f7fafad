// JsonDocument must accept exactly what nlohmann::json::parse accepts and read the same values:
// hand-picked edge cases, then a seeded differential run over generated and mutated texts.

#include "json_view.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "adapter_common.hpp"

namespace dispatch::worker::detail {
namespace {

using Json = nlohmann::json;

std::string reference_dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Same verdict and, when accepted, the same value (compared as nlohmann's serialisation, which
// also tells signed from unsigned zero and integers from floats).
void expect_same_as_nlohmann(JsonDocument& document, const std::string& text) {
  const Json expected = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  const JsonValue* root = document.parse(text);
  ASSERT_EQ(root != nullptr, !expected.is_discarded()) << "text: " << text;
  if (root == nullptr) return;
  EXPECT_EQ(reference_dump(root->to_json()), reference_dump(expected)) << "text: " << text;
  EXPECT_EQ(root->to_json().type(), expected.type()) << "text: " << text;
}

TEST(JsonDocumentTest, ReadsAStreamChunkOnTheFastPath) {
  JsonDocument document;
  const std::string text =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,)"
      R"("model":"gpt-x","choices":[{"index":0,"delta":{"content":"Hel\"lo\n","tool_calls":)"
      R"([{"index":1,"id":"c","function":{"name":"f","arguments":"{\"a\":1}"}}]},)"
      R"("finish_reason":null}],"usage":{"prompt_tokens":12,"completion_tokens":-3}})";
  const JsonValue* root = document.parse(text);
  ASSERT_NE(root, nullptr);
  EXPECT_TRUE(document.last_parse_was_fast());
  EXPECT_EQ(json_string(*root, "id"), "chatcmpl-1");
  EXPECT_EQ(json_uint(*root, "created"), 1700000000u);
  const JsonValue* choices = json_array(*root, "choices");
  ASSERT_NE(choices, nullptr);
  ASSERT_EQ(choices->size(), 1u);
  const JsonValue* delta = json_object(choices->front(), "delta");
  ASSERT_NE(delta, nullptr);
  EXPECT_EQ(json_string(*delta, "content"), "Hel\"lo\n");
  const JsonValue* calls = json_array(*delta, "tool_calls");
  ASSERT_NE(calls, nullptr);
  EXPECT_EQ(json_uint((*calls)[0], "index"), 1u);
  EXPECT_EQ(json_string(*json_object((*calls)[0], "function"), "arguments"), R"({"a":1})");
  EXPECT_EQ(json_string(choices->front(), "finish_reason"), "");
  const JsonValue* usage = json_object(*root, "usage");
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(json_uint(*usage, "prompt_tokens"), 12u);
  EXPECT_EQ(json_uint(*usage, "completion_tokens"), std::nullopt);  // negative reads as absent
  EXPECT_EQ(json_object(*root, "choices"), nullptr);                // an array, not an object
  EXPECT_EQ(json_string(*root, "missing"), "");
}

TEST(JsonDocumentTest, ReadersAgreeWithTheNlohmannReaders) {
  JsonDocument document;
  const std::vector<std::string> texts = {
      R"({"a":"x","a":"y","n":1,"n":-1,"f":2.5,"g":-0.5,"b":true,"o":{"k":1},"o":[1]})",
      R"({"done":true,"args":{"z":1,"a":[1,2.0,"s",null,false]},"s":"\u00e9\ud83d\ude00"})",
      R"({"done":"true","args":"text","big":18446744073709551615,"bigger":18446744073709551616})",
      R"({"done":false,"neg":-9223372036854775808,"e":1e3,"z":-0,"fz":-0.0})",
  };
  for (const std::string& text : texts) {
    const Json expected = Json::parse(text);
    const JsonValue* root = document.parse(text);
    ASSERT_NE(root, nullptr) << text;
    for (const char* key : {"a", "n", "f", "g", "b", "o", "done", "args", "s", "big", "bigger",
                            "neg", "e", "z", "fz", "absent"}) {
      EXPECT_EQ(json_string(*root, key), json_string(expected, key)) << text << " " << key;
      EXPECT_EQ(json_uint(*root, key), json_uint(expected, key)) << text << " " << key;
      EXPECT_EQ(json_object(*root, key) != nullptr, json_object(expected, key) != nullptr)
          << text << " " << key;
      EXPECT_EQ(json_array(*root, key) != nullptr, json_array(expected, key) != nullptr)
          << text << " " << key;
      EXPECT_EQ(json_true(*root, key), json_true(expected, key)) << text << " " << key;
      EXPECT_EQ(json_text_or_dump(*root, key), json_text_or_dump(expected, key))
          << text << " " << key;
    }
  }
}

TEST(JsonDocumentTest, EdgeCasesGetNlohmannsVerdict) {
  JsonDocument document;
  const std::vector<std::string> texts = {
      "",
      " ",
      "{}",
      "[]",
      " {\"a\" : [ 1 , 2 ] } \r\n\t",
      "{\"a\":1,}",
      "[1,]",
      "[,1]",
      "{,}",
      "{\"a\"}",
      "{\"a\":}",
      "{\"a\":1 \"b\":2}",
      "{'a':1}",
      "{\"a\":1}}",
      "{\"a\":1} x",
      "{\"a\":1}\x00",
      "\xEF\xBB\xBF{\"a\":1}",
      "01",
      "-",
      "-0",
      "-01",
      "1.",
      ".5",
      "1e",
      "1e+",
      "1E-2",
      "1.5e308",
      "1e309",
      "-1e309",
      "1e-400",
      "123456789012345678901234567890",
      "-123456789012345678901",
      "9223372036854775807",
      "-9223372036854775807",
      "-9223372036854775809",
      "18446744073709551615",
      "18446744073709551616",
      "9999999999999999999",
      "tru",
      "true",
      "nul",
      "null",
      "nulll",
      "falsey",
      "\"\\u12\"",
      "\"\\uD800\"",
      "\"\\uDC00\"",
      "\"\\uD800\\u0041\"",
      "\"\\uD83D\\uDE00\"",
      "\"\\u0000\"",
      "\"\\x41\"",
      "\"tab\there\"",
      "\"\\/\\b\\f\\n\\r\\t\\\\\\\"\"",
      "\"\xC3\xA9\"",
      "\"\xC3\"",
      "\"\xC0\xAF\"",
      "\"\xED\xA0\x80\"",
      "\"\xF4\x90\x80\x80\"",
      "\"\xF0\x9F\x98\x80\"",
      "\"\xE2\x82\"",
      "\"\xFF\"",
      "\"unterminated",
      "\"a\\",
      "{\"\\u00e9\":\"x\\ny\",\"k\\\"\":\"v\"}",
      std::string(100, '[') + std::string(100, ']'),
      std::string(100, '[') + std::string(99, ']'),
  };
  for (const std::string& text : texts) expect_same_as_nlohmann(document, text);
}

// Seeded, so a failure reproduces. Texts are generated values (dumped compactly or with
// whitespace), then mutated with bytes that matter to a JSON lexer.
class Generator {
 public:
  explicit Generator(uint32_t seed) : random_(seed) {}

  Json value(int depth) {
    switch (pick(depth > 3 ? 6 : 8)) {
      case 0:
        return nullptr;
      case 1:
        return pick(2) == 0;
      case 2:
        return static_cast<uint64_t>(random_()) << pick(40);
      case 3:
        return -static_cast<int64_t>(random_() >> pick(20));
      case 4:
        return std::ldexp(static_cast<double>(random_()) / 7.0, pick(80) - 40);
      case 5:
        return text();
      case 6: {
        Json array = Json::array();
        for (int i = pick(4); i > 0; --i) array.push_back(value(depth + 1));
        return array;
      }
      default: {
        Json object = Json::object();
        for (int i = pick(5); i > 0; --i) object[text()] = value(depth + 1);
        return object;
      }
    }
  }

  std::string mutate(std::string text) {
    static const std::string kBytes = "{}[]\",:\\ u0123456789.eE+-tfnlDd\x01\x7f\xC3\xA9\xED\xF0";
    for (int i = pick(3); i > 0 && !text.empty(); --i) {
      const auto at = static_cast<std::size_t>(pick(static_cast<int>(text.size())));
      switch (pick(3)) {
        case 0:
          text.erase(at, 1);
          break;
        case 1:
          text.insert(at, 1, kBytes[static_cast<std::size_t>(pick(kBytes.size()))]);
          break;
        default:
          text[at] = kBytes[static_cast<std::size_t>(pick(kBytes.size()))];
          break;
      }
    }
    return text;
  }

  int pick(std::size_t n) { return static_cast<int>(random_() % n); }

 private:
  std::string text() {
    static const std::vector<std::string> kPieces = {"a",
                                                     "content",
                                                     "delta",
                                                     " ",
                                                     "\"",
                                                     "\\",
                                                     "/",
                                                     "\n",
                                                     "\t",
                                                     "\x01",
                                                     "\xC3\xA9",
                                                     "\xE4\xB8\xAD",
                                                     "\xF0\x9F\x98\x80",
                                                     "id",
                                                     "0"};
    std::string out;
    for (int i = pick(5); i > 0; --i)
      out += kPieces[static_cast<std::size_t>(pick(kPieces.size()))];
    return out;
  }

  std::mt19937 random_;
};

TEST(JsonDocumentTest, DifferentialAgainstNlohmann) {
  JsonDocument document;
  Generator generate(20261127);
  int fast = 0;
  constexpr int kRounds = 20000;
  for (int round = 0; round < kRounds; ++round) {
    const Json value = generate.value(0);
    std::string text = generate.pick(2) == 0 ? value.dump() : value.dump(generate.pick(3));
    // Escaped non-ASCII as well as raw UTF-8.
    if (generate.pick(4) == 0) text = value.dump(-1, ' ', /*ensure_ascii=*/true);
    if (round % 2 == 1) text = generate.mutate(std::move(text));
    expect_same_as_nlohmann(document, text);
    if (document.last_parse_was_fast()) ++fast;
    if (::testing::Test::HasFailure()) break;
  }
  // Most texts must take the fast path, or the document would be no faster than nlohmann.
  EXPECT_GT(fast, kRounds / 3);
}

TEST(JsonDocumentTest, NestingUpToTheBoundIsReadWithoutRecursion) {
  // Beyond the fast parser's depth: nlohmann decides, and the conversion must not recurse.
  const std::string text = "{\"id\":\"x\",\"deep\":" + std::string(kMaxJsonDepth - 1, '[') +
                           std::string(kMaxJsonDepth - 1, ']') + "}";
  JsonDocument document;
  const JsonValue* root = document.parse(text);
  ASSERT_NE(root, nullptr);
  EXPECT_FALSE(document.last_parse_was_fast());
  EXPECT_EQ(json_string(*root, "id"), "x");
  ASSERT_NE(json_array(*root, "deep"), nullptr);
  EXPECT_EQ(json_array(*root, "deep")->size(), 1u);
  EXPECT_EQ(document.parse(std::string(kMaxJsonDepth, '[')), nullptr);
}

// Deeper nesting is refused: converting (dump, to_json) is recursive, and 100,000 levels — 200 KB
// from a provider — overflowed the worker's stack (found with the fuzz harnesses' inputs).
TEST(JsonDocumentTest, NestingBeyondTheBoundIsRefused) {
  constexpr std::size_t kDepth = 100000;
  JsonDocument document;
  const std::string deep = std::string(kDepth, '[') + std::string(kDepth, ']');
  EXPECT_EQ(document.parse(deep), nullptr);
  EXPECT_EQ(document.parse("{\"id\":\"x\",\"deep\":" + deep + "}"), nullptr);
  EXPECT_EQ(
      document.parse(std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']')),
      nullptr);
  EXPECT_NE(document.parse("[\"" + std::string(kDepth, '[') + "\"]"), nullptr)
      << "brackets inside a string are text";
}

TEST(JsonDocumentTest, ReusedDocumentKeepsEarlierStringsValidWithinOneParse) {
  JsonDocument document;
  for (int round = 0; round < 3; ++round) {
    const std::string text = "{\"a\":\"x\\ty\",\"b\":\"\\u00e9\",\"c\":\"plain\",\"d\":\"\\n" +
                             std::string(static_cast<std::size_t>(round) * 500, 'z') + "\"}";
    const JsonValue* root = document.parse(text);
    ASSERT_NE(root, nullptr);
    EXPECT_EQ(json_string(*root, "a"), "x\ty");
    EXPECT_EQ(json_string(*root, "b"), "\xC3\xA9");
    EXPECT_EQ(json_string(*root, "c"), "plain");
    EXPECT_EQ(json_string(*root, "d").size(), 1u + static_cast<std::size_t>(round) * 500);
  }
}

}  // namespace
}  // namespace dispatch::worker::detail
