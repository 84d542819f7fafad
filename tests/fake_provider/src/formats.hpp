#pragma once

// The format singletons (private to the library; use wire_format(Format)).

#include "dispatch/fake_provider/wire_format.hpp"

namespace dispatch::fake_provider {

const WireFormat& openai_format();
const WireFormat& dashscope_compatible_format();
const WireFormat& anthropic_format();
const WireFormat& ollama_format();
const WireFormat& dashscope_format();

}  // namespace dispatch::fake_provider
