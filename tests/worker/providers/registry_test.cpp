// A provider type is one adapter plus its registration: this test binary defines a toy adapter
// and registers it, and configuration takes its type, its defaults and its built-in provider
// without any other file knowing about it. Its own binary, because the registry is the
// process's and the other config tests expect exactly the built-in types.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>

#include "dispatch/worker/config.hpp"
#include "dispatch/worker/providers/adapter.hpp"
#include "providers_test_support.hpp"

namespace dispatch::worker {
namespace {

using test::MapEnvironment;

constexpr std::array<std::string_view, 2> kToyBaseUrlEnv = {"TOY_BASE_URL", "TOY_HOST"};

std::string toy_url_from_env(std::string_view value) {
  return "http://" + std::string(value);
}

const AdapterDescriptor kToyDescriptor{
    .type = "toy",
    .default_base_url = "https://api.toy.example/v9",
    .base_url_env = kToyBaseUrlEnv,
    .api_key_env = "TOY_API_KEY",
    .key_required = true,
    .builtin_name = "toybox",
    .default_model = "toy-1",
    .base_url_from_env = &toy_url_from_env,
};

class ToyAdapter final : public Adapter {
 public:
  const AdapterDescriptor& descriptor() const override { return kToyDescriptor; }
  Result<BuiltRequest, Failure> build(const protocol::Request&, const std::string& model, bool,
                                      const ProviderConfig& provider) const override {
    BuiltRequest built;
    built.http.url = provider.base_url + "/chat";
    built.http.body = model;
    return built;
  }
  std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions&, const ProviderConfig&,
                                                const Clock&) const override {
    return nullptr;
  }
};

class RegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { adapter_registry().add(std::make_unique<ToyAdapter>()); }
};

TEST_F(RegistryTest, ConfigAcceptsTheRegisteredTypeWithItsDefaults) {
  MapEnvironment env{{"TOY_API_KEY", " sk-toy "}};
  const WorkerConfig config =
      parse_config("providers:\n  mine: {type: toy}\n", "dispatch.yaml", env);
  const ProviderConfig& mine = config.providers.at("mine");
  EXPECT_EQ(mine.type, "toy");
  EXPECT_EQ(mine.base_url, "https://api.toy.example/v9");
  EXPECT_EQ(mine.api_key_env, "TOY_API_KEY");
  EXPECT_EQ(mine.api_key, "sk-toy");
  EXPECT_EQ(adapter_for_type("toy"), adapter_registry().find("toy"));
}

TEST_F(RegistryTest, ItsBaseUrlVariablesAreReadInOrder) {
  MapEnvironment env{{"TOY_HOST", "toy.local:8080"}};
  WorkerConfig config = parse_config("providers:\n  mine: {type: toy}\n", "dispatch.yaml", env);
  EXPECT_EQ(config.providers.at("mine").base_url, "http://toy.local:8080");
  env.set("TOY_BASE_URL", "first.local");
  config = parse_config("providers:\n  mine: {type: toy}\n", "dispatch.yaml", env);
  EXPECT_EQ(config.providers.at("mine").base_url, "http://first.local");
}

TEST_F(RegistryTest, ItsBuiltInProviderIsServedWhenItsKeyIsSet) {
  EXPECT_EQ(load_config("", MapEnvironment{}).providers.count("toybox"), 0u);
  const WorkerConfig config = load_config("", MapEnvironment{{"TOY_API_KEY", "sk-toy"}});
  ASSERT_EQ(config.providers.count("toybox"), 1u);
  EXPECT_EQ(config.providers.at("toybox").type, "toy");
  // And by its name alone in a config, like the other built-ins.
  const WorkerConfig named = parse_config("providers:\n  toybox: {}\n", "d.yaml", MapEnvironment{});
  EXPECT_EQ(named.providers.at("toybox").type, "toy");
}

TEST_F(RegistryTest, ItsKeyRuleAndDefaultModelAreUsed) {
  const WorkerConfig config =
      parse_config("providers:\n  toybox: {}\n", "dispatch.yaml", MapEnvironment{});
  EXPECT_THAT(config_warnings(config),
              ::testing::ElementsAre(::testing::HasSubstr("TOY_API_KEY is not set")));
  try {
    parse_config("defaults: {fallback_providers: [toybox]}\nproviders:\n  toybox: {}\n",
                 "dispatch.yaml", MapEnvironment{});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("set providers.toybox.fallback_model, e.g. toy-1"));
  }
}

TEST_F(RegistryTest, UnknownTypeErrorsListIt) {
  try {
    parse_config("providers:\n  mine: {type: toys}\n", "dispatch.yaml", MapEnvironment{});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "dispatch.yaml: providers.mine.type: unknown type 'toys' (expected ollama, openai, "
              "openai-compatible, dashscope, anthropic, toy)");
  }
}

TEST_F(RegistryTest, ATypeOrBuiltInNameIsRegisteredOnce) {
  EXPECT_THROW(adapter_registry().add(std::make_unique<ToyAdapter>()), std::logic_error);
  EXPECT_EQ(adapter_registry().types().size(), 6u);
}

}  // namespace
}  // namespace dispatch::worker
