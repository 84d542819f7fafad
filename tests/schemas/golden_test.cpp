// schemas/golden/golden.json is the contract other-language clients check against: the C++
// encoder must produce exactly its bytes, and the C++ decoder must read them back.

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "golden_values.hpp"
#include "test_util.hpp"

namespace dispatch::protocol {
namespace {

using testing::from_hex;
using testing::golden_cases;

nlohmann::ordered_json load_golden() {
  std::ifstream in(DISPATCH_GOLDEN_JSON, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << DISPATCH_GOLDEN_JSON;
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::ordered_json::parse(text.str());
}

const nlohmann::ordered_json* find_vector(const nlohmann::ordered_json& doc,
                                          const std::string& name) {
  for (const auto& v : doc["vectors"]) {
    if (v["name"] == name) return &v;
  }
  return nullptr;
}

TEST(Golden, FileMatchesEncoderAndDecoder) {
  const auto doc = load_golden();
  ASSERT_EQ(doc["protocol"], "LLMD1");
  const auto cases = golden_cases();
  ASSERT_GE(cases.size(), 25u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const auto* v = find_vector(doc, c.name);
    ASSERT_NE(v, nullptr) << "missing from golden.json (regenerate with protocol_golden_gen)";
    EXPECT_EQ((*v)["type"], c.type);
    EXPECT_EQ((*v)["command"], c.command);
    EXPECT_EQ((*v)["frame"], c.frame);
    // encode(value) == golden bytes
    EXPECT_EQ((*v)["hex"].get<std::string>(), to_hex(c.bytes));
    // decode(golden bytes) == value
    const std::string bytes = from_hex((*v)["hex"].get<std::string>());
    EXPECT_EQ(c.check_decode(bytes), "");
    // the human-readable meaning is what the bytes say
    EXPECT_EQ((*v)["value"], testing::as_json(bytes));
    EXPECT_FALSE(validate_msgpack(bytes).has_value());
  }
  std::set<std::string> known;
  for (const auto& c : cases) known.insert(c.name);
  for (const auto& v : doc["vectors"]) {
    EXPECT_TRUE(known.count(v["name"].get<std::string>()))
        << v["name"] << " is in golden.json but not in golden_values.cpp";
  }
}

// A few vectors spelled out byte by byte, independent of the encoder, so that a change in
// msgpack-c's output choices cannot silently move the golden file along with it.
TEST(Golden, HandCheckedBytes) {
  const auto doc = load_golden();
  auto hex_of = [&](const std::string& name) {
    const auto* v = find_vector(doc, name);
    return v == nullptr ? std::string() : (*v)["hex"].get<std::string>();
  };
  // {"job_id": "job-0001", "provider": "ollama"}
  EXPECT_EQ(hex_of("submit_minimal"),
            "82"  // fixmap, 2 pairs
            "a66a6f625f6964"
            "a86a6f622d30303031"  // "job_id": "job-0001"
            "a870726f7669646572"
            "a66f6c6c616d61");  // "provider": "ollama"
  // {"capacity": 128}: 128 needs uint8 (0xcc), not a fixint
  EXPECT_EQ(hex_of("credit"),
            "81"
            "a86361706163697479"
            "cc80");
  // {"capacity": 0}: a required field is written even when zero
  EXPECT_EQ(hex_of("credit_drain"),
            "81"
            "a86361706163697479"
            "00");
  EXPECT_EQ(hex_of("heartbeat_client"), "80");
  EXPECT_EQ(hex_of("status_request"), "80");
  // {"job_id": "job-0001", "delivery": 1, "stream": true}
  EXPECT_EQ(hex_of("job_header"),
            "83"
            "a66a6f625f6964"
            "a86a6f622d30303031"
            "a864656c6976657279"
            "01"
            "a673747265616d"
            "c3");
}

// The broker relays a worker's chunk / reset / result / error headers byte for byte, so clients
// receive the `delivery` key too (PROTOCOL.md, Commands). A client decodes them as Chunk,
// StreamReset or JobEnd and ignores it; the client-side view of `chunk_content` is the same
// header without it.
TEST(Golden, ClientsReadRelayedHeadersAndIgnoreDelivery) {
  const auto doc = load_golden();
  auto bytes_of = [&](const std::string& name) {
    const auto* v = find_vector(doc, name);
    return v == nullptr ? std::string() : from_hex((*v)["hex"].get<std::string>());
  };
  auto chunk = decode<Chunk>(bytes_of("chunk_tool_call_delta"));
  ASSERT_TRUE(chunk) << chunk.error().message;
  EXPECT_EQ(chunk.value(), testing::golden_chunk_tool_call().chunk);

  auto reset = decode<StreamReset>(bytes_of("reset"));
  ASSERT_TRUE(reset) << reset.error().message;
  EXPECT_EQ(reset.value(), testing::golden_reset().reset);

  auto end = decode<JobEnd>(bytes_of("job_end"));
  ASSERT_TRUE(end) << end.error().message;
  EXPECT_EQ(end.value().job_id, "job-0001");

  // And the other way: a chunk without `delivery` is a ChunkHeader of delivery 0.
  auto header = decode<ChunkHeader>(bytes_of("chunk_content"));
  ASSERT_TRUE(header) << header.error().message;
  EXPECT_EQ(header.value().delivery, 0u);
  EXPECT_EQ(header.value().chunk.content, "It is");
}

}  // namespace
}  // namespace dispatch::protocol
