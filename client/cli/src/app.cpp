#include "dispatch/cli/app.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <sstream>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/cli/json_output.hpp"
#include "dispatch/client.hpp"

namespace dispatch::cli {

namespace {

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 success; 1 the job failed (chat) or lines were left incomplete (batch); "
    "2 usage error; 3 broker unreachable; 4 batch output locked by another run.";

struct ChatArgs {
  std::string broker;
  std::string provider;
  std::string model;
  std::vector<std::string> fallbacks;
  bool stream = false;
  double temperature = 0;
  uint32_t max_tokens = 0;
  double top_p = 0;
  std::vector<std::string> stop;
  uint32_t timeout_ms = 0;
  uint32_t retry_count = 0;
  std::string system;
  std::string priority = "interactive";
  bool json = false;
  std::string prompt;
  CLI::Option* temperature_option = nullptr;
  CLI::Option* max_tokens_option = nullptr;
  CLI::Option* top_p_option = nullptr;
  CLI::Option* timeout_option = nullptr;
  CLI::Option* retry_option = nullptr;
  CLI::Option* fallback_option = nullptr;
};

struct BatchArgs {
  std::string broker;
  std::string input;
  std::string output;
  std::size_t concurrency = 64;
  std::string priority = "batch";
};

struct StatusArgs {
  std::string broker;
  bool json = false;
  uint32_t timeout_ms = 3000;
};

int exit_code_for(const DispatchError& error) {
  return error.code() == client_code::broker_unreachable ? exit_code::broker_unreachable
                                                         : exit_code::failed;
}

void print_error(const DispatchError& error, bool json, CliStreams& io) {
  if (json) {
    io.out << dump_line(error_to_json(error)) << "\n";
    io.out.flush();
  } else {
    io.err << "error: " << error.what() << "\n";
    for (const auto& attempt : error.attempts()) {
      io.err << fmt::format("  attempt {}/{}: {}", attempt.provider, attempt.model,
                            attempt.outcome);
      if (attempt.status != 0) io.err << " (status " << attempt.status << ")";
      if (!attempt.message.empty()) io.err << ": " << attempt.message;
      io.err << "\n";
    }
  }
}

void print_answer_tail(const DispatchResponse& response, CliStreams& io) {
  for (const auto& call : response.tool_calls) {
    io.out << fmt::format("[tool call {} {}({})]\n", call.id, call.name, call.arguments);
  }
}

int run_chat(ChatArgs& args, CliStreams io) {
  const auto priority = priority_from_string(args.priority);
  if (!priority) {
    io.err << "error: --priority must be interactive, normal or batch\n";
    return exit_code::usage;
  }
  std::vector<Message> messages;
  if (!args.system.empty()) messages.push_back(Message::system(args.system));
  if (args.prompt == "-") {
    args.prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
  }
  messages.push_back(Message::user(args.prompt));
  DispatchRequest request(args.provider, args.model, std::move(messages));
  request.with_priority(*priority).with_stop(args.stop).with_stream(args.stream);
  if (args.temperature_option->count() != 0) request.with_temperature(args.temperature);
  if (args.max_tokens_option->count() != 0) request.with_max_tokens(args.max_tokens);
  if (args.top_p_option->count() != 0) request.with_top_p(args.top_p);
  if (args.timeout_option->count() != 0) request.with_timeout_ms(args.timeout_ms);
  if (args.retry_option->count() != 0) request.with_retry_count(args.retry_count);
  if (args.fallback_option->count() != 0) {
    // Given at all: exactly this chain. "P/" or "P" alone (no model) adds nothing, so
    // `--fallback ''` means "no fallback" even where the worker config has a default chain.
    std::vector<Target> targets;
    try {
      for (const auto& text : args.fallbacks) {
        if (auto target = parse_optional_target(text)) targets.push_back(std::move(*target));
      }
    } catch (const InvalidTargetError& e) {
      io.err << "error: --fallback: " << e.what() << "\n";
      return exit_code::usage;
    }
    request.with_fallbacks(std::move(targets));
  }

  ClientOptions options;
  options.broker_endpoint = args.broker;
  std::unique_ptr<Client> client;
  try {
    client = std::make_unique<Client>(options);
  } catch (const std::invalid_argument& e) {
    io.err << "error: " << e.what() << "\n";
    return exit_code::usage;
  }

  try {
    if (!args.stream) {
      auto response = client->dispatch(request);
      if (args.json) {
        io.out << dump_line(response_to_json(response)) << "\n";
      } else {
        io.out << response.content;
        if (response.content.empty() || response.content.back() != '\n') io.out << "\n";
        print_answer_tail(response, io);
      }
      io.out.flush();
      return exit_code::ok;
    }

    std::string shown;  // the text printed since the last reset
    bool gap = false;
    auto response = client->dispatch_stream(request, [&](const StreamEvent& event) {
      if (args.json) {
        io.out << dump_line(event_to_json(event)) << "\n";
        io.out.flush();
        return;
      }
      switch (event.type) {
        case StreamEvent::Type::chunk:
          io.out << event.content;
          io.out.flush();
          shown += event.content;
          break;
        case StreamEvent::Type::reset:
          io.out << "\n";
          io.out.flush();
          io.err << "[stream restarted: " << event.reason << "]\n";
          io.err.flush();
          shown.clear();
          gap = false;
          break;
        case StreamEvent::Type::gap:
          io.err << fmt::format("\n[stream gap: chunks {}..{} were dropped]\n", event.expected_seq,
                                event.seq - 1);
          gap = true;
          break;
      }
    });
    if (args.json) {
      io.out << dump_line(response_to_json(response)) << "\n";
    } else {
      // The final response holds the whole answer: finish or repair what was shown.
      if (!gap && response.content.compare(0, shown.size(), shown) == 0) {
        io.out << response.content.substr(shown.size());
      } else {
        io.err << "\n[some chunks were lost; the complete answer follows]\n";
        io.out << "\n" << response.content;
      }
      if (response.content.empty() || response.content.back() != '\n') io.out << "\n";
      print_answer_tail(response, io);
    }
    io.out.flush();
    return exit_code::ok;
  } catch (const DispatchError& e) {
    if (args.stream && !args.json) io.out << "\n";
    print_error(e, args.json, io);
    return exit_code_for(e);
  }
}

int run_status(const StatusArgs& args, CliStreams io) {
  ClientOptions options;
  options.broker_endpoint = args.broker;
  try {
    Client client(options);
    const auto status = client.status(std::chrono::milliseconds(args.timeout_ms));
    if (args.json) {
      io.out << dump_line(status_to_json(status)) << "\n";
    } else {
      io.out << format_status_table(status);
    }
    io.out.flush();
    return exit_code::ok;
  } catch (const DispatchError& e) {
    if (args.json) {
      io.out << dump_line(error_to_json(e)) << "\n";
    } else {
      io.err << "error: " << e.what() << "\n";
    }
    return exit_code::broker_unreachable;
  } catch (const std::invalid_argument& e) {
    io.err << "error: " << e.what() << "\n";
    return exit_code::usage;
  }
}

int run_batch_command(const BatchArgs& args, CliStreams io) {
  const auto priority = priority_from_string(args.priority);
  if (!priority) {
    io.err << "error: --priority must be interactive, normal or batch\n";
    return exit_code::usage;
  }
  BatchOptions options;
  options.input_path = args.input;
  options.output_path = args.output;
  options.concurrency = args.concurrency;
  options.priority = *priority;
  options.client.broker_endpoint = args.broker;
  try {
    return run_batch(options, io.err, io.err_is_tty);
  } catch (const std::invalid_argument& e) {
    io.err << "error: " << e.what() << "\n";
    return exit_code::usage;
  }
}

}  // namespace

std::string default_broker_endpoint() {
  const char* from_env = std::getenv("DISPATCH_BROKER");
  return from_env != nullptr && *from_env != '\0' ? from_env : kDefaultBrokerEndpoint;
}

int run_cli(const std::vector<std::string>& args, CliStreams io) {
  CLI::App app{"dispatch — send chat requests through an LLM Dispatcher broker", "dispatch"};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  const std::string broker_help =
      "Broker frontend endpoint (default $DISPATCH_BROKER or tcp://127.0.0.1:5555)";

  ChatArgs chat;
  chat.broker = default_broker_endpoint();
  auto* chat_cmd = app.add_subcommand("chat", "Ask one question and print the answer");
  chat_cmd->add_option("--broker", chat.broker, broker_help);
  chat_cmd
      ->add_option("--provider", chat.provider, "Provider name (ollama, ali, openai, claude, …)")
      ->required();
  chat_cmd->add_option("--model", chat.model, "Model name at that provider")->required();
  chat.fallback_option =
      chat_cmd
          ->add_option(
              "--fallback", chat.fallbacks,
              "Fallback target provider/model (repeatable; split on the first '/'; an empty model "
              "means no fallback)")
          ->allow_extra_args(false);
  chat_cmd->add_flag("--stream", chat.stream, "Print the answer as it arrives");
  chat.temperature_option = chat_cmd->add_option("--temperature", chat.temperature, "0.0–2.0")
                                ->check(CLI::Range(0.0, 2.0));
  chat.max_tokens_option =
      chat_cmd->add_option("--max-tokens", chat.max_tokens, "Answer length cap");
  chat.top_p_option = chat_cmd->add_option("--top-p", chat.top_p, "Nucleus sampling 0.0–1.0")
                          ->check(CLI::Range(0.0, 1.0));
  chat_cmd->add_option("--stop", chat.stop, "Stop sequence (repeatable)")->allow_extra_args(false);
  chat.timeout_option =
      chat_cmd->add_option("--timeout-ms", chat.timeout_ms, "Total deadline (default 30000)");
  chat.retry_option =
      chat_cmd->add_option("--retry-count", chat.retry_count, "Retries per target (default 3)");
  chat_cmd->add_option("--system", chat.system, "System prompt");
  chat_cmd->add_option("--priority", chat.priority, "interactive (default), normal or batch");
  chat_cmd->add_flag("--json", chat.json, "Print one JSON object (JSON lines with --stream)");
  chat_cmd->add_option("prompt", chat.prompt, "The question ('-' reads stdin)")->required();

  BatchArgs batch;
  batch.broker = default_broker_endpoint();
  auto* batch_cmd = app.add_subcommand("batch", "Run an OpenAI Batch API JSONL file (resumable)");
  batch_cmd->add_option("input", batch.input, "Input JSONL")->required()->check(CLI::ExistingFile);
  batch_cmd->add_option("-o,--output", batch.output, "Output JSONL (appended; resumable)")
      ->required();
  batch_cmd->add_option("--broker", batch.broker, broker_help);
  batch_cmd->add_option("--concurrency", batch.concurrency, "Jobs in flight (default 64)")
      ->check(CLI::Range(1, 100000));
  batch_cmd->add_option("--priority", batch.priority, "batch (default), normal or interactive");

  StatusArgs status;
  status.broker = default_broker_endpoint();
  auto* status_cmd = app.add_subcommand("status", "Show the broker's workers, queue and counters");
  status_cmd->add_option("--broker", status.broker, broker_help);
  status_cmd->add_flag("--json", status.json, "Print one JSON object");
  status_cmd->add_option("--timeout-ms", status.timeout_ms, "How long to wait (default 3000)");

  std::vector<std::string> reversed(args.begin() + (args.empty() ? 0 : 1), args.end());
  std::reverse(reversed.begin(), reversed.end());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp&) {
    io.out << app.help();
    return exit_code::ok;
  } catch (const CLI::CallForAllHelp&) {
    io.out << app.help("", CLI::AppFormatMode::All);
    return exit_code::ok;
  } catch (const CLI::ParseError& e) {
    io.err << "error: " << e.what() << "\n";
    // The failing subcommand's help is the useful one.
    for (auto* sub : app.get_subcommands()) {
      io.err << "run `dispatch " << sub->get_name() << " --help` for usage\n";
    }
    return exit_code::usage;
  }
  if (chat_cmd->parsed()) return run_chat(chat, io);
  if (batch_cmd->parsed()) return run_batch_command(batch, io);
  if (status_cmd->parsed()) return run_status(status, io);
  io.err << app.help();
  return exit_code::usage;
}

}  // namespace dispatch::cli
