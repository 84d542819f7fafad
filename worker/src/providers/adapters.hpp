#pragma once

// Factories of the built-in adapters; adapter_registry.cpp holds the one table.

#include "dispatch/worker/providers/adapter.hpp"

namespace dispatch::worker::detail {

// `compatible`: OpenAI-compatible servers (vLLM, DashScope compatible-mode, ...): max_tokens
// instead of max_completion_tokens, no key required, no stop-count limit, thinking extras.
AdapterPtr make_openai_adapter(bool compatible);
AdapterPtr make_anthropic_adapter();
AdapterPtr make_ollama_adapter();
AdapterPtr make_dashscope_adapter();

}  // namespace dispatch::worker::detail
