// The registration list: one line per built-in wire format, naming the factory its adapter
// file defines (AdapterPtr make_<name>_adapter() in dispatch::worker::detail). Nothing else
// in the tree lists the adapters: configuration, the built-in providers and the launcher all
// ask the registry.
//
// Why a list and not self-registration from each adapter file (a static object whose
// constructor registers it): the adapters are in a static library, and a linker copies an
// object file out of an archive only when something refers to a symbol in it. An adapter file
// that nothing names would be dropped from the binary without a word, and its type would be
// "unknown" at run time. Naming every factory here makes each adapter a dependency of
// register_builtin_adapters(), which adapter_registry() calls: no linker can drop one.

#include "dispatch/worker/providers/adapter.hpp"

#define DISPATCH_BUILTIN_ADAPTERS(ADAPTER) \
  ADAPTER(make_ollama_adapter)             \
  ADAPTER(make_openai_adapter)             \
  ADAPTER(make_openai_compatible_adapter)  \
  ADAPTER(make_dashscope_adapter)          \
  ADAPTER(make_anthropic_adapter)

namespace dispatch::worker {

namespace detail {
#define DISPATCH_DECLARE_FACTORY(factory) AdapterPtr factory();
DISPATCH_BUILTIN_ADAPTERS(DISPATCH_DECLARE_FACTORY)
#undef DISPATCH_DECLARE_FACTORY
}  // namespace detail

void register_builtin_adapters(AdapterRegistry& registry) {
#define DISPATCH_REGISTER_FACTORY(factory) registry.add(detail::factory());
  DISPATCH_BUILTIN_ADAPTERS(DISPATCH_REGISTER_FACTORY)
#undef DISPATCH_REGISTER_FACTORY
}

}  // namespace dispatch::worker
