#include "dispatch/cli/app.hpp"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/cli/json_output.hpp"
#include "dispatch/client.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/common/trace.hpp"
#include "dispatch/protocol/broker_keys.hpp"

namespace dispatch::cli {

namespace {

constexpr const char* kExitCodesHelp =
    "Exit codes: 0 success; 1 the job failed (chat) or lines were left incomplete (batch), or "
    "keygen refused; 2 usage error; 3 broker unreachable; 4 batch output locked by another "
    "run; 5 the broker refused the connection (CURVE keys).";

// CURVE key files of chat, batch and status; each falls back to its environment variable.
struct KeyArgs {
  std::string broker_key;    // the broker's NAME.key
  std::string curve_secret;  // our own NAME.key_secret
};

struct ChatArgs {
  std::string broker;
  KeyArgs keys;
  std::string provider;
  std::string model;
  // Given at all (`--fallback ''` is one empty element): exactly this chain.
  std::vector<std::string> fallbacks;
  bool stream = false;
  // Unset: not sent, so the worker's default applies.
  std::optional<double> temperature;
  std::optional<uint32_t> max_tokens;
  std::optional<double> top_p;
  std::vector<std::string> stop;
  std::optional<uint32_t> timeout_ms;
  std::optional<uint32_t> retry_count;
  std::string system;
  std::string priority = "interactive";
  std::string traceparent;  // W3C trace context; "" lets the broker start a trace
  bool json = false;
  std::string prompt;
};

struct BatchArgs {
  std::string broker;
  KeyArgs keys;
  std::string input;
  std::string output;
  std::size_t concurrency = 64;
  std::string priority = "batch";
  std::string traceparent;  // W3C trace context every job joins; "": a fresh trace per job
};

struct StatusArgs {
  std::string broker;
  KeyArgs keys;
  bool json = false;
  uint32_t timeout_ms = 3000;
};

int exit_code_for(const DispatchError& error) {
  if (error.code() == client_code::broker_unreachable) return exit_code::broker_unreachable;
  if (is_connection_refusal(error)) return exit_code::refused;
  return exit_code::failed;
}

std::string environment(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  return value != nullptr ? value : "";
}

// The client's options for --broker and the key files (flag, else environment), or the usage
// error: one key alone, an unreadable file, a secret key others may read.
Result<ClientOptions, std::string> client_options(const std::string& broker, const KeyArgs& keys) {
  using namespace dispatch::protocol;
  const std::array<KeyFileCandidate, 2> broker_key{{
      {keys.broker_key, std::string(kBrokerKeyFlag)},
      {environment(kBrokerKeyEnv), std::string(kBrokerKeyEnv)},
  }};
  const std::array<KeyFileCandidate, 2> curve_secret{{
      {keys.curve_secret, std::string(kCurveSecretFlag)},
      {environment(kCurveSecretEnv), std::string(kCurveSecretEnv)},
  }};
  auto loaded = load_broker_keys(broker_key, curve_secret);
  if (!loaded) return fail(std::move(loaded).error());
  ClientOptions options;
  options.broker_endpoint = broker;
  options.broker_public_key = std::move(loaded->broker_public_key);
  options.curve_keys = std::move(loaded->own);
  return options;
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

// "P/M" texts as a fallback chain; "P/" or "P" alone (no model) adds nothing, so that
// `--fallback ''` means "no fallback" even where the worker config has a default chain.
Result<std::vector<Target>, std::string> parse_fallbacks(const std::vector<std::string>& texts) {
  std::vector<Target> targets;
  try {
    for (const auto& text : texts) {
      if (auto target = parse_optional_target(text)) targets.push_back(std::move(*target));
    }
  } catch (const InvalidTargetError& e) {
    return fail(std::string("--fallback: ") + e.what());
  }
  return targets;
}

// The request `dispatch chat` sends, or the usage error that prevents it.
Result<DispatchRequest, std::string> build_chat_request(ChatArgs& args) {
  const auto priority = priority_from_string(args.priority);
  if (!priority) return std::string("--priority must be interactive, normal or batch");
  std::vector<Message> messages;
  if (!args.system.empty()) messages.push_back(Message::system(args.system));
  if (args.prompt == "-") args.prompt.assign(std::istreambuf_iterator<char>(std::cin), {});
  messages.push_back(Message::user(args.prompt));
  DispatchRequest request(args.provider, args.model, std::move(messages));
  request.with_priority(*priority).with_stop(args.stop).with_stream(args.stream);
  if (args.temperature) request.with_temperature(*args.temperature);
  if (args.max_tokens) request.with_max_tokens(*args.max_tokens);
  if (args.top_p) request.with_top_p(*args.top_p);
  if (args.timeout_ms) request.with_timeout_ms(*args.timeout_ms);
  if (args.retry_count) request.with_retry_count(*args.retry_count);
  if (!args.traceparent.empty()) request.with_traceparent(args.traceparent);
  if (!args.fallbacks.empty()) {
    auto targets = parse_fallbacks(args.fallbacks);
    if (!targets) return std::move(targets).error();
    request.with_fallbacks(std::move(targets).value());
  }
  return request;
}

void print_answer(const DispatchResponse& response, bool json, CliStreams& io) {
  if (json) {
    io.out << dump_line(response_to_json(response)) << "\n";
  } else {
    io.out << response.content;
    if (response.content.empty() || response.content.back() != '\n') io.out << "\n";
    print_answer_tail(response, io);
  }
  io.out.flush();
}

// Prints a streamed answer as it arrives, then finishes or repairs it from the final response.
class StreamPrinter {
 public:
  StreamPrinter(bool json, CliStreams& io) : json_(json), io_(io) {}

  void on_event(const StreamEvent& event) {
    if (json_) {
      io_.out << dump_line(event_to_json(event)) << "\n";
      io_.out.flush();
      return;
    }
    switch (event.type) {
      case StreamEvent::Type::chunk:
        io_.out << event.content;
        io_.out.flush();
        shown_ += event.content;
        break;
      case StreamEvent::Type::reset:
        io_.out << "\n";
        io_.out.flush();
        io_.err << "[stream restarted: " << event.reason << "]\n";
        io_.err.flush();
        shown_.clear();
        gap_ = false;
        break;
      case StreamEvent::Type::gap:
        io_.err << fmt::format("\n[stream gap: chunks {}..{} were dropped]\n", event.expected_seq,
                               event.seq - 1);
        gap_ = true;
        break;
    }
  }

  // The final response holds the whole answer: print what the chunks did not.
  void finish(const DispatchResponse& response) {
    if (json_) {
      io_.out << dump_line(response_to_json(response)) << "\n";
    } else {
      if (!gap_ && response.content.compare(0, shown_.size(), shown_) == 0) {
        io_.out << response.content.substr(shown_.size());
      } else {
        io_.err << "\n[some chunks were lost; the complete answer follows]\n";
        io_.out << "\n" << response.content;
      }
      if (response.content.empty() || response.content.back() != '\n') io_.out << "\n";
      print_answer_tail(response, io_);
    }
    io_.out.flush();
  }

 private:
  bool json_;
  CliStreams& io_;
  std::string shown_;  // the text printed since the last reset
  bool gap_ = false;
};

int run_chat(ChatArgs& args, CliStreams io) {
  auto request = build_chat_request(args);
  if (!request) {
    io.err << "error: " << request.error() << "\n";
    return exit_code::usage;
  }
  auto options = client_options(args.broker, args.keys);
  if (!options) {
    io.err << "error: " << options.error() << "\n";
    return exit_code::usage;
  }
  std::unique_ptr<Client> client;
  try {
    client = std::make_unique<Client>(*options);
  } catch (const std::invalid_argument& e) {
    io.err << "error: " << e.what() << "\n";
    return exit_code::usage;
  }
  try {
    if (!args.stream) {
      print_answer(client->dispatch(*request), args.json, io);
      return exit_code::ok;
    }
    StreamPrinter printer(args.json, io);
    auto response =
        client->dispatch_stream(*request, [&](const StreamEvent& e) { printer.on_event(e); });
    printer.finish(response);
    return exit_code::ok;
  } catch (const DispatchError& e) {
    if (args.stream && !args.json) io.out << "\n";
    print_error(e, args.json, io);
    return exit_code_for(e);
  }
}

int run_status(const StatusArgs& args, CliStreams io) {
  auto options = client_options(args.broker, args.keys);
  if (!options) {
    io.err << "error: " << options.error() << "\n";
    return exit_code::usage;
  }
  try {
    Client client(*options);
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
    return is_connection_refusal(e) ? exit_code::refused : exit_code::broker_unreachable;
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
  auto client = client_options(args.broker, args.keys);
  if (!client) {
    io.err << "error: " << client.error() << "\n";
    return exit_code::usage;
  }
  BatchOptions options;
  options.input_path = args.input;
  options.output_path = args.output;
  options.concurrency = args.concurrency;
  options.priority = *priority;
  options.traceparent = args.traceparent;
  options.client = std::move(*client);
  try {
    return run_batch(options, io.err, io.err_is_tty);
  } catch (const std::invalid_argument& e) {
    io.err << "error: " << e.what() << "\n";
    return exit_code::usage;
  }
}

// `dispatch keygen DIR/NAME`: a new CURVE key pair in ZeroMQ's certificate files.
int run_keygen(const std::string& path_base, CliStreams io) {
  namespace fs = std::filesystem;
  const fs::path base(path_base);
  const std::string name = base.filename().string();
  if (name.empty() || name == "." || name == "..") {
    io.err << "error: keygen: give DIR/NAME (it writes NAME.key and NAME.key_secret in DIR)\n";
    return exit_code::usage;
  }
  if (name.ends_with(protocol::kPublicCertificateSuffix) ||
      name.ends_with(protocol::kSecretCertificateSuffix)) {
    io.err << "error: keygen: give the name without .key or .key_secret\n";
    return exit_code::usage;
  }
  std::error_code ec;
  if (base.has_parent_path()) fs::create_directories(base.parent_path(), ec);
  if (ec) {
    io.err << "error: " << base.parent_path().string() << ": cannot create: " << ec.message()
           << "\n";
    return exit_code::failed;
  }
  auto keys = protocol::generate_curve_keys();
  if (!keys) {
    io.err << "error: " << keys.error() << "\n";
    return exit_code::failed;
  }
  if (auto saved = protocol::save_certificate(path_base, *keys); !saved) {
    io.err << "error: " << saved.error() << "\n";
    return exit_code::failed;
  }
  io.out << "wrote " << path_base << protocol::kPublicCertificateSuffix
         << " (public: copy it to the broker's allow-list directory, or to peers)\n"
         << "wrote " << path_base << protocol::kSecretCertificateSuffix
         << " (secret, mode 0600: keep it on this host)\n"
         << "public key: " << keys->public_key << "\n";
  io.out.flush();
  return exit_code::ok;
}

}  // namespace

std::string default_broker_endpoint() {
  const char* from_env = std::getenv("DISPATCH_BROKER");
  return from_env != nullptr && *from_env != '\0' ? from_env : kDefaultBrokerEndpoint;
}

namespace {

const char* const kBrokerHelp =
    "Broker frontend endpoint (default $DISPATCH_BROKER or tcp://127.0.0.1:5555)";

void add_key_options(CLI::App* cmd, KeyArgs& keys) {
  cmd->add_option("--broker-key", keys.broker_key,
                  "CURVE: the broker's public key file NAME.key (default $DISPATCH_BROKER_KEY)");
  cmd->add_option("--curve-secret", keys.curve_secret,
                  "CURVE: this client's secret key file NAME.key_secret, mode 0600 (default "
                  "$DISPATCH_CURVE_SECRET)");
}

// --traceparent of chat and batch: refused before anything is sent (exit 2).
CLI::Validator traceparent_validator() {
  return CLI::Validator(
      [](const std::string& value) -> std::string {
        auto parsed = parse_traceparent(value);
        return parsed ? std::string() : "invalid traceparent: " + parsed.error().message;
      },
      "TRACEPARENT");
}

CLI::App* add_chat_command(CLI::App& app, ChatArgs& chat) {
  chat.broker = default_broker_endpoint();
  auto* cmd = app.add_subcommand("chat", "Ask one question and print the answer");
  cmd->add_option("--broker", chat.broker, kBrokerHelp);
  add_key_options(cmd, chat.keys);
  cmd->add_option("--provider", chat.provider, "Provider name (ollama, ali, openai, claude, …)")
      ->required();
  cmd->add_option("--model", chat.model, "Model name at that provider")->required();
  cmd->add_option("--fallback", chat.fallbacks,
                  "Fallback target provider/model (repeatable; split on the first '/'; an empty "
                  "model means no fallback)")
      ->allow_extra_args(false);
  cmd->add_flag("--stream", chat.stream, "Print the answer as it arrives");
  cmd->add_option("--temperature", chat.temperature, "0.0–2.0")->check(CLI::Range(0.0, 2.0));
  cmd->add_option("--max-tokens", chat.max_tokens, "Answer length cap");
  cmd->add_option("--top-p", chat.top_p, "Nucleus sampling 0.0–1.0")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--stop", chat.stop, "Stop sequence (repeatable)")->allow_extra_args(false);
  cmd->add_option("--timeout-ms", chat.timeout_ms, "Total deadline (default 30000)");
  cmd->add_option("--retry-count", chat.retry_count, "Retries per target (default 3)");
  cmd->add_option("--system", chat.system, "System prompt");
  cmd->add_option("--priority", chat.priority, "interactive (default), normal or batch");
  cmd->add_option("--traceparent", chat.traceparent,
                  "W3C trace context 00-<trace id>-<parent id>-<flags> the job joins (sent on to "
                  "the provider; its trace id is in the broker's and worker's log lines)")
      ->check(traceparent_validator());
  cmd->add_flag("--json", chat.json, "Print one JSON object (JSON lines with --stream)");
  cmd->add_option("prompt", chat.prompt, "The question ('-' reads stdin)")->required();
  return cmd;
}

CLI::App* add_batch_command(CLI::App& app, BatchArgs& batch) {
  batch.broker = default_broker_endpoint();
  auto* cmd = app.add_subcommand("batch", "Run an OpenAI Batch API JSONL file (resumable)");
  cmd->add_option("input", batch.input, "Input JSONL")->required()->check(CLI::ExistingFile);
  cmd->add_option("-o,--output", batch.output, "Output JSONL (appended; resumable)")->required();
  cmd->add_option("--broker", batch.broker, kBrokerHelp);
  add_key_options(cmd, batch.keys);
  cmd->add_option("--concurrency", batch.concurrency, "Jobs in flight (default 64)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--priority", batch.priority, "batch (default), normal or interactive");
  cmd->add_option("--traceparent", batch.traceparent,
                  "W3C trace context every job of the run joins (each job a span of its own at "
                  "its worker); without it each job gets a fresh trace")
      ->check(traceparent_validator());
  return cmd;
}

CLI::App* add_status_command(CLI::App& app, StatusArgs& status) {
  status.broker = default_broker_endpoint();
  auto* cmd = app.add_subcommand("status", "Show the broker's workers, queue and counters");
  cmd->add_option("--broker", status.broker, kBrokerHelp);
  add_key_options(cmd, status.keys);
  cmd->add_flag("--json", status.json, "Print one JSON object");
  cmd->add_option("--timeout-ms", status.timeout_ms, "How long to wait (default 3000)");
  return cmd;
}

CLI::App* add_keygen_command(CLI::App& app, std::string& path_base) {
  auto* cmd = app.add_subcommand(
      "keygen", "Write a new CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret");
  cmd->add_option("path", path_base, "DIR/NAME")->required();
  return cmd;
}

// Parses args[1..]; an exit code when there is nothing to run (help, or a usage error).
std::optional<int> parse_command_line(CLI::App& app, const std::vector<std::string>& args,
                                      CliStreams& io) {
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
  return std::nullopt;
}

}  // namespace

int run_cli(const std::vector<std::string>& args, CliStreams io) {
  CLI::App app{"dispatch — send chat requests through an LLM Dispatcher broker; make CURVE keys",
               "dispatch"};
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);
  ChatArgs chat;
  BatchArgs batch;
  StatusArgs status;
  auto* chat_cmd = add_chat_command(app, chat);
  auto* batch_cmd = add_batch_command(app, batch);
  auto* status_cmd = add_status_command(app, status);
  std::string keygen_path;
  auto* keygen_cmd = add_keygen_command(app, keygen_path);
  if (auto done = parse_command_line(app, args, io)) return *done;
  if (chat_cmd->parsed()) return run_chat(chat, io);
  if (batch_cmd->parsed()) return run_batch_command(batch, io);
  if (status_cmd->parsed()) return run_status(status, io);
  if (keygen_cmd->parsed()) return run_keygen(keygen_path, io);
  io.err << app.help();
  return exit_code::usage;
}

}  // namespace dispatch::cli
