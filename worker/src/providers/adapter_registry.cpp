// The one table of wire formats, looked up by the config's `type`.

#include <array>

#include "adapters.hpp"

namespace dispatch::worker {

const Adapter* adapter_for_type(std::string_view type) {
  // Built once, immutable afterwards: safe to share across threads.
  static const std::array<AdapterPtr, 5> kAdapters = {
      detail::make_ollama_adapter(), detail::make_openai_adapter(/*compatible=*/false),
      detail::make_openai_adapter(/*compatible=*/true), detail::make_dashscope_adapter(),
      detail::make_anthropic_adapter()};
  for (const AdapterPtr& adapter : kAdapters) {
    if (adapter->type() == type) return adapter.get();
  }
  return nullptr;
}

}  // namespace dispatch::worker
