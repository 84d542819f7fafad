// Fuzz harness: the HTTP API request translation (client/formats) that dispatch-gateway runs on
// every body a client POSTs — OpenAI's /v1/chat/completions and Anthropic's /v1/messages — in
// the gateway's order: parse_json_body (the hostile-body checks), the API's reader, then
// resolve_targets against a model catalog.
//
// Input: byte 0 picks the API (bit 0: Anthropic), whether the catalog has a default provider
// for bare model names (bit 1), and whether the body goes through the batch CLI's strict form
// request_from_openai_body (bit 2, OpenAI only). The rest is the body.
//
// Besides "no crash, no sanitizer report", oracles: a refusal is a 4xx with a message; an
// accepted body becomes a Request the protocol carries unchanged (it encodes, and decodes back
// to the same Request, data: URL images as their base64 as the decoder documents) — so the gateway
// never admits a body the broker would refuse as malformed, or that changes on the way.
//
//   scripts/fuzz formats          (libFuzzer)
//   ctest -R fuzz_replay.formats  (the seed corpus through the same harness, every build)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "dispatch/formats/anthropic.hpp"
#include "dispatch/formats/chat_request.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/formats/models.hpp"
#include "dispatch/formats/openai.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/text.hpp"

namespace {

using namespace dispatch;

void check_refusal(const formats::RequestError& error) {
  if (error.status < 400 || error.status > 499 || error.message.empty()) {
    std::fprintf(stderr, "refusal with status %d and message '%s'\n", error.status,
                 error.message.c_str());
    std::abort();
  }
}

// What the decoder does on purpose: a data: URL image arrives as its base64 alone.
protocol::Request as_decoded(protocol::Request request) {
  for (auto& message : request.messages) {
    for (auto& image : message.images) image = std::string(protocol::strip_data_url(image));
  }
  return request;
}

void check_carried(const protocol::Request& request) {
  const std::string bytes = protocol::encode(request);
  const auto decoded = protocol::decode<protocol::Request>(bytes);
  if (!decoded || !(*decoded == as_decoded(request))) {
    std::fprintf(stderr, "an accepted body does not survive the protocol: %s\n",
                 decoded ? "value changed" : decoded.error().message.c_str());
    std::abort();
  }
}

const formats::ModelCatalog& catalog(bool with_default) {
  static const formats::ModelCatalog plain = [] {
    formats::ModelCatalog c;
    c.aliases["gpt-4o"] = {
        {"openai", "gpt-4o"}, std::vector<protocol::Target>{{"claude", "h"}}, 30000};
    c.aliases["sonnet"] = {{"claude", "claude-sonnet"}, std::nullopt, std::nullopt};
    return c;
  }();
  static const formats::ModelCatalog defaulted = [] {
    formats::ModelCatalog c = plain;
    c.default_provider = "ollama";
    return c;
  }();
  return with_default ? defaulted : plain;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const bool anthropic = (data[0] & 1) != 0;
  const bool with_default = (data[0] & 2) != 0;
  const bool batch_form = (data[0] & 4) != 0 && !anthropic;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto document = formats::parse_json_body(body);
  if (!document) {
    check_refusal(document.error());
    return 0;
  }
  if (batch_form) {
    auto request = formats::request_from_openai_body(*document);
    if (!request) {
      check_refusal(request.error());
      return 0;
    }
    check_carried(*request);
    return 0;
  }
  auto chat = anthropic ? formats::parse_anthropic_messages(*document)
                        : formats::parse_openai_chat(*document);
  if (!chat) {
    check_refusal(chat.error());
    return 0;
  }
  auto resolved = formats::resolve_targets(*chat, catalog(with_default));
  if (!resolved) {
    check_refusal(resolved.error());
    return 0;
  }
  check_carried(chat->request);
  return 0;
}
