// Untrusted bytes: truncation, declared-huge sizes, deep nesting, garbage, and a seeded fuzz loop.
// None of it may crash, throw, hang or allocate what the input merely declares.

#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "alloc_tracker.hpp"
#include "golden_values.hpp"
#include "test_util.hpp"

namespace dispatch::protocol {
namespace {

using testing::AllocScope;
using testing::golden_cases;
using testing::lit;
using Code = DecodeError::Code;

// Decodes `bytes` as every top-level type; returns how many accepted it.
int decode_as_everything(std::string_view bytes) {
  int ok = 0;
  ok += decode<Request>(bytes).ok();
  ok += decode<Response>(bytes).ok();
  ok += decode<Error>(bytes).ok();
  ok += decode<Submit>(bytes).ok();
  ok += decode<Accepted>(bytes).ok();
  ok += decode<Rejected>(bytes).ok();
  ok += decode<Cancel>(bytes).ok();
  ok += decode<JobHeader>(bytes).ok();
  ok += decode<JobEnd>(bytes).ok();
  ok += decode<ChunkHeader>(bytes).ok();
  ok += decode<ResetHeader>(bytes).ok();
  ok += decode<Ready>(bytes).ok();
  ok += decode<Credit>(bytes).ok();
  ok += decode<Heartbeat>(bytes).ok();
  ok += decode<Disconnect>(bytes).ok();
  ok += decode<StatusReply>(bytes).ok();
  return ok;
}

// What was decoded must survive another trip unchanged (the fuzz loop's oracle).
template <class T>
void check_stable(std::string_view bytes, uint64_t iteration) {
  auto first = decode<T>(bytes);
  if (!first) return;
  const std::string again = encode(first.value());
  auto second = decode<T>(again);
  // The decoding memory bound is relative to the input's size: a value read from a wasteful
  // encoding may be refused in the shortest one. That is the bound at work, not a bug.
  if (!second && again.size() < bytes.size() &&
      second.error().message.find("decoded size would exceed") != std::string::npos) {
    return;
  }
  ASSERT_TRUE(second) << "iteration " << iteration << ": " << second.error().message;
  ASSERT_TRUE(second.value() == first.value()) << "iteration " << iteration;
}

TEST(Hostile, PreScanDoesNotAllocateOnValidInput) {
  for (const auto& c : golden_cases()) {
    AllocScope scope;
    const bool ok = !validate_msgpack(c.bytes).has_value();
    const auto stats = scope.stats();
    EXPECT_TRUE(ok) << c.name;
    EXPECT_EQ(stats.count, 0u) << c.name;
  }
}

TEST(Hostile, TruncatedAtEveryByteOfEveryGoldenVector) {
  for (const auto& c : golden_cases()) {
    for (std::size_t length = 0; length < c.bytes.size(); ++length) {
      const std::string_view prefix(c.bytes.data(), length);
      const auto error = validate_msgpack(prefix);
      ASSERT_TRUE(error.has_value()) << c.name << " cut at " << length;
      EXPECT_EQ(error->code, Code::malformed);
      EXPECT_NE(c.check_decode(prefix), "") << c.name << " cut at " << length;
    }
  }
}

TEST(Hostile, DeclaredHugeSizesAreRejectedWithoutAllocating) {
  struct Case {
    const char* what;
    std::string bytes;
  };
  const std::vector<Case> cases = {
      {"array32 of 4G", lit("\xdd\xff\xff\xff\xff")},
      {"map32 of 4G", lit("\xdf\xff\xff\xff\xff")},
      {"str32 of 4G", lit("\xdb\xff\xff\xff\xff")},
      {"bin32 of 4G", lit("\xc6\xff\xff\xff\xff")},
      {"ext32 of 4G", lit("\xc9\xff\xff\xff\xff\x01")},
      {"array16 of 64K", lit("\xdc\xff\xff\x00\x00")},
      {"map16 of 64K", lit("\xde\xff\xff\x00\x00")},
      {"str32 just over the limit", lit("\xdb\x01\x00\x00\x01")},
      {"array in a map value", lit("\x81\xa1x\xdd\x7f\xff\xff\xff")},
      {"within limits but not the bytes", lit("\x81\xa8messages\xdc\x03\xe8\xc0")},
      {"nested declarations outgrow the input",
       lit("\x92\x9f\xc0\xc0\xc0\x9f\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0")},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto start = std::chrono::steady_clock::now();
    testing::AllocStats stats;
    {
      AllocScope scope;
      auto request = decode<Request>(c.bytes);
      stats = scope.stats();
      ASSERT_FALSE(request);
      EXPECT_EQ(request.error().code, Code::malformed) << request.error().message;
    }
    EXPECT_LT(stats.largest, 1024u);  // the error message, nothing the input declared
    EXPECT_LT(stats.bytes, 4096u);
    EXPECT_EQ(decode_as_everything(c.bytes), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  }
}

TEST(Hostile, CountsOverTheLimitsAreRejectedEvenWhenTheBytesAreThere) {
  // An array of max_array + 1 nils, present in full.
  std::string over = lit("\xdd");
  const uint32_t n = Limits::max_array + 1;
  for (int shift = 24; shift >= 0; shift -= 8) over.push_back(static_cast<char>(n >> shift));
  over.append(n, '\xc0');
  auto error = validate_msgpack(over);
  ASSERT_TRUE(error);
  EXPECT_NE(error->message.find("limit"), std::string::npos) << error->message;

  // Exactly at the limit, inside an unknown field: accepted and ignored.
  std::string at_limit = lit("\x82\xa6job_id\xa1j\xa7padding\xdd");
  const uint32_t m = Limits::max_array;
  for (int shift = 24; shift >= 0; shift -= 8) at_limit.push_back(static_cast<char>(m >> shift));
  at_limit.append(m, '\xc0');
  auto cancel = decode<Cancel>(at_limit);
  ASSERT_TRUE(cancel) << cancel.error().message;
  EXPECT_EQ(cancel.value().job_id, "j");
}

TEST(Hostile, DeepNesting) {
  for (const unsigned char opener : {0x91, 0x81}) {  // [[[...]]] and {"k": {"k": ...}}
    std::string deep;
    for (int i = 0; i < 1000; ++i) {
      deep.push_back(static_cast<char>(opener));
      if (opener == 0x81) deep.append("\xa1k");
    }
    deep.push_back('\xc0');
    const auto start = std::chrono::steady_clock::now();
    auto error = validate_msgpack(deep);
    ASSERT_TRUE(error);
    EXPECT_NE(error->message.find("nesting deeper than 16"), std::string::npos) << error->message;
    EXPECT_EQ(decode_as_everything(deep), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  }
  // Depth 16 is allowed (top-level map + 15 levels in an unknown field), 17 is not.
  auto nested = [](int levels) {
    std::string s = lit("\x82\xa6job_id\xa1j\xa1x");
    for (int i = 0; i < levels; ++i) s.push_back('\x91');
    s.push_back('\xc0');
    return s;
  };
  EXPECT_TRUE(decode<Cancel>(nested(15)));
  auto too_deep = decode<Cancel>(nested(16));
  ASSERT_FALSE(too_deep);
  EXPECT_EQ(too_deep.error().code, Code::malformed);
}

TEST(Hostile, StructuralErrors) {
  const std::string good = testing::mp({{"job_id", "j"}});
  struct Case {
    const char* what;
    std::string bytes;
    const char* message_part;
  };
  const std::vector<Case> cases = {
      {"empty", "", "empty"},
      {"trailing byte", good + "\xc0", "trailing"},
      {"two values", good + good, "trailing"},
      {"reserved 0xc1", lit("\x81\xa1k\xc1"), "reserved byte 0xc1"},
      {"reserved alone", "\xc1", "reserved"},
      {"truncated length field", lit("\xda\x00"), "truncated"},
      {"truncated float", lit("\xcb\x00\x00"), "needs 8 bytes"},
      {"truncated fixext", lit("\xd8\x01\x00"), "needs 17 bytes"},
      {"map missing a value", lit("\x81\xa1k"), "truncated"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto error = validate_msgpack(c.bytes);
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code, Code::malformed);
    EXPECT_NE(error->message.find(c.message_part), std::string::npos) << error->message;
    EXPECT_EQ(decode_as_everything(c.bytes), 0);
  }
  // Every type a msgpack peer can send is structurally fine in an unknown field.
  const std::string all_types =
      lit("\x82\xa6job_id\xa1j\xa1x\x9f"
          "\xc0\xc2\xc3\x05\xe0\xcc\xff\xd0\x80\xca\x3f\x80\x00\x00\xc4\x01\x00\xc7\x01\x05\x00"
          "\xd4\x05\x00\xd9\x01z\x80\x90\xcf\x00\x00\x00\x00\x00\x00\x00\x01");
  auto all = decode<Cancel>(all_types);
  ASSERT_TRUE(all) << all.error().message;
}

TEST(Hostile, OversizedMessage) {
  const std::string huge(Limits::max_message_bytes + 1, '\xc0');
  AllocScope scope;
  auto error = validate_msgpack(huge);
  const auto stats = scope.stats();
  ASSERT_TRUE(error);
  EXPECT_NE(error->message.find("exceeds the limit"), std::string::npos);
  EXPECT_LT(stats.largest, 1024u);  // only the message
}

// Seeded, so a failure reproduces; bounded in count and in time.
TEST(Hostile, SeededFuzzLoop) {
  const auto cases = golden_cases();
  std::mt19937_64 rng(0x11D15EED);
  constexpr uint64_t kIterations = 200'000;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  static constexpr unsigned char kInteresting[] = {0xc1, 0xdd, 0xdf, 0xdb, 0xc6, 0xc9, 0xdc,
                                                   0xde, 0xd9, 0xff, 0x00, 0x7f, 0x80, 0x8f,
                                                   0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xcb};
  uint64_t accepted = 0;
  uint64_t done = 0;
  std::string input;
  for (uint64_t i = 0; i < kIterations; ++i, ++done) {
    if ((i & 1023) == 0 && std::chrono::steady_clock::now() > deadline) break;
    const uint64_t mode = rng() % 4;
    if (mode == 0) {
      input.resize(rng() % 48);
      for (auto& ch : input) ch = static_cast<char>(rng());
    } else {
      input = cases[rng() % cases.size()].bytes;
      const int mutations = 1 + static_cast<int>(rng() % 4);
      for (int m = 0; m < mutations && !input.empty(); ++m) {
        const std::size_t at = rng() % input.size();
        switch (rng() % 7) {
          case 0:
            input[at] = static_cast<char>(input[at] ^ (1u << (rng() % 8)));
            break;
          case 1:
            input[at] = static_cast<char>(rng());
            break;
          case 2:
            input[at] = static_cast<char>(kInteresting[rng() % sizeof(kInteresting)]);
            break;
          case 3:
            input.resize(at);
            break;
          case 4:
            input.insert(at, 1 + rng() % 4, static_cast<char>(rng()));
            break;
          case 5:
            input.erase(at, 1 + rng() % 8);
            break;
          case 6: {
            const std::size_t length = 1 + rng() % 16;
            input.insert(at, input.substr(rng() % input.size(), length));
            break;
          }
        }
      }
    }
    (void)validate_msgpack(input);
    switch (i % 8) {
      case 0:
        check_stable<Request>(input, i);
        break;
      case 1:
        check_stable<Response>(input, i);
        break;
      case 2:
        check_stable<Error>(input, i);
        break;
      case 3:
        check_stable<ChunkHeader>(input, i);
        break;
      case 4:
        check_stable<StatusReply>(input, i);
        break;
      case 5:
        check_stable<Submit>(input, i);
        break;
      case 6:
        check_stable<Ready>(input, i);
        break;
      default:
        accepted += decode_as_everything(input) > 0;
        break;
    }
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GE(done, 20'000u) << "the loop ran out of time far too early";
  std::cout << "fuzz loop: " << done << " inputs, " << accepted
            << " of the every-type checks decoded as something\n";
}

}  // namespace
}  // namespace dispatch::protocol
