// libFuzzer target for the protocol decoder (built with -DDISPATCH_FUZZ=ON and CXX=clang++).
//
// Input: byte 0 picks the struct, the rest is the msgpack message. Besides "no crash, no
// sanitizer report", it checks an oracle: whatever decodes must re-encode to something that
// decodes to the same value. A second pass splits the input into frames for parse_frames().
//
//   protocol_fuzz -max_total_time=60 -dict=tests/schemas/fuzz_decode.dict CORPUS_DIR

#include <cstdint>
#include <cstdio>
#include <cstdlib>
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  (void)validate_msgpack(bytes);
  (void)extract_job_id(bytes);
  switch (data[0] % 20) {
    case 0:
      check_stable<Request>(bytes);
      break;
    case 1:
      check_stable<Response>(bytes);
      break;
    case 2:
      check_stable<Error>(bytes);
      break;
    case 3:
      check_stable<Submit>(bytes);
      break;
    case 4:
      check_stable<Accepted>(bytes);
      break;
    case 5:
      check_stable<Rejected>(bytes);
      break;
    case 6:
      check_stable<Cancel>(bytes);
      break;
    case 7:
      check_stable<JobHeader>(bytes);
      break;
    case 8:
      check_stable<JobEnd>(bytes);
      break;
    case 9:
      check_stable<ChunkHeader>(bytes);
      break;
    case 10:
      check_stable<ResetHeader>(bytes);
      break;
    case 11:
      check_stable<Ready>(bytes);
      break;
    case 12:
      check_stable<Credit>(bytes);
      break;
    case 13:
      check_stable<Heartbeat>(bytes);
      break;
    case 14:
      check_stable<Disconnect>(bytes);
      break;
    case 15:
      check_stable<StatusReply>(bytes);
      break;
    case 16:
      check_stable<Message>(bytes);
      break;
    case 17:
      check_stable<Attempt>(bytes);
      break;
    case 18:
      check_stable<WorkerStatus>(bytes);
      break;
    default:
      check_frames(bytes);
      break;
  }
  return 0;
}
