// Fuzz harness: the `dispatch batch` input line parser (an OpenAI Batch API line -> our Request)
// and the scanner of an existing output file that a resumed batch reads.
//
// Oracle: a line the parser accepts becomes a Request the protocol can carry — it encodes, and
// the encoding decodes back to the same Request (data: URL images as their base64, as the
// decoder documents) — so an accepted line never turns into a job the
// broker refuses as malformed or that changes on the way.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "dispatch/cli/batch.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/text.hpp"

namespace {

// What the decoder does on purpose: a data: URL image arrives as its base64 alone.
dispatch::protocol::Request as_decoded(dispatch::protocol::Request request) {
  for (auto& message : request.messages) {
    for (auto& image : message.images) {
      image = std::string(dispatch::protocol::strip_data_url(image));
    }
  }
  return request;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)dispatch::cli::scan_output_text(text);
  const auto parsed = dispatch::cli::parse_batch_line(text, 1);
  if (parsed) {
    const dispatch::cli::BatchItem* item = &*parsed;
    const std::string bytes = dispatch::protocol::encode(item->request);
    const auto decoded = dispatch::protocol::decode<dispatch::protocol::Request>(bytes);
    if (!decoded || !(decoded.value() == as_decoded(item->request))) {
      std::fprintf(stderr, "accepted line does not survive the protocol: %s\n",
                   decoded ? "value changed" : decoded.error().message.c_str());
      std::abort();
    }
  }
  return 0;
}
