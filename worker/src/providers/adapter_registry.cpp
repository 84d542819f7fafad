// The registry of wire formats; the built-in ones are listed in builtin_adapters.cpp.

#include <fmt/format.h>

#include <stdexcept>

#include "dispatch/worker/providers/adapter.hpp"

namespace dispatch::worker {

void AdapterRegistry::add(AdapterPtr adapter) {
  const AdapterDescriptor& added = adapter->descriptor();
  if (added.type.empty()) throw std::logic_error("an adapter without a type");
  if (find(added.type) != nullptr) {
    throw std::logic_error(fmt::format("two adapters of type '{}'", added.type));
  }
  if (!added.builtin_name.empty() && find_builtin(added.builtin_name) != nullptr) {
    throw std::logic_error(fmt::format("two adapters serve provider '{}'", added.builtin_name));
  }
  adapters_.push_back(std::move(adapter));
}

const Adapter* AdapterRegistry::find(std::string_view type) const {
  for (const AdapterPtr& adapter : adapters_) {
    if (adapter->descriptor().type == type) return adapter.get();
  }
  return nullptr;
}

const Adapter* AdapterRegistry::find_builtin(std::string_view provider_name) const {
  if (provider_name.empty()) return nullptr;
  for (const AdapterPtr& adapter : adapters_) {
    if (adapter->descriptor().builtin_name == provider_name) return adapter.get();
  }
  return nullptr;
}

std::vector<std::string_view> AdapterRegistry::types() const {
  std::vector<std::string_view> types;
  for (const AdapterPtr& adapter : adapters_) types.push_back(adapter->descriptor().type);
  return types;
}

std::vector<std::string_view> AdapterRegistry::builtin_names() const {
  std::vector<std::string_view> names;
  for (const AdapterPtr& adapter : adapters_) {
    if (!adapter->descriptor().builtin_name.empty()) {
      names.push_back(adapter->descriptor().builtin_name);
    }
  }
  return names;
}

AdapterRegistry& adapter_registry() {
  // Built on first use (thread-safe), then only read: adapters are immutable.
  static AdapterRegistry registry = [] {
    AdapterRegistry built;
    register_builtin_adapters(built);
    return built;
  }();
  return registry;
}

const Adapter* adapter_for_type(std::string_view type) {
  return adapter_registry().find(type);
}

}  // namespace dispatch::worker
