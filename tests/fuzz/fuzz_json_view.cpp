// Fuzz harness: the worker's flat JSON reader (worker/src/providers/json_view), which parses
// every event of every streamed answer.
//
// Oracle, its own contract: "an event is malformed exactly when nlohmann rejects it — or when it
// nests deeper than kMaxJsonDepth", and the values are nlohmann's. So a text is accepted by
// JsonDocument iff nlohmann::json::parse accepts it and it is not too deep, and the tree it
// builds converts to the same DOM; a second parse into the same (reused) document gives the same
// answer again.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "json_view.hpp"

namespace {

using dispatch::worker::detail::JsonDocument;
using dispatch::worker::detail::JsonValue;

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "json_view: %s for %zu bytes\n", what, text.size());
  std::abort();
}

// Walks the tree the way decoders do (find, iteration, operator[]), so that every accessor sees
// every node; find() and operator[] must land on the nodes iteration visits.
void walk(const JsonValue& value) {
  std::size_t i = 0;
  for (const JsonValue& child : value) {
    if (value.is_object() && value.find(child.key()) == nullptr) std::abort();
    if (i < 8 && &value[i] != &child) std::abort();
    walk(child);
    ++i;
  }
  if (i != value.size()) std::abort();
}

void check(JsonDocument& document, std::string_view text, const nlohmann::json& expected) {
  const JsonValue* root = document.parse(text);
  const bool acceptable = !expected.is_discarded() && dispatch::json_depth_within(text);
  if ((root != nullptr) != acceptable) {
    fail(root != nullptr ? "accepted what nlohmann rejects" : "rejected what nlohmann accepts",
         text);
  }
  if (root == nullptr) return;
  walk(*root);
  if (root->to_json() != expected) fail("values differ from nlohmann's", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json expected = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  static JsonDocument document;  // reused across inputs, as the worker reuses its own
  check(document, text, expected);
  check(document, text, expected);
  return 0;
}
