// Microbenchmark of the codec's hot paths (not part of CTest): protocol_codec_bench.
// The broker validates every submit payload and decodes every header it relays; a worker decodes
// every request; a client decodes every chunk and result. Run it before and after a codec change.

#include <benchmark/benchmark.h>

#include <string>

#include "dispatch/protocol/codec.hpp"
#include "golden_values.hpp"

namespace dispatch::protocol {
namespace {

// A typical chat job: a long conversation of mid-sized turns.
Request conversation(std::size_t turns, std::size_t text_bytes) {
  Request r;
  r.provider = "openai";
  r.model = "gpt-4o-mini";
  r.stream = true;
  r.temperature = 0.7;
  for (std::size_t i = 0; i < turns; ++i) {
    Message m;
    m.role = i % 2 == 0 ? "user" : "assistant";
    m.content.assign(text_bytes, static_cast<char>('a' + i % 26));
    r.messages.push_back(std::move(m));
  }
  r.metadata["custom_id"] = "request-00042";
  return r;
}

template <class T>
void decode_bytes(benchmark::State& state, const std::string& bytes) {
  for (auto _ : state) {
    auto decoded = decode<T>(bytes);
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
}

void BM_DecodeRequestFull(benchmark::State& state) {
  decode_bytes<Request>(state, encode(testing::golden_request_full()));
}
BENCHMARK(BM_DecodeRequestFull);

void BM_DecodeConversation(benchmark::State& state) {
  decode_bytes<Request>(state, encode(conversation(40, 2000)));
}
BENCHMARK(BM_DecodeConversation);

void BM_DecodeResponse(benchmark::State& state) {
  decode_bytes<Response>(state, encode(testing::golden_response()));
}
BENCHMARK(BM_DecodeResponse);

void BM_DecodeChunkHeader(benchmark::State& state) {
  ChunkHeader h;
  h.chunk.job_id = "0123456789abcdef0123456789abcdef";
  h.chunk.seq = 1234;
  h.chunk.content = "a few tokens of text";
  h.delivery = 1;
  decode_bytes<ChunkHeader>(state, encode(h));
}
BENCHMARK(BM_DecodeChunkHeader);

void BM_DecodeStatusReply(benchmark::State& state) {
  decode_bytes<StatusReply>(state, encode(testing::golden_status_reply()));
}
BENCHMARK(BM_DecodeStatusReply);

void BM_ValidateConversation(benchmark::State& state) {
  const std::string bytes = encode(conversation(40, 2000));
  for (auto _ : state) benchmark::DoNotOptimize(validate_msgpack(bytes));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(BM_ValidateConversation);

void BM_EncodeConversation(benchmark::State& state) {
  const Request request = conversation(40, 2000);
  for (auto _ : state) benchmark::DoNotOptimize(encode(request));
}
BENCHMARK(BM_EncodeConversation);

}  // namespace
}  // namespace dispatch::protocol

BENCHMARK_MAIN();
