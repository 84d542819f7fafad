// The basic call from the guide: ask Ollama's llama3.2 one question, print the answer and the
// token usage.
//
//   simple_dispatcher_demo [BROKER_ENDPOINT]      (default $DISPATCH_BROKER or
//                                                  tcp://127.0.0.1:5555)

#include <cstdlib>
#include <iostream>

#include "dispatch/client.hpp"

int main(int argc, char** argv) {
  const char* from_env = std::getenv("DISPATCH_BROKER");
  dispatch::ClientOptions options;
  options.broker_endpoint =
      argc > 1 ? argv[1] : (from_env != nullptr ? from_env : "tcp://127.0.0.1:5555");

  try {
    dispatch::Client client(options);

    auto request = dispatch::DispatchRequest(dispatch::Provider::ollama, "llama3.2",
                                             {dispatch::Message::user("Hello, how are you?")})
                       .with_temperature(0.7)
                       .with_max_tokens(1000);

    dispatch::DispatchResponse response = client.dispatch(request);

    std::cout << "Response: " << response.content << "\n";
    std::cout << "Answered by " << response.provider << "/" << response.model << "\n";
    std::cout << "Usage: prompt_tokens=" << response.usage.prompt_tokens
              << " completion_tokens=" << response.usage.completion_tokens
              << " total_tokens=" << response.usage.total_tokens << "\n";
    return EXIT_SUCCESS;
  } catch (const dispatch::DispatchError& e) {
    std::cerr << "dispatch failed: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return EXIT_FAILURE;
}
