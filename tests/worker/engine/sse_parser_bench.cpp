// Throughput of the stream parsers on realistic provider streams. Not a test: run by hand
// (Release build) to see the CPU cost per 1,000 streamed chunks.

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "dispatch/worker/stream_parsers.hpp"

namespace {

using dispatch::worker::NdjsonParser;
using dispatch::worker::SseEvent;
using dispatch::worker::SseParser;

constexpr int kChunks = 1000;

// 1,000 OpenAI chat.completion.chunk events as a server sends them.
std::string openai_stream() {
  std::string out;
  for (int i = 0; i < kChunks; ++i) {
    out += R"(data: {"id":"chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUv","object":"chat.completion.chunk",)";
    out +=
        R"("created":1718000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0123",)";
    out += R"("choices":[{"index":0,"delta":{"content":" token)" + std::to_string(i) + R"("},)";
    out += R"("logprobs":null,"finish_reason":null}]})";
    out += "\n\n";
  }
  out += "data: [DONE]\n\n";
  return out;
}

// Network reads rarely line up with events: cut the stream into pieces of `piece` bytes.
std::vector<std::string_view> cut(const std::string& stream, std::size_t piece) {
  std::vector<std::string_view> pieces;
  for (std::size_t pos = 0; pos < stream.size(); pos += piece) {
    pieces.emplace_back(std::string_view(stream).substr(pos, piece));
  }
  return pieces;
}

void BM_SseOpenAi1000Chunks(benchmark::State& state) {
  const std::string stream = openai_stream();
  const auto pieces = cut(stream, static_cast<std::size_t>(state.range(0)));
  std::size_t events = 0;
  for (auto _ : state) {
    SseParser parser;
    for (auto piece : pieces) {
      parser.feed(piece, [&](const SseEvent& e) { events += e.data.size() > 0 ? 1 : 0; });
    }
    benchmark::DoNotOptimize(events);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
  // Events actually dispatched per iteration (1,001 with [DONE]): proves the work was done.
  state.counters["events"] = static_cast<double>(events) / static_cast<double>(state.iterations());
}
// Whole stream in one buffer, typical 16 KiB curl reads, and small 64-byte reads.
BENCHMARK(BM_SseOpenAi1000Chunks)->Arg(1 << 20)->Arg(16384)->Arg(64);

void BM_NdjsonOllama1000Lines(benchmark::State& state) {
  std::string stream;
  for (int i = 0; i < kChunks; ++i) {
    stream += R"({"model":"llama3.2","created_at":"2024-06-10T12:00:00.000000Z","message":)";
    stream +=
        R"({"role":"assistant","content":" token)" + std::to_string(i) + R"("},"done":false})";
    stream += "\n";
  }
  const auto pieces = cut(stream, 16384);
  std::size_t lines = 0;
  for (auto _ : state) {
    NdjsonParser parser;
    for (auto piece : pieces) parser.feed(piece, [&](std::string_view) { ++lines; });
    benchmark::DoNotOptimize(lines);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
}
BENCHMARK(BM_NdjsonOllama1000Lines);

}  // namespace

BENCHMARK_MAIN();
