#include "dispatch/formats/models.hpp"

#include "dispatch/request.hpp"

namespace dispatch::formats {

Result<protocol::Target, RequestError> split_target(std::string_view name, std::string_view param) {
  try {
    return parse_target(name);
  } catch (const InvalidTargetError& e) {
    return invalid_field(std::string(param), std::string(": ") + e.what());
  }
}

Result<ResolvedModel, RequestError> resolve_model(std::string_view name,
                                                  const ModelCatalog& catalog,
                                                  std::string_view param) {
  ResolvedModel resolved;
  if (const auto alias = catalog.aliases.find(name); alias != catalog.aliases.end()) {
    resolved.target = alias->second.target;
    resolved.fallbacks = alias->second.fallbacks;
    resolved.timeout_ms = alias->second.timeout_ms;
    resolved.alias = alias->first;
    return resolved;
  }
  if (name.find('/') != std::string_view::npos) {
    auto target = split_target(name, param);
    if (!target) return std::move(target).error();
    resolved.target = std::move(*target);
    return resolved;
  }
  if (name.empty()) return invalid_field(std::string(param), "must not be empty");
  if (catalog.default_provider.empty()) {
    RequestError error = invalid_field(
        std::string(param),
        ": the model '" + std::string(name) +
            "' does not exist (name it \"provider/model\", or use an alias this gateway defines)",
        "model_not_found");
    error.status = 404;
    return error;
  }
  resolved.target = protocol::Target{catalog.default_provider, std::string(name)};
  return resolved;
}

}  // namespace dispatch::formats
