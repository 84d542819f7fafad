#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "dispatch/common/fd.hpp"
#include "dispatch/common/json_depth.hpp"
#include "dispatch/common/random.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/common/time.hpp"

namespace dispatch {
namespace {

struct Problem {
  int code = 0;
  std::string why;
};

Result<int, Problem> parse_digit(char c) {
  if (c < '0' || c > '9') return Problem{1, std::string("not a digit: ") + c};
  return c - '0';
}

Result<void, Problem> check_even(int n) {
  if (n % 2 != 0) return Problem{2, "odd"};
  return {};
}

TEST(Result, CarriesValueOrError) {
  auto ok = parse_digit('7');
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 7);
  EXPECT_EQ(ok.value(), 7);
  EXPECT_EQ(ok.value_or(-1), 7);

  auto bad = parse_digit('x');
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, 1);
  EXPECT_EQ(bad.error().why, "not a digit: x");
  EXPECT_EQ(bad.value_or(-1), -1);
}

TEST(Result, SameTypeOnBothSidesNeedsFail) {
  auto read = [](bool good) -> Result<std::string, std::string> {
    if (!good) return fail(std::string("cannot read"));
    return std::string("content");
  };
  EXPECT_EQ(*read(true), "content");
  ASSERT_FALSE(read(false));
  EXPECT_EQ(read(false).error(), "cannot read");
}

TEST(Result, VoidIsOkOrTheReason) {
  EXPECT_TRUE(check_even(4));
  auto odd = check_even(3);
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().why, "odd");
}

TEST(Result, MovesOutTheValue) {
  Result<std::vector<int>, Problem> r(std::vector<int>{1, 2, 3});
  std::vector<int> taken = std::move(r).value();
  EXPECT_EQ(taken.size(), 3u);
}

TEST(Strings, CaseAndSpace) {
  EXPECT_EQ(to_lower("Content-TYPE"), "content-type");
  EXPECT_TRUE(iequals("Retry-After", "retry-after"));
  EXPECT_FALSE(iequals("Retry-After", "retry-afte"));
  EXPECT_TRUE(istarts_with("Bearer abc", "bearer "));
  EXPECT_FALSE(istarts_with("Bear", "bearer"));
  EXPECT_TRUE(icontains("Context Length Exceeded", "length"));
  EXPECT_TRUE(icontains("anything", ""));
  EXPECT_EQ(trim(" \t value \r\n"), "value");
  EXPECT_EQ(trim("   "), "");
}

TEST(Strings, ClipAndPrintable) {
  EXPECT_EQ(clip("abcdef", 3), "abc");
  EXPECT_EQ(clip("ab", 3), "ab");
  EXPECT_EQ(clip_marked("abcdef", 3), "abc...");
  EXPECT_EQ(clip_marked("abc", 3), "abc");
  EXPECT_EQ(printable(std::string("a\x01\xffz", 4)), "a??z");
  EXPECT_EQ(printable("abcdef", 2), "ab...");
  EXPECT_EQ(to_hex(std::string("\x00\xab\x10", 3)), "00ab10");
}

TEST(Time, WholeMillisecondsNeverNegative) {
  using namespace std::chrono;
  EXPECT_EQ(to_ms(microseconds(2500)), 2u);
  EXPECT_EQ(to_ms(milliseconds(-5)), 0u);
  const steady_clock::time_point t0{};
  EXPECT_EQ(ms_between(t0, t0 + seconds(2)), 2000u);
  EXPECT_EQ(ms_between(t0 + seconds(2), t0), 0u);
}

TEST(UniqueFd, ClosesWhatItOwns) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    UniqueFd read_end(fds[0]);
    UniqueFd moved = std::move(read_end);
    EXPECT_FALSE(read_end.valid());
    EXPECT_EQ(moved.get(), fds[0]);
  }
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1);  // closed by the moved-to owner
  UniqueFd write_end(fds[1]);
  const int raw = write_end.release();
  EXPECT_FALSE(write_end.valid());
  EXPECT_NE(::fcntl(raw, F_GETFD), -1);  // release() did not close it
  ::close(raw);
}

TEST(WakeupFd, CountsSignalsUntilDrained) {
  WakeupFd wake;
  EXPECT_EQ(wake.drain(), 0u);
  wake.signal();
  wake.signal();
  EXPECT_EQ(wake.drain(), 2u);
  EXPECT_EQ(wake.drain(), 0u);
}

TEST(SecureRandom, HexIdsAre128BitsAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = random_hex_id();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_NE(secure_random_seed(), secure_random_seed());
}

TEST(JsonDepth, CountsNestingOutsideStrings) {
  EXPECT_TRUE(json_depth_within("", 0));
  EXPECT_TRUE(json_depth_within("{\"a\":[1]}", 2));
  EXPECT_FALSE(json_depth_within("{\"a\":[1]}", 1));
  EXPECT_TRUE(json_depth_within(R"(["[[[", "\"[[", {}])", 2));
  EXPECT_FALSE(json_depth_within(R"(["\\", [[]]])", 2)) << "an escaped backslash ends the escape";
  EXPECT_TRUE(json_depth_within("]]]][", 1)) << "not JSON: only the count matters";
}

TEST(JsonDepth, BoundIsTheSharedConstant) {
  EXPECT_TRUE(json_depth_within(std::string(kMaxJsonDepth, '[')));
  EXPECT_FALSE(json_depth_within(std::string(kMaxJsonDepth + 1, '{')));
}

}  // namespace
}  // namespace dispatch
