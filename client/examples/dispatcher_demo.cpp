// A tour of the client library: several providers, fallback, parameters, concurrent calls,
// streaming with reset handling, and handling each typed error.
//
//   dispatcher_demo [BROKER_ENDPOINT]   (default $DISPATCH_BROKER or tcp://127.0.0.1:5555)
//
// Models are overridable so the demo runs against real providers or the fake provider:
//   DEMO_OLLAMA_MODEL (llama3.2)  DEMO_OPENAI_MODEL (gpt-4o-mini)
//   DEMO_CLAUDE_MODEL (claude-3-5-haiku-latest)  DEMO_ALI_MODEL (qwen-plus)
//   DEMO_PROVIDERS — comma list of providers to use (default "ollama,openai")

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dispatch/client.hpp"

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string model_for(const std::string& provider) {
  if (provider == "ollama") return env_or("DEMO_OLLAMA_MODEL", "llama3.2");
  if (provider == "openai") return env_or("DEMO_OPENAI_MODEL", "gpt-4o-mini");
  if (provider == "claude") return env_or("DEMO_CLAUDE_MODEL", "claude-3-5-haiku-latest");
  if (provider == "ali") return env_or("DEMO_ALI_MODEL", "qwen-plus");
  return env_or("DEMO_MODEL", "default");
}

// Each typed error says something different to the caller; this is where to decide.
void explain(const dispatch::DispatchError& error) {
  try {
    error.raise();
  } catch (const dispatch::UnsupportedProviderError& e) {
    std::cerr << "  no worker serves " << e.provider() << " — start one or fix the name\n";
  } catch (const dispatch::ModelNotAvailableError& e) {
    std::cerr << "  model " << e.model() << " is not available at " << e.provider() << "\n";
  } catch (const dispatch::RateLimitedError& e) {
    std::cerr << "  rate limited even after retries (status " << e.status() << ")\n";
  } catch (const dispatch::AuthenticationError& e) {
    std::cerr << "  the worker's API key for " << e.provider() << " was refused\n";
  } catch (const dispatch::ApiError& e) {
    std::cerr << "  provider error " << e.status() << " " << e.code() << ": " << e.message()
              << "\n";
  } catch (const dispatch::TimeoutError& e) {
    std::cerr << "  timed out (" << e.code() << ")\n";
  } catch (const dispatch::NetworkError& e) {
    std::cerr << "  network problem (" << e.code() << "): " << e.message() << "\n";
  } catch (const dispatch::ContextLengthExceededError&) {
    std::cerr << "  prompt too long for every target\n";
  } catch (const dispatch::ContentFilteredError&) {
    std::cerr << "  refused by the provider's content filter\n";
  } catch (const dispatch::StreamInterruptedError&) {
    std::cerr << "  the stream broke and no fallback could finish it\n";
  } catch (const dispatch::QueueFullError&) {
    std::cerr << "  the broker's queue is full; slow down\n";
  } catch (const dispatch::CancelledError&) {
    std::cerr << "  cancelled\n";
  } catch (const dispatch::DispatchError& e) {
    std::cerr << "  " << e.what() << "\n";
  }
  for (const auto& attempt : error.attempts()) {
    std::cerr << "    tried " << attempt.provider << "/" << attempt.model << ": " << attempt.outcome
              << "\n";
  }
}

void print_attempts(const dispatch::DispatchResponse& response) {
  for (const auto& attempt : response.attempts) {
    std::cout << "    attempt " << attempt.provider << "/" << attempt.model << " -> "
              << attempt.outcome << " in " << attempt.duration_ms << " ms\n";
  }
}

// 1. The same question to every provider at once, each with a fallback to the next one.
int fan_out(dispatch::Client& client, const std::vector<std::string>& providers) {
  std::cout << "== several providers, concurrently, with fallback\n";
  std::vector<dispatch::PendingDispatch> pending;
  for (std::size_t i = 0; i < providers.size(); ++i) {
    const auto& provider = providers[i];
    const auto& backup = providers[(i + 1) % providers.size()];
    auto request = dispatch::DispatchRequest(provider, model_for(provider),
                                             {dispatch::Message::system("Answer in one sentence."),
                                              dispatch::Message::user("What is a message broker?")})
                       .with_temperature(0.3)
                       .with_max_tokens(200)
                       .with_top_p(0.9)
                       .with_stop({"END"})
                       .with_timeout_ms(20000)
                       .with_retry_count(2)
                       .with_metadata("demo", "fan-out");
    if (backup != provider) request.with_fallback(dispatch::Target{backup, model_for(backup)});
    pending.push_back(client.dispatch_async(request));
  }
  int failures = 0;
  for (auto& job : pending) {
    try {
      auto response = job.get();
      std::cout << "  [" << response.provider << "/" << response.model << "] " << response.content
                << "\n"
                << "    tokens " << response.usage.total_tokens << ", finish "
                << response.finish_reason << "\n";
      print_attempts(response);
    } catch (const dispatch::DispatchError& e) {
      ++failures;
      explain(e);
    }
  }
  return failures;
}

void print_stream_event(const dispatch::StreamEvent& event) {
  switch (event.type) {
    case dispatch::StreamEvent::Type::chunk:
      std::cout << event.content << std::flush;
      break;
    case dispatch::StreamEvent::Type::reset:
      std::cout << "\n[restarting: " << event.reason << "]\n";
      break;
    case dispatch::StreamEvent::Type::gap:
      std::cout << "\n[some chunks were dropped; the final answer is complete]\n";
      break;
  }
}

// 2. Streaming: print chunks as they come; a reset means start over.
int stream(dispatch::Client& client, const std::string& provider) {
  std::cout << "== streaming\n";
  auto request = dispatch::DispatchRequest(provider, model_for(provider),
                                           {dispatch::Message::user("Count to five.")})
                     .with_stream(true);
  try {
    auto response = client.dispatch_stream(request, print_stream_event);
    std::cout << "\n  streamed " << response.usage.completion_tokens << " tokens from "
              << response.provider << "/" << response.model << " (" << response.stream_resets
              << " resets)\n";
    return 0;
  } catch (const dispatch::DispatchError& e) {
    explain(e);
    return 1;
  }
}

// 3. Errors are typed: an unknown model is ModelNotAvailableError, not a generic failure.
int typed_error(dispatch::Client& client, const std::string& provider) {
  std::cout << "== error handling\n";
  try {
    client.dispatch(
        dispatch::DispatchRequest(provider, "no-such-model", {dispatch::Message::user("Hi")})
            .with_no_fallback());
    std::cerr << "  expected an error for no-such-model\n";
    return 1;
  } catch (const dispatch::ModelNotAvailableError& e) {
    std::cout << "  as expected: " << e.what() << "\n";
    return 0;
  } catch (const dispatch::DispatchError& e) {
    explain(e);
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  dispatch::ClientOptions options;
  options.broker_endpoint =
      argc > 1 ? argv[1] : env_or("DISPATCH_BROKER", dispatch::kDefaultBrokerEndpoint);
  const auto providers = split_commas(env_or("DEMO_PROVIDERS", "ollama,openai"));
  if (providers.empty()) {
    std::cerr << "DEMO_PROVIDERS is empty\n";
    return EXIT_FAILURE;
  }
  try {
    dispatch::Client client(options);
    int failures = fan_out(client, providers);
    failures += stream(client, providers.front());
    failures += typed_error(client, providers.front());
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return EXIT_FAILURE;
  }
}
