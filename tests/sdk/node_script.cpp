#include "dispatch/test/node_script.hpp"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dispatch::test {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

// Every variable the three SDKs read to pick a key or a server: the test's arguments decide.
const std::vector<std::string>& sdk_environment() {
  static const std::vector<std::string> names{
      "OPENAI_API_KEY",     "OPENAI_BASE_URL",   "OPENAI_ORG_ID",
      "OPENAI_PROJECT_ID",  "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
      "ANTHROPIC_BASE_URL", "OLLAMA_HOST",       "NODE_OPTIONS"};
  return names;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The stamp tests/sdk/install writes after a successful `npm ci`.
constexpr const char* kStamp = "node_modules/.dispatch-install-stamp";

}  // namespace

std::string NodeScriptRun::describe() const {
  std::ostringstream out;
  out << "command:";
  for (const auto& a : argv) out << ' ' << a;
  out << '\n';
  if (!problem.empty()) {
    out << "could not run: " << problem << '\n';
  } else if (timed_out) {
    out << "did not finish in time (stopped)\n";
  } else if (status && status->exited) {
    out << "exit code " << status->code << '\n';
  } else if (status && status->signaled) {
    out << "killed by signal " << status->signal << '\n';
  }
  out << "---- output ----\n" << output;
  return out.str();
}

std::string sdk_dir() {
  return DISPATCH_SDK_DIR;
}

std::optional<std::string> find_node() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  // Bounded by the PATH's length: each step consumes one entry.
  while (!dirs.empty()) {
    const size_t colon = dirs.find(':');
    const std::string_view dir = dirs.substr(0, colon);
    dirs = colon == std::string_view::npos ? std::string_view{} : dirs.substr(colon + 1);
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / "node";
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return std::nullopt;
}

NodeScriptRun run_node_script(const std::string& script_path, const std::vector<std::string>& args,
                              std::chrono::milliseconds timeout) {
  NodeScriptRun run;
  const std::optional<std::string> node = find_node();
  run.argv.push_back(node.value_or("node"));
  run.argv.push_back(script_path);
  run.argv.insert(run.argv.end(), args.begin(), args.end());
  if (!node) {
    run.problem = "node is not on PATH; scripts/setup installs Debian's nodejs and npm";
    return run;
  }
  if (!fs::exists(fs::path(sdk_dir()) / kStamp)) {
    run.problem =
        "the SDKs are not installed: run tests/sdk/install (ctest runs it first, as "
        "the sdk_install fixture)";
    return run;
  }

  static std::atomic<int> counter{0};
  const fs::path stderr_path =
      fs::temp_directory_path() / ("dispatch-node-" + std::to_string(getpid()) + "-" +
                                   std::to_string(counter.fetch_add(1)) + ".stderr");
  ChildOptions options;
  options.unset_env = sdk_environment();
  options.stderr_path = stderr_path.string();
  ChildProcess child = ChildProcess::spawn(run.argv, options);

  const auto deadline = SteadyClock::now() + timeout;
  const auto left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
  };
  // Bounded by the deadline: every read waits at most the time left.
  for (;;) {
    if (left().count() <= 0) {
      run.timed_out = true;
      break;
    }
    if (std::optional<std::string> line = child.read_line(left())) {
      run.output += *line + '\n';
      continue;
    }
    if (left().count() <= 0) {
      run.timed_out = true;
      break;
    }
    // stdout closed: the script is ending.
    run.status = child.wait_for_exit(std::max(left(), std::chrono::milliseconds(1)));
    run.timed_out = !run.status.has_value();
    break;
  }
  if (run.timed_out) child.kill();  // a script that hangs has no clean stop to ask for
  const std::string errors = read_file(stderr_path);
  std::error_code ignored;
  fs::remove(stderr_path, ignored);
  if (!errors.empty()) run.output += "---- stderr ----\n" + errors;
  return run;
}

NodeScriptRun run_sdk_script(const std::string& script, const std::vector<std::string>& args,
                             std::chrono::milliseconds timeout) {
  return run_node_script((fs::path(sdk_dir()) / script).string(), args, timeout);
}

}  // namespace dispatch::test
