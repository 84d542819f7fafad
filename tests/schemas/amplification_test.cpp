// Decode amplification: whatever the input, decoding one message may take at most
// Limits::decode_ratio times its size plus Limits::decode_slack bytes of memory (PROTOCOL.md,
// Limits). Each message type gets the payloads that cost the most per input byte — an
// all-optional struct repeated in an array (1 byte of input, a whole struct of memory), arrays of
// empty strings or small ints, and values under an unknown key (which a decoder that builds an
// object tree first pays for in full) — and the peak of what decoding allocated is measured.

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "alloc_tracker.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::protocol {
namespace {

using testing::AllocScope;
using Code = DecodeError::Code;

constexpr std::size_t kTargetBytes = 1u << 20;  // size of most hostile payloads below

// Hand-written msgpack, so that a test can write what no encoder would.
class Mp {
 public:
  Mp& map(uint32_t pairs) { return head(0x80, 0xde, pairs, 15); }
  Mp& array(uint32_t items) { return head(0x90, 0xdc, items, 15); }
  Mp& str(std::string_view text) {
    if (text.size() < 32) {
      out_.push_back(static_cast<char>(0xa0 | text.size()));
    } else {
      out_.push_back('\xdb');
      be(text.size(), 4);
    }
    out_ += text;
    return *this;
  }
  Mp& uint(uint64_t value) {
    if (value < 128) {
      out_.push_back(static_cast<char>(value));
    } else {
      out_.push_back('\xcf');
      be(value, 8);
    }
    return *this;
  }
  Mp& nil() { return raw("\xc0"); }
  Mp& raw(std::string_view bytes) {
    out_ += bytes;
    return *this;
  }
  Mp& repeat(std::size_t times, const std::function<void(Mp&)>& element) {
    for (std::size_t i = 0; i < times; ++i) element(*this);
    return *this;
  }
  std::string take() { return std::move(out_); }

 private:
  Mp& head(unsigned fix, unsigned wide, uint32_t n, uint32_t fix_max) {
    if (n <= fix_max) {
      out_.push_back(static_cast<char>(fix | n));
    } else {
      out_.push_back(static_cast<char>(wide + 1));  // the 32-bit length form
      be(n, 4);
    }
    return *this;
  }
  void be(uint64_t value, int bytes) {
    for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
      out_.push_back(static_cast<char>(value >> shift));
    }
  }
  std::string out_;
};

// Arrays of `count` copies of `element`, as many as fit in `bytes` of input (at least one).
void arrays_of(Mp& m, std::size_t bytes, std::size_t element_bytes,
               const std::function<void(Mp&)>& element) {
  const std::size_t per_array = Limits::max_array;
  const std::size_t arrays = std::max<std::size_t>(1, bytes / (per_array * element_bytes));
  m.array(static_cast<uint32_t>(arrays)).repeat(arrays, [&](Mp& a) {
    a.array(static_cast<uint32_t>(per_array)).repeat(per_array, element);
  });
}

// `required` (a map body of `pairs` key/value pairs) plus one unknown key holding about `bytes`
// of nils in nested arrays: nothing a decoder needs, everything an object tree would hold.
std::string with_unknown_nils(uint32_t pairs, const std::function<void(Mp&)>& required,
                              std::size_t bytes = kTargetBytes) {
  Mp m;
  m.map(pairs + 1);
  required(m);
  m.str("x");
  arrays_of(m, bytes, 1, [](Mp& e) { e.nil(); });
  return m.take();
}

struct Case {
  std::string name;
  std::string bytes;
  // Decodes the bytes as the case's type; returns the error, if any.
  std::function<std::optional<DecodeError>(std::string_view)> decode;
};

template <class T>
Case make_case(std::string name, std::string bytes) {
  return Case{std::move(name), std::move(bytes), [](std::string_view b) {
                auto decoded = decode<T>(b);
                return decoded ? std::nullopt : std::optional<DecodeError>(decoded.error());
              }};
}

auto job_id = [](Mp& m) { m.str("job_id").str("j"); };
auto provider_model = [](Mp& m) { m.str("provider").str("p").str("model").str("m"); };

std::vector<Case> request_cases() {
  std::vector<Case> cases;
  {  // Messages of 100,000 empty tool calls each: 1 byte of input, three strings of memory.
    Mp m;
    m.map(3);
    provider_model(m);
    m.str("messages");
    const std::size_t messages = kTargetBytes / Limits::max_array;
    m.array(static_cast<uint32_t>(messages)).repeat(messages, [](Mp& message) {
      message.map(2).str("role").str("u").str("tool_calls").array(Limits::max_array);
      message.repeat(Limits::max_array, [](Mp& call) { call.map(0); });
    });
    cases.push_back(make_case<Request>("Request messages[].tool_calls of {}", m.take()));
  }
  {  // The smallest valid message, repeated.
    Mp m;
    m.map(3);
    provider_model(m);
    m.str("messages").array(Limits::max_array).repeat(Limits::max_array, [](Mp& message) {
      message.map(1).str("role").str("u");
    });
    cases.push_back(make_case<Request>("Request messages of {role}", m.take()));
  }
  {  // Empty strings: 1 byte each, a std::string each.
    Mp m;
    m.map(4);
    provider_model(m);
    m.str("messages").array(1).map(1).str("role").str("u");
    m.str("stop").array(Limits::max_array).repeat(Limits::max_array, [](Mp& s) { s.str(""); });
    cases.push_back(make_case<Request>("Request stop of empty strings", m.take()));
  }
  {
    Mp m;
    m.map(4);
    provider_model(m);
    m.str("messages").array(1).map(1).str("role").str("u");
    m.str("metadata").map(static_cast<uint32_t>(Limits::max_map));
    for (std::size_t i = 0; i < Limits::max_map; ++i) m.str(std::to_string(i)).str("");
    cases.push_back(make_case<Request>("Request metadata of short pairs", m.take()));
  }
  {
    Mp m;
    m.map(5);
    provider_model(m);
    m.str("messages").array(1).map(1).str("role").str("u");
    m.str("tools").array(Limits::max_array).repeat(Limits::max_array, [](Mp& tool) {
      tool.map(1).str("name").str("n");
    });
    m.str("fallbacks").array(Limits::max_array).repeat(Limits::max_array, [](Mp& target) {
      target.map(2).str("provider").str("p").str("model").str("m");
    });
    cases.push_back(make_case<Request>("Request tools and fallbacks", m.take()));
  }
  cases.push_back(make_case<Request>("Request unknown key", with_unknown_nils(3, [](Mp& m) {
                                       provider_model(m);
                                       m.str("messages").array(1).map(1).str("role").str("u");
                                     })));
  return cases;
}

std::vector<Case> result_cases() {
  std::vector<Case> cases;
  {
    Mp m;
    m.map(4);
    provider_model(m);
    m.str("tool_calls").array(Limits::max_array).repeat(Limits::max_array, [](Mp& c) { c.map(0); });
    m.str("attempts").array(Limits::max_array).repeat(Limits::max_array, [](Mp& a) {
      a.map(3).str("provider").str("").str("model").str("").str("outcome").str("");
    });
    cases.push_back(make_case<Response>("Response tool_calls and attempts", m.take()));
  }
  cases.push_back(make_case<Response>("Response unknown key",
                                      with_unknown_nils(2, [](Mp& m) { provider_model(m); })));
  {
    Mp m;
    m.map(2).str("kind").str("internal");
    m.str("attempts").array(Limits::max_array).repeat(Limits::max_array, [](Mp& a) {
      a.map(3).str("provider").str("").str("model").str("").str("outcome").str("");
    });
    cases.push_back(make_case<Error>("Error attempts", m.take()));
  }
  cases.push_back(make_case<Error>(
      "Error unknown key", with_unknown_nils(1, [](Mp& m) { m.str("kind").str("internal"); })));
  return cases;
}

std::vector<Case> stream_cases() {
  std::vector<Case> cases;
  {
    Mp m;
    m.map(3);
    job_id(m);
    m.str("seq").uint(0);
    m.str("tool_calls").array(Limits::max_array).repeat(Limits::max_array, [](Mp& d) {
      d.map(1).str("index").uint(0);
    });
    const std::string bytes = m.take();
    cases.push_back(make_case<ChunkHeader>("ChunkHeader tool_calls of {index}", bytes));
    cases.push_back(make_case<Chunk>("Chunk tool_calls of {index}", bytes));
  }
  const auto chunk = [](Mp& m) {
    job_id(m);
    m.str("seq").uint(0);
  };
  cases.push_back(make_case<ChunkHeader>("ChunkHeader unknown key", with_unknown_nils(2, chunk)));
  const auto reset = [](Mp& m) {
    job_id(m);
    m.str("next_seq").uint(0);
  };
  cases.push_back(make_case<ResetHeader>("ResetHeader unknown key", with_unknown_nils(2, reset)));
  cases.push_back(make_case<StreamReset>("StreamReset unknown key", with_unknown_nils(2, reset)));
  return cases;
}

std::vector<Case> control_cases() {
  std::vector<Case> cases;
  const auto submit = [](Mp& m) {
    job_id(m);
    m.str("provider").str("p");
  };
  cases.push_back(make_case<Submit>("Submit unknown key", with_unknown_nils(2, submit)));
  const auto accepted = [](Mp& m) {
    job_id(m);
    m.str("broker_id").str("b");
  };
  cases.push_back(make_case<Accepted>("Accepted unknown key", with_unknown_nils(2, accepted)));
  cases.push_back(make_case<Rejected>(
      "Rejected unknown key", with_unknown_nils(1, [](Mp& m) { m.str("kind").str("internal"); })));
  cases.push_back(make_case<Cancel>("Cancel unknown key", with_unknown_nils(1, job_id)));
  const auto job = [](Mp& m) {
    job_id(m);
    m.str("delivery").uint(1);
  };
  cases.push_back(make_case<JobHeader>("JobHeader unknown key", with_unknown_nils(2, job)));
  cases.push_back(make_case<JobEnd>("JobEnd unknown key", with_unknown_nils(1, job_id)));
  const auto capacity = [](Mp& m) { m.str("capacity").uint(1); };
  cases.push_back(make_case<Credit>("Credit unknown key", with_unknown_nils(1, capacity)));
  const auto nothing = [](Mp&) {};
  cases.push_back(make_case<Heartbeat>("Heartbeat unknown key", with_unknown_nils(0, nothing)));
  cases.push_back(make_case<Disconnect>("Disconnect unknown key", with_unknown_nils(0, nothing)));
  {
    Mp m;
    m.map(4).str("worker_id").str("w").str("capacity").uint(1);
    m.str("providers").array(Limits::max_array).repeat(Limits::max_array, [](Mp& s) { s.str(""); });
    m.str("jobs").array(Limits::max_array).repeat(Limits::max_array, [](Mp& j) {
      j.map(2).str("job_id").str("j").str("delivery").uint(1);
    });
    cases.push_back(make_case<Ready>("Ready providers and jobs", m.take()));
  }
  const auto ready = [](Mp& m) { m.str("worker_id").str("w").str("capacity").uint(1); };
  cases.push_back(make_case<Ready>("Ready unknown key", with_unknown_nils(2, ready)));
  return cases;
}

std::vector<Case> status_cases() {
  std::vector<Case> cases;
  {
    Mp m;
    m.map(4).str("broker_id").str("b");
    m.str("queue_depth").array(Limits::max_array).repeat(Limits::max_array, [](Mp& d) {
      d.uint(0);
    });
    m.str("workers").array(Limits::max_array).repeat(Limits::max_array, [](Mp& w) {
      w.map(1).str("worker_id").str("");
    });
    m.str("providers").map(static_cast<uint32_t>(Limits::max_map));
    for (std::size_t i = 0; i < Limits::max_map; ++i) m.str(std::to_string(i)).map(0);
    cases.push_back(make_case<StatusReply>("StatusReply of small entries", m.take()));
  }
  {  // Workers that each serve 100,000 empty provider names.
    Mp m;
    m.map(2).str("broker_id").str("b").str("workers");
    const std::size_t workers = kTargetBytes / Limits::max_array;
    m.array(static_cast<uint32_t>(workers)).repeat(workers, [](Mp& w) {
      w.map(2).str("worker_id").str("w").str("providers").array(Limits::max_array);
      w.repeat(Limits::max_array, [](Mp& s) { s.str(""); });
    });
    cases.push_back(make_case<StatusReply>("StatusReply workers[].providers", m.take()));
  }
  cases.push_back(make_case<StatusReply>(
      "StatusReply unknown key", with_unknown_nils(1, [](Mp& m) { m.str("broker_id").str("b"); })));
  return cases;
}

std::size_t budget(std::size_t input_bytes) {
  return Limits::decode_ratio * input_bytes + Limits::decode_slack;
}

void expect_within_budget(const Case& c) {
  ASSERT_FALSE(validate_msgpack(c.bytes).has_value()) << "the payload itself must be valid";
  testing::AllocStats stats;
  std::optional<DecodeError> error;
  {
    AllocScope scope;
    error = c.decode(c.bytes);
    stats = scope.stats();
  }
  EXPECT_LE(stats.peak, budget(c.bytes.size()))
      << stats.peak << " bytes at peak for " << c.bytes.size() << " bytes of input ("
      << static_cast<double>(stats.peak) / static_cast<double>(c.bytes.size()) << "x)";
  if (error) {
    // Refused for its size, not for anything else: every payload here is well-formed.
    EXPECT_EQ(error->code, Code::malformed) << error->message;
    EXPECT_NE(error->message.find("decoded size would exceed 8x its " +
                                  std::to_string(c.bytes.size()) + " bytes"),
              std::string::npos)
        << error->message;
  }
}

TEST(Amplification, TheBoundIsSmallAndDocumented) {
  // PROTOCOL.md (Limits) and codec.hpp promise 8x plus 64 KiB: other-language peers and the
  // worker's own memory budget rely on it.
  EXPECT_EQ(Limits::decode_ratio, 8u);
  EXPECT_EQ(Limits::decode_slack, 64u * 1024);
}

TEST(Amplification, RequestDecodingStaysWithinItsBudget) {
  for (const auto& c : request_cases()) {
    SCOPED_TRACE(c.name);
    expect_within_budget(c);
  }
}

TEST(Amplification, ResultAndErrorDecodingStaysWithinItsBudget) {
  for (const auto& c : result_cases()) {
    SCOPED_TRACE(c.name);
    expect_within_budget(c);
  }
}

TEST(Amplification, StreamHeadersStayWithinTheirBudget) {
  for (const auto& c : stream_cases()) {
    SCOPED_TRACE(c.name);
    expect_within_budget(c);
  }
}

TEST(Amplification, ControlHeadersStayWithinTheirBudget) {
  for (const auto& c : control_cases()) {
    SCOPED_TRACE(c.name);
    expect_within_budget(c);
  }
}

TEST(Amplification, StatusReplyStaysWithinItsBudget) {
  for (const auto& c : status_cases()) {
    SCOPED_TRACE(c.name);
    expect_within_budget(c);
  }
}

TEST(Amplification, TheFifteenMebibyteToolCallAttackIsRefusedWithinItsBudget) {
  // The measured attack: a 15 MiB request of empty tool calls (it took a worker to 4.1 GiB).
  Mp m;
  m.map(3);
  provider_model(m);
  m.str("messages");
  const std::size_t messages = (15u << 20) / Limits::max_array + 1;
  m.array(static_cast<uint32_t>(messages)).repeat(messages, [](Mp& message) {
    message.map(2).str("role").str("u").str("tool_calls").array(Limits::max_array);
    message.repeat(Limits::max_array, [](Mp& call) { call.map(0); });
  });
  const Case c = make_case<Request>("15 MiB of empty tool calls", m.take());
  ASSERT_GE(c.bytes.size(), 15u << 20);
  expect_within_budget(c);
  const auto error = c.decode(c.bytes);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, Code::malformed);
}

TEST(Amplification, OrdinaryLargeMessagesStillDecode) {
  // A long conversation near the frame limit: text dominates, so it is far within the budget.
  Request r;
  r.provider = "openai";
  r.model = "gpt-4o-mini";
  for (int i = 0; i < 300; ++i) {
    Message message;
    message.role = i % 2 == 0 ? "user" : "assistant";
    message.content.assign(50'000, static_cast<char>('a' + i % 26));
    message.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"}};
    r.messages.push_back(std::move(message));
  }
  const std::string bytes = encode(r);
  ASSERT_GT(bytes.size(), 14u << 20);
  testing::AllocStats stats;
  {
    AllocScope scope;
    auto decoded = decode<Request>(bytes);
    stats = scope.stats();
    ASSERT_TRUE(decoded) << decoded.error().message;
    EXPECT_EQ(decoded.value(), r);
  }
  EXPECT_LE(stats.peak, 2 * bytes.size());
}

TEST(Amplification, ExactlyTheFrameLimitDecodesAndOneByteMoreDoesNot) {
  // The largest payload a peer accepts is 16 MiB exactly (Limits::max_message_bytes).
  const std::string prefix = Mp().map(4).str("provider").str("p").str("model").str("m").take() +
                             Mp().str("messages").array(1).map(1).str("role").str("u").take() +
                             Mp().str("response_schema").take();
  const std::size_t header = 5;  // str32: 0xdb + 4 length bytes
  std::string text(Limits::max_message_bytes - prefix.size() - header, 'x');
  std::string exact = prefix + Mp().str(text).take();
  ASSERT_EQ(exact.size(), Limits::max_message_bytes);
  auto decoded = decode<Request>(exact);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded.value().response_schema.size(), text.size());

  text.push_back('x');
  const std::string over = prefix + Mp().str(text).take();
  auto refused = decode<Request>(over);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::malformed);
  EXPECT_NE(refused.error().message.find("exceeds the limit of 16777216"), std::string::npos)
      << refused.error().message;
}

}  // namespace
}  // namespace dispatch::protocol
