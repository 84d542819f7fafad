// Ollama conformance: POST /api/chat (NDJSON streaming by default), GET /api/tags.

#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

class Ollama : public FakeProviderTest {};

std::vector<json> ndjson(const std::string& body) {
  std::vector<json> out;
  for (const auto& line : split_lines(body)) out.push_back(json::parse(line, nullptr, false));
  return out;
}

// 2024-05-01T12:34:56.123456789Z (std::regex trips GCC 12 warnings under the sanitizers).
bool is_rfc3339_nanos(const std::string& text) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.dddddddddZ";
  if (text.size() != shape.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const bool ok = shape[i] == 'd' ? (text[i] >= '0' && text[i] <= '9') : text[i] == shape[i];
    if (!ok) return false;
  }
  return true;
}

TEST_F(Ollama, NonStreamedReply) {
  const json body{{"model", "llama3.2"},
                  {"stream", false},
                  {"messages", {{{"role", "system"}, {"content", "sys"}}, user("hello you")}}};
  const HttpResult r = ollama(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  const json j = r.json_body();
  EXPECT_EQ(j["model"], "llama3.2");
  EXPECT_TRUE(is_rfc3339_nanos(j["created_at"].get<std::string>())) << j["created_at"];
  EXPECT_EQ(j["message"], (json{{"role", "assistant"},
                                {"content", "reply to: hello you lorem ipsum dolor sit"}}));
  EXPECT_EQ(j["done"], true);
  EXPECT_EQ(j["done_reason"], "stop");
  EXPECT_EQ(j["prompt_eval_count"], 3);
  EXPECT_EQ(j["eval_count"], 8);
  for (const char* field :
       {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}) {
    EXPECT_TRUE(j[field].is_number_integer()) << field;
    EXPECT_GT(j[field].get<int64_t>(), 0) << field;
  }
  EXPECT_GE(j["total_duration"].get<int64_t>(), j["load_duration"].get<int64_t>() +
                                                    j["prompt_eval_duration"].get<int64_t>() +
                                                    j["eval_duration"].get<int64_t>());
}

TEST_F(Ollama, StreamsByDefault) {
  const json body{{"model", "llama3.2~tokens=3~chunk_delay_ms=20"}, {"messages", {user("yo")}}};
  const HttpResult r = ollama(body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "application/x-ndjson");
  const auto lines = ndjson(r.body);
  ASSERT_EQ(lines.size(), 4u) << r.body;
  const std::vector<std::string> words{"reply ", "to: ", "yo"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["done"], false);
    EXPECT_EQ(lines[i]["message"]["content"], words[i]);
    EXPECT_FALSE(lines[i].contains("eval_count"));
    EXPECT_TRUE(is_rfc3339_nanos(lines[i]["created_at"].get<std::string>()));
  }
  const json& last = lines.back();
  EXPECT_EQ(last["done"], true);
  EXPECT_EQ(last["done_reason"], "stop");
  EXPECT_EQ(last["message"]["content"], "");
  EXPECT_EQ(last["eval_count"], 3);
  EXPECT_EQ(last["prompt_eval_count"], 1);
  // Three 20 ms gaps were measured: durations are nanoseconds.
  EXPECT_GE(last["total_duration"].get<int64_t>(), 40'000'000);
}

TEST_F(Ollama, ThinkingLinesComeFirst) {
  const json body{{"model", "qwen3~tokens=2"}, {"think", true}, {"messages", {user("hm")}}};
  const auto lines = ndjson(ollama(body).body);
  ASSERT_GE(lines.size(), 4u);
  EXPECT_TRUE(lines[0]["message"].contains("thinking"));
  EXPECT_EQ(lines[0]["message"]["content"], "");
  std::string thinking;
  std::string content;
  for (const auto& l : lines) {
    thinking += l["message"].value("thinking", "");
    content += l["message"]["content"].get<std::string>();
  }
  EXPECT_FALSE(thinking.empty());
  EXPECT_EQ(content, "reply to:");
  const json whole = ollama({{"model", "qwen3~tokens=2"},
                             {"think", true},
                             {"stream", false},
                             {"messages", {user("hm")}}})
                         .json_body();
  EXPECT_EQ(whole["message"]["thinking"], thinking);
}

TEST_F(Ollama, ToolCallsHaveObjectArgumentsInOneLine) {
  const json tools{
      {{"type", "function"},
       {"function",
        {{"name", "get_time"},
         {"parameters", {{"type", "object"}, {"properties", {{"zone", {{"type", "string"}}}}}}}}}}};
  const json body{
      {"model", "llama3.2"}, {"messages", {user("get_time in Paris")}}, {"tools", tools}};
  const auto lines = ndjson(ollama(body).body);
  ASSERT_EQ(lines.size(), 2u);
  const json& call = lines[0]["message"]["tool_calls"][0];
  EXPECT_EQ(call["function"]["name"], "get_time");
  EXPECT_EQ(call["function"]["arguments"], (json{{"zone", "fake-zone"}}));
  EXPECT_TRUE(call["function"]["arguments"].is_object());
  EXPECT_EQ(lines[1]["done_reason"], "stop");

  json whole = body;
  whole["stream"] = false;
  const json j = ollama(whole).json_body();
  EXPECT_TRUE(j["message"]["tool_calls"][0]["function"]["arguments"].is_object());
  EXPECT_EQ(j["done_reason"], "stop");
}

TEST_F(Ollama, ToolResultReply) {
  const json messages{
      user("time?"),
      {{"role", "assistant"},
       {"content", ""},
       {"tool_calls", {{{"function", {{"name", "get_time"}, {"arguments", {{"zone", "UTC"}}}}}}}}},
      {{"role", "tool"}, {"content", "noon"}, {"tool_name", "get_time"}}};
  const json j =
      ollama({{"model", "m~tokens=3"}, {"stream", false}, {"messages", messages}}).json_body();
  EXPECT_EQ(j["message"]["content"], "tool result: noon");
}

TEST_F(Ollama, ImagesMustBeRawBase64) {
  json message = user("see");
  message["images"] = {"iVBORw0KGgo=", "R0lGODlh"};
  json j =
      ollama({{"model", "llava~tokens=5"}, {"stream", false}, {"messages", {message}}}).json_body();
  EXPECT_EQ(j["message"]["content"], "[2 images] reply to: see");

  message["images"] = {"data:image/png;base64,iVBORw0KGgo="};
  const HttpResult r = ollama({{"model", "llava"}, {"stream", false}, {"messages", {message}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json_body(), (json{{"error", "illegal base64 data at input byte 4"}}));
}

TEST_F(Ollama, OptionsLimitAndStop) {
  json j = ollama({{"model", "m"},
                   {"stream", false},
                   {"options", {{"num_predict", 2}}},
                   {"messages", {user("a")}}})
               .json_body();
  EXPECT_EQ(j["message"]["content"], "reply to:");
  EXPECT_EQ(j["done_reason"], "length");
  EXPECT_EQ(j["eval_count"], 2);
  j = ollama({{"model", "m"},
              {"stream", false},
              {"options", {{"num_predict", -1}, {"stop", {"b"}}}},
              {"messages", {user("a b")}}})
          .json_body();
  EXPECT_EQ(j["message"]["content"], "reply to: a ");
  EXPECT_EQ(j["done_reason"], "stop");
}

TEST_F(Ollama, Validation) {
  HttpResult r = ollama({{"messages", {user("x")}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json_body(), (json{{"error", "model is required"}}));

  const json bad_call{
      {"role", "assistant"},
      {"content", ""},
      {"tool_calls", {{{"function", {{"name", "f"}, {"arguments", "{\"a\":1}"}}}}}}};
  r = ollama({{"model", "m"}, {"messages", {user("x"), bad_call}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json_body()["error"].get<std::string>().find("cannot unmarshal string"),
            std::string::npos);

  r = ollama(
      {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", {{{"type", "text"}}}}}}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json_body()["error"].get<std::string>().find("cannot unmarshal array"),
            std::string::npos);
}

TEST_F(Ollama, NoMessagesLoadsTheModel) {
  const json j = ollama({{"model", "m"}, {"stream", false}}).json_body();
  EXPECT_EQ(j["done"], true);
  EXPECT_EQ(j["done_reason"], "load");
  EXPECT_EQ(j["message"]["content"], "");
}

TEST_F(Ollama, UnknownModelIs404) {
  const HttpResult r = ollama({{"model", "no-such-model"}, {"messages", {user("x")}}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json_body(), (json{{"error", "model 'no-such-model' not found"}}));
}

TEST_F(Ollama, TagsAndVersion) {
  const HttpResult r = perform({"GET", url("/api/tags"), {}, "", 5000});
  ASSERT_EQ(r.status, 200);
  const json model = r.json_body()["models"][0];
  for (const char* field : {"name", "model", "modified_at", "size", "digest", "details"}) {
    EXPECT_TRUE(model.contains(field)) << field;
  }
  EXPECT_EQ(model["details"]["format"], "gguf");
  EXPECT_EQ(perform({"GET", url("/api/version"), {}, "", 5000}).status, 200);
}

}  // namespace
}  // namespace dispatch::fake_provider::test
