#pragma once

// Model names as HTTP clients write them, resolved to a dispatch target:
//   "provider/model"  split on the first '/' ("openai-compatible/meta-llama/Llama-3-8B");
//   an alias          configured names ("gpt-4o" -> openai/gpt-4o with fallbacks and a timeout);
//   a bare name       sent to the default provider, when one is configured.
// Aliases are looked up first, so an alias may itself contain '/'.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::formats {

struct ModelAlias {
  protocol::Target target;
  // Absent: the request's own, else the worker's default chain. Present and empty: none.
  std::optional<std::vector<protocol::Target>> fallbacks;
  std::optional<uint32_t> timeout_ms;

  bool operator==(const ModelAlias&) const = default;
};

struct ModelCatalog {
  std::map<std::string, ModelAlias, std::less<>> aliases;
  std::string default_provider;  // "" = a bare name is an unknown model
};

struct ResolvedModel {
  protocol::Target target;
  std::optional<std::vector<protocol::Target>> fallbacks;  // from the alias
  std::optional<uint32_t> timeout_ms;                      // from the alias
  std::string alias;                                       // the alias used, if any

  std::string label() const { return target.provider + "/" + target.model; }
};

// Unknown names are a 404 with code "model_not_found"; a malformed "provider/model" (empty
// provider or model) a 400 with param `param`.
Result<ResolvedModel, RequestError> resolve_model(std::string_view name,
                                                  const ModelCatalog& catalog,
                                                  std::string_view param = "model");

// The strict form of the batch CLI: "provider/model" only (no aliases, no default provider).
Result<protocol::Target, RequestError> split_target(std::string_view name, std::string_view param);

}  // namespace dispatch::formats
