#include "dispatch/formats/models.hpp"

#include <gtest/gtest.h>

#include "dispatch/formats/chat_request.hpp"

namespace dispatch::formats {
namespace {

using protocol::Target;

ModelCatalog catalog() {
  ModelCatalog c;
  c.aliases["gpt-4o"] = ModelAlias{Target{"openai", "gpt-4o"},
                                   std::vector<Target>{{"claude", "claude-sonnet-4-5"}}, 9000};
  c.aliases["team/fast"] = ModelAlias{Target{"ollama", "llama3.2"}, std::nullopt, std::nullopt};
  return c;
}

TEST(ResolveModelTest, AliasThenProviderSlashModelThenDefaultProvider) {
  auto c = catalog();
  auto alias = resolve_model("gpt-4o", c);
  ASSERT_TRUE(alias.ok());
  EXPECT_EQ(alias->target, (Target{"openai", "gpt-4o"}));
  EXPECT_EQ(alias->alias, "gpt-4o");
  EXPECT_EQ(alias->timeout_ms, 9000u);
  ASSERT_TRUE(alias->fallbacks.has_value());
  EXPECT_EQ(alias->fallbacks->at(0), (Target{"claude", "claude-sonnet-4-5"}));

  // An alias may contain '/': aliases are looked up first.
  EXPECT_EQ(resolve_model("team/fast", c)->target, (Target{"ollama", "llama3.2"}));
  // Split on the first '/': model names may contain '/'.
  EXPECT_EQ(resolve_model("openai-compatible/meta-llama/Llama-3-8B", c)->target,
            (Target{"openai-compatible", "meta-llama/Llama-3-8B"}));
  EXPECT_EQ(resolve_model("openai-compatible/meta-llama/Llama-3-8B", c)->label(),
            "openai-compatible/meta-llama/Llama-3-8B");

  auto unknown = resolve_model("llama3.2", c);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().status, 404);
  EXPECT_EQ(unknown.error().code, "model_not_found");
  EXPECT_EQ(unknown.error().param, "model");
  c.default_provider = "ollama";
  EXPECT_EQ(resolve_model("llama3.2", c)->target, (Target{"ollama", "llama3.2"}));
}

TEST(ResolveModelTest, MalformedTargetsAre400s) {
  const auto c = catalog();
  for (const char* bad : {"/gpt-4o", "openai/", ""}) {
    auto error = resolve_model(bad, c);
    ASSERT_FALSE(error.ok()) << bad;
    EXPECT_EQ(error.error().status, 400) << bad;
    EXPECT_EQ(error.error().param, "model");
  }
  EXPECT_NE(resolve_model("/gpt-4o", c).error().message.find("empty provider"), std::string::npos);
}

TEST(ResolveTargetsTest, BodyFallbacksAndTimeoutWinOverTheAlias) {
  const auto c = catalog();
  ChatRequest chat;
  chat.model = "gpt-4o";
  ASSERT_TRUE(resolve_targets(chat, c).ok());
  EXPECT_EQ(chat.request.provider, "openai");
  EXPECT_EQ(chat.request.model, "gpt-4o");
  EXPECT_EQ(chat.request.timeout_ms, 9000u);
  EXPECT_EQ(chat.request.fallbacks, (std::vector<Target>{{"claude", "claude-sonnet-4-5"}}));

  ChatRequest own;
  own.model = "gpt-4o";
  own.request.timeout_ms = 100;
  own.fallbacks = std::vector<std::string>{"team/fast", "", "ali/qwen-plus"};
  ASSERT_TRUE(resolve_targets(own, c).ok());
  EXPECT_EQ(own.request.timeout_ms, 100u);
  EXPECT_EQ(own.request.fallbacks,
            (std::vector<Target>{{"ollama", "llama3.2"}, {"ali", "qwen-plus"}}));

  ChatRequest none;
  none.model = "openai/gpt-4o";
  none.fallbacks = std::vector<std::string>{};
  ASSERT_TRUE(resolve_targets(none, c).ok());
  EXPECT_EQ(none.request.fallbacks, std::vector<Target>{});  // present and empty: no fallback

  ChatRequest bad;
  bad.model = "openai/gpt-4o";
  bad.fallbacks = std::vector<std::string>{"ali/qwen", "qwen"};
  auto error = resolve_targets(bad, c);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.error().param, "fallbacks[1]");
  EXPECT_EQ(error.error().status, 404);
}

}  // namespace
}  // namespace dispatch::formats
