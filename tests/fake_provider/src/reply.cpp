#include "dispatch/fake_provider/reply.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace dispatch::fake_provider {
namespace {

constexpr std::array<std::string_view, 19> kFiller{
    "lorem",  "ipsum", "dolor",  "sit",     "amet",   "consectetur", "adipiscing",
    "elit",   "sed",   "do",     "eiusmod", "tempor", "incididunt",  "ut",
    "labore", "et",    "dolore", "magna",   "aliqua"};

// Fragment size for streamed tool arguments: small enough that every call streams in 2+ pieces.
constexpr size_t kArgumentFragmentBytes = 8;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::vector<std::string> chunk_words(const std::vector<std::string>& words) {
  std::vector<std::string> chunks;
  chunks.reserve(words.size());
  for (size_t i = 0; i < words.size(); ++i) {
    chunks.push_back(i + 1 < words.size() ? words[i] + " " : words[i]);
  }
  return chunks;
}

std::string join(const std::vector<std::string>& chunks) {
  std::string text;
  for (const auto& chunk : chunks) text += chunk;
  return text;
}

bool mentions_word_tool(std::string_view text) {
  for (std::string word : split_words(text)) {
    std::transform(word.begin(), word.end(), word.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const auto alnum = [](unsigned char c) { return std::isalnum(c) != 0; };
    const auto first = std::find_if(word.begin(), word.end(), alnum);
    const auto last = std::find_if(word.rbegin(), word.rend(), alnum).base();
    if (first < last && std::string_view(&*first, static_cast<size_t>(last - first)) == "tool") {
      return true;
    }
  }
  return false;
}

const ToolSpec* choose_tool(const ChatRequest& request) {
  if (request.last_is_tool_result || request.tools.empty() ||
      request.tool_choice == ToolChoice::none) {
    return nullptr;
  }
  if (!request.forced_tool.empty()) {
    for (const auto& tool : request.tools) {
      if (tool.name == request.forced_tool) return &tool;
    }
  }
  for (const auto& tool : request.tools) {
    if (!tool.name.empty() && request.last_user_text.find(tool.name) != std::string::npos) {
      return &tool;
    }
  }
  if (request.tool_choice == ToolChoice::required || mentions_word_tool(request.last_user_text)) {
    return &request.tools.front();
  }
  return nullptr;
}

// Splits on UTF-8 character boundaries so every fragment is valid UTF-8 on its own.
std::vector<std::string> fragment(const std::string& json) {
  std::vector<std::string> pieces;
  size_t start = 0;
  const size_t size = std::max<size_t>(1, std::min(kArgumentFragmentBytes, json.size() / 2));
  while (start < json.size()) {
    size_t end = std::min(json.size(), start + size);
    while (end < json.size() && (static_cast<unsigned char>(json[end]) & 0xC0) == 0x80) ++end;
    pieces.push_back(json.substr(start, end - start));
    start = end;
  }
  return pieces;
}

ToolCallPlan plan_tool_call(const ToolSpec& tool) {
  ToolCallPlan call;
  call.name = tool.name;
  call.arguments = fake_arguments(tool.parameters);
  call.arguments_json = call.arguments.dump();
  call.fragments = fragment(call.arguments_json);
  return call;
}

std::vector<std::string> answer_words(const ChatRequest& request, size_t count) {
  std::vector<std::string> words;
  if (request.image_count > 0) {
    // Appended rather than "[" + to_string(): GCC 12 at -O3 reports a false -Wrestrict there.
    std::string count_word = "[";
    count_word += std::to_string(request.image_count);
    words.push_back(std::move(count_word));
    words.emplace_back("images]");
  }
  if (request.last_is_tool_result) {
    words.emplace_back("tool");
    words.emplace_back("result:");
    for (auto& w : split_words(request.tool_result_text)) words.push_back(std::move(w));
  } else {
    words.emplace_back("reply");
    words.emplace_back("to:");
    for (auto& w : split_words(request.last_user_text)) words.push_back(std::move(w));
  }
  if (words.size() > count) words.resize(count);
  for (size_t i = 0; words.size() < count; ++i) words.emplace_back(kFiller[i % kFiller.size()]);
  return words;
}

// Cuts `chunks` so their concatenation is the first `length` bytes.
void truncate_chunks(std::vector<std::string>& chunks, size_t length) {
  size_t used = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (used + chunks[i].size() <= length) {
      used += chunks[i].size();
      continue;
    }
    const size_t keep = length - used;
    if (keep > 0) {
      chunks[i].resize(keep);
      chunks.resize(i + 1);
    } else {
      chunks.resize(i);
    }
    return;
  }
}

}  // namespace

std::string ReplyPlan::text() const {
  return join(text_chunks);
}
std::string ReplyPlan::thinking() const {
  return join(thinking_chunks);
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

int64_t count_words(std::string_view text) {
  int64_t count = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = is_space(c);
    if (!space && !in_word) ++count;
    in_word = !space;
  }
  return count;
}

nlohmann::json fake_arguments(const nlohmann::json& schema) {
  nlohmann::json arguments = nlohmann::json::object();
  if (!schema.is_object()) return arguments;
  const auto properties = schema.find("properties");
  if (properties == schema.end() || !properties->is_object()) return arguments;
  for (const auto& [name, property] : properties->items()) {
    std::string type;
    if (property.is_object()) {
      const auto t = property.find("type");
      if (t != property.end() && t->is_string()) type = t->get<std::string>();
      if (t != property.end() && t->is_array()) {
        for (const auto& option : *t) {
          if (option.is_string() && option != "null") {
            type = option.get<std::string>();
            break;
          }
        }
      }
    }
    if (type == "string") {
      arguments[name] = "fake-" + name;
    } else if (type == "number" || type == "integer") {
      arguments[name] = 1;
    } else if (type == "boolean") {
      arguments[name] = true;
    } else {
      arguments[name] = nullptr;
    }
  }
  return arguments;
}

ReplyPlan plan_reply(const ChatRequest& request, int64_t token_count) {
  ReplyPlan plan;
  plan.prompt_tokens = request.prompt_tokens;
  if (request.load_only) {
    plan.finish = Finish::load;
    return plan;
  }
  if (request.thinking) plan.thinking_chunks = chunk_words(split_words(kThinkingText));

  if (const ToolSpec* tool = choose_tool(request)) {
    plan.tool_call = plan_tool_call(*tool);
    plan.finish = Finish::tool_calls;
    plan.completion_tokens = static_cast<int64_t>(plan.tool_call->fragments.size());
    return plan;
  }

  const int64_t wanted = std::clamp<int64_t>(token_count, 0, kMaxReplyTokens);
  int64_t emitted = wanted;
  if (request.max_tokens && *request.max_tokens < wanted)
    emitted = std::max<int64_t>(0, *request.max_tokens);
  plan.text_chunks = chunk_words(answer_words(request, static_cast<size_t>(emitted)));
  plan.finish = emitted < wanted ? Finish::length : Finish::stop;

  const std::string text = plan.text();
  size_t cut = std::string::npos;
  for (const auto& stop : request.stop) {
    if (stop.empty()) continue;
    const size_t at = text.find(stop);
    if (at < cut) {
      cut = at;
      plan.stop_sequence = stop;
    }
  }
  if (cut != std::string::npos) {
    truncate_chunks(plan.text_chunks, cut);
    plan.finish = Finish::stop_sequence;
  }
  plan.completion_tokens = static_cast<int64_t>(plan.text_chunks.size());
  return plan;
}

}  // namespace dispatch::fake_provider
