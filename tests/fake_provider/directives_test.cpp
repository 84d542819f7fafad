// Unit tests of directive parsing.

#include "dispatch/fake_provider/directives.hpp"

#include <gtest/gtest.h>

namespace dispatch::fake_provider {
namespace {

Directives parsed(std::string_view model, std::string_view header = {}) {
  auto result = parse_directives(model, header);
  EXPECT_TRUE(std::holds_alternative<Directives>(result))
      << std::get_if<std::string>(&result)->c_str();
  return std::holds_alternative<Directives>(result) ? std::get<Directives>(result) : Directives{};
}

std::string problem(std::string_view model, std::string_view header = {}) {
  auto result = parse_directives(model, header);
  return std::holds_alternative<std::string>(result) ? std::get<std::string>(result) : "";
}

TEST(Directives, PlainModelHasNone) {
  const Directives d = parsed("gpt-4o");
  EXPECT_EQ(d.base_model, "gpt-4o");
  EXPECT_FALSE(d.latency_ms);
  EXPECT_FALSE(d.reset);
}

TEST(Directives, ValuesAndFlagsFromTheModel) {
  const Directives d = parsed("gpt-4o~latency_ms=200~tokens=20~reset~no_terminator");
  EXPECT_EQ(d.base_model, "gpt-4o");
  EXPECT_EQ(d.latency_ms, 200);
  EXPECT_EQ(d.tokens, 20);
  EXPECT_TRUE(d.reset);
  EXPECT_TRUE(d.no_terminator);
}

TEST(Directives, HeaderAddsAndOverrides) {
  const Directives d = parsed("m~tokens=3~status=429", "tokens=5~retry_after=1");
  EXPECT_EQ(d.tokens, 5);
  EXPECT_EQ(d.status, 429);
  EXPECT_EQ(d.retry_after_s, 1);
}

TEST(Directives, ModelNamesWithSlashesAndColonsSurvive) {
  EXPECT_EQ(parsed("org/model:latest~tokens=1").base_model, "org/model:latest");
}

TEST(Directives, AllNamesAreKnown) {
  const Directives d = parsed(
      "m~latency_ms=1~first_token_ms=2~chunk_delay_ms=3~tokens=4~status=503~fail_first=2~"
      "retry_after=5~retry_after_ms=6~retry_after_date~context_length~content_filter~flap=7~"
      "hang~cut_after=8~stall_after=9~malformed_at=10~error_mid_stream=11");
  EXPECT_EQ(d.first_token_ms, 2);
  EXPECT_EQ(d.chunk_delay_ms, 3);
  EXPECT_EQ(d.fail_first, 2);
  EXPECT_EQ(d.retry_after_ms, 6);
  EXPECT_TRUE(d.retry_after_date);
  EXPECT_TRUE(d.context_length);
  EXPECT_TRUE(d.content_filter);
  EXPECT_EQ(d.flap_ms, 7);
  EXPECT_TRUE(d.hang);
  EXPECT_EQ(d.cut_after, 8);
  EXPECT_EQ(d.stall_after, 9);
  EXPECT_EQ(d.malformed_at, 10);
  EXPECT_EQ(d.error_mid_stream, 11);
}

TEST(Directives, BadInputIsReported) {
  EXPECT_NE(problem("m~nonsense"), "");
  EXPECT_NE(problem("m~tokens"), "");          // needs a value
  EXPECT_NE(problem("m~tokens=abc"), "");      // not a number
  EXPECT_NE(problem("m~status=200"), "");      // not an error status
  EXPECT_NE(problem("m~reset=1"), "");         // a flag takes no value
  EXPECT_NE(problem("m~latency_ms=-5"), "");   // negative
  EXPECT_NE(problem("m", "bogus=1"), "");      // from the header too
  EXPECT_NE(problem("m~malformed_at=0"), "");  // events count from 1
}

}  // namespace
}  // namespace dispatch::fake_provider
