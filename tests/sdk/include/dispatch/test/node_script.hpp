#pragma once

// Runs a Node.js script from tests/sdk (where the official provider SDKs are pinned and
// installed) as a child process with a bounded wait, collecting everything it printed — so a
// C++ test can drive a server through the SDKs and show the script's output when it fails.
//
//   const auto run = dispatch::test::run_sdk_script("openai.mjs", {fake.host_url()});
//   EXPECT_TRUE(run.passed()) << run.describe();
//
// Nothing here skips: a missing node or an uninstalled node_modules is a failed run whose
// output says what to do.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"

namespace dispatch::test {

struct NodeScriptRun {
  std::vector<std::string> argv;     // as started
  std::optional<ExitStatus> status;  // nullopt: it did not start or did not end in time
  bool timed_out = false;
  std::string output;   // stdout, then stderr under a marker
  std::string problem;  // why it could not run (no node, SDKs not installed), else empty

  bool passed() const { return problem.empty() && !timed_out && status && status->success(); }
  // One paragraph for a failed assertion: command, how it ended, what it printed.
  std::string describe() const;
};

// The tests/sdk directory (absolute).
std::string sdk_dir();

// The `node` executable found on PATH, if any.
std::optional<std::string> find_node();

// Runs `node <sdk_dir>/<script> <args...>` with the provider SDKs' environment variables
// (API keys, base URLs, OLLAMA_HOST) removed so only the arguments decide where it goes. Stops
// it (SIGTERM, then SIGKILL) when it has not finished within `timeout`.
NodeScriptRun run_sdk_script(const std::string& script, const std::vector<std::string>& args,
                             std::chrono::milliseconds timeout = std::chrono::seconds(120));

// As run_sdk_script for any script path, with node_modules checked under `sdk_dir()` only.
NodeScriptRun run_node_script(const std::string& script_path, const std::vector<std::string>& args,
                              std::chrono::milliseconds timeout);

}  // namespace dispatch::test
