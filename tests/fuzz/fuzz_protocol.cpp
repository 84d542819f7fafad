// Fuzz harness: the protocol decoder, what every peer of the broker and the workers sends.
//
// Input: byte 0 picks the type, the rest is the msgpack bytes; validate_msgpack and
// extract_job_id see every input, decode<T> the type picked, for every type decode<T> is
// instantiated for (each message and each nested struct). Besides "no crash, no sanitizer
// report", it checks an oracle: whatever decodes must re-encode to something that decodes to the
// same value, deterministically. The last choice splits the input into frames for parse_frames().
//
//   scripts/fuzz protocol          (libFuzzer, with tests/fuzz/protocol.dict)
//   ctest -R fuzz_replay.protocol  (the seed corpus through the same harness, every build)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/protocol/codec.hpp"

namespace {

using namespace dispatch::protocol;

template <class T>
void check_stable(std::string_view bytes) {
  auto first = decode<T>(bytes);
  if (!first) {
    if (first.error().message.empty()) {
      std::fprintf(stderr, "decode error without a message\n");
      std::abort();
    }
    return;
  }
  const std::string again = encode(first.value());
  auto second = decode<T>(again);
  // The decoding memory bound is relative to the input's size: a value read from a wasteful
  // encoding may be refused in the shortest one. That is the bound at work, not a bug.
  if (!second && again.size() < bytes.size() &&
      second.error().message.find("decoded size would exceed") != std::string::npos) {
    return;
  }
  if (!second || !(second.value() == first.value())) {
    std::fprintf(stderr, "re-encoded value does not decode to itself: %s\n",
                 second ? "values differ" : second.error().message.c_str());
    std::abort();
  }
  if (encode(second.value()) != again) {
    std::fprintf(stderr, "encoding is not deterministic\n");
    std::abort();
  }
}

void check_frames(std::string_view bytes) {
  // 0xFE separates frames (it never starts a valid header, so splits land between values).
  std::vector<std::string_view> frames;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= bytes.size() && frames.size() < 8; ++i) {
    if (i == bytes.size() || static_cast<unsigned char>(bytes[i]) == 0xFE) {
      frames.push_back(bytes.substr(start, i - start));
      start = i + 1;
    }
  }
  auto parsed = parse_frames(frames);
  if (parsed) {
    const std::size_t expected = command_has_payload(parsed.value().command) ? 4 : 3;
    if (frames.size() != expected || frames[0] != kProtocolTag) std::abort();
  }
}

// One entry per type decode<T> is instantiated for; the last choice is the frame splitter.
using Check = void (*)(std::string_view);
constexpr Check kChecks[] = {
    check_stable<Request>,       check_stable<Response>,
    check_stable<Error>,         check_stable<Submit>,
    check_stable<Accepted>,      check_stable<Rejected>,
    check_stable<Cancel>,        check_stable<JobHeader>,
    check_stable<JobEnd>,        check_stable<Chunk>,
    check_stable<ChunkHeader>,   check_stable<StreamReset>,
    check_stable<ResetHeader>,   check_stable<Ready>,
    check_stable<Credit>,        check_stable<Heartbeat>,
    check_stable<Disconnect>,    check_stable<StatusReply>,
    check_stable<ToolCall>,      check_stable<Message>,
    check_stable<Tool>,          check_stable<Target>,
    check_stable<Usage>,         check_stable<Attempt>,
    check_stable<ToolCallDelta>, check_stable<ProviderCounters>,
    check_stable<WorkerStatus>,  check_frames,
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  (void)validate_msgpack(bytes);
  (void)extract_job_id(bytes);
  kChecks[data[0] % std::size(kChecks)](bytes);
  return 0;
}
