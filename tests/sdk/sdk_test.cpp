// The official provider SDKs (tests/sdk/*.mjs, node:test) against a fake-provider started here
// on an ephemeral port and stopped by PID: what users of those SDKs see must be what the real
// services give them (typed errors, streams, tools, thinking, listings).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "dispatch/test/fake_provider_process.hpp"
#include "dispatch/test/node_script.hpp"

namespace dispatch::test {
namespace {

// One fake provider per script, so logs and fail_first counters start from zero.
void run_against_fake(const std::string& script, const std::vector<std::string>& fake_args = {}) {
  FakeProviderProcess fake(FAKE_PROVIDER_BINARY, fake_args);
  const NodeScriptRun run = run_sdk_script(script, {fake.host_url()});
  EXPECT_TRUE(run.passed()) << run.describe();
  EXPECT_TRUE(fake.process().stop().success()) << "fake-provider did not exit 0";
}

TEST(Sdk, OpenAi) {
  run_against_fake("openai.mjs");
}

TEST(Sdk, Anthropic) {
  run_against_fake("anthropic.mjs");
}

TEST(Sdk, Ollama) {
  run_against_fake("ollama.mjs");
}

TEST(Sdk, QuotasSeenThroughTheSdks) {
  run_against_fake("quota.mjs", {"--limit-rpm", "1", "--limit-tpm", "100000"});
}

// The harness itself must be able to fail: a failing assertion, a usage error and a script that
// never ends are each reported, with what the script printed.
class NodeScriptHarness : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dispatch-sdk-harness-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string script(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }
  std::filesystem::path dir_;
};

TEST_F(NodeScriptHarness, AFailingAssertionFailsTheRun) {
  const auto run = run_node_script(script("fails.mjs", R"(
import assert from 'node:assert/strict';
import { test } from 'node:test';
test('one plus one', () => { assert.equal(1 + 1, 3, 'arithmetic is broken'); });
)"),
                                   {}, std::chrono::seconds(60));
  EXPECT_FALSE(run.passed());
  ASSERT_TRUE(run.status.has_value()) << run.describe();
  EXPECT_NE(run.status->code, 0);
  EXPECT_NE(run.output.find("arithmetic is broken"), std::string::npos) << run.output;
}

TEST_F(NodeScriptHarness, ScriptsWithoutTheirArgumentExitTwo) {
  const auto run = run_sdk_script("openai.mjs", {}, std::chrono::seconds(60));
  ASSERT_TRUE(run.status.has_value()) << run.describe();
  EXPECT_EQ(run.status->code, 2);
  EXPECT_NE(run.output.find("usage: node"), std::string::npos) << run.output;
}

TEST_F(NodeScriptHarness, AScriptThatNeverEndsIsStopped) {
  const auto run = run_node_script(script("hangs.mjs",
                                          "console.log('started');\n"
                                          "setInterval(() => {}, 1000);\n"),
                                   {}, std::chrono::milliseconds(1500));
  EXPECT_FALSE(run.passed());
  EXPECT_TRUE(run.timed_out) << run.describe();
  EXPECT_NE(run.output.find("started"), std::string::npos) << run.output;
}

TEST_F(NodeScriptHarness, TheSdksAreTheOnesPinned) {
  const auto run = run_node_script(script("versions.mjs", R"(
import { readFileSync } from 'node:fs';
for (const name of ['openai', '@anthropic-ai/sdk', 'ollama']) {
  const manifest = `${process.argv[2]}/node_modules/${name}/package.json`;
  console.log(name + ' ' + JSON.parse(readFileSync(manifest, 'utf8')).version);
}
)"),
                                   {sdk_dir()}, std::chrono::seconds(60));
  ASSERT_TRUE(run.passed()) << run.describe();
  std::ifstream package_json(sdk_dir() + "/package.json");
  const std::string manifest((std::istreambuf_iterator<char>(package_json)), {});
  // Every installed version is the exact one package.json pins.
  std::istringstream lines(run.output);
  std::string line;
  int seen = 0;
  while (std::getline(lines, line)) {
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string pin = "\"" + line.substr(0, space) + "\": \"" + line.substr(space + 1) + "\"";
    EXPECT_NE(manifest.find(pin), std::string::npos) << pin << " not in package.json";
    ++seen;
  }
  EXPECT_EQ(seen, 3) << run.output;
}

}  // namespace
}  // namespace dispatch::test
