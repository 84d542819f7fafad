#include "dispatch/gateway/admission.hpp"

#include <charconv>
#include <set>

#include "dispatch/common/strings.hpp"
#include "dispatch/common/trace.hpp"
#include "dispatch/formats/anthropic.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/formats/openai.hpp"

namespace dispatch::gateway {

using formats::HttpError;
using nlohmann::json;

namespace {

HttpError header_error(std::string_view header, std::string_view problem) {
  return formats::http_error_from(
      formats::invalid_field(std::string(header), problem, "invalid_header"));
}

// The x-dispatch-* headers, which override the body's extensions of the same names.
Result<void, HttpError> apply_headers(const RequestHeaders& headers, formats::ChatRequest& chat) {
  if (headers.fallbacks) {
    std::vector<std::string> names;
    std::string_view rest = *headers.fallbacks;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      names.emplace_back(trim(rest.substr(0, comma)));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    if (names.size() > formats::kMaxFallbacks) {
      return header_error("x-dispatch-fallbacks", "lists more than 16 targets");
    }
    chat.fallbacks = std::move(names);
  }
  if (headers.timeout_ms) {
    const std::string_view text = trim(*headers.timeout_ms);
    uint32_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value == 0) {
      return header_error("x-dispatch-timeout-ms", "must be a positive whole number");
    }
    chat.request.timeout_ms = value;
  }
  if (headers.priority) {
    const auto priority = priority_from_string(trim(*headers.priority));
    if (!priority)
      return header_error("x-dispatch-priority", "must be interactive, normal or batch");
    chat.priority = *priority;
  }
  return {};
}

Result<void, HttpError> check_allowed(const ApiKey& key, const formats::ChatRequest& chat) {
  const protocol::Target primary{chat.request.provider, chat.request.model};
  const auto refuse = [&](const std::string& name) {
    return formats::http_error(
        403, "the API key '" + key.name + "' may not use the model '" + name + "'",
        "model_not_allowed");
  };
  if (!model_allowed(key, chat.model, primary)) return refuse(chat.model);
  // Fallbacks the caller named are models they use too; an alias's own are part of the alias.
  if (chat.fallbacks && chat.request.fallbacks) {
    for (const auto& target : *chat.request.fallbacks) {
      if (!model_allowed(key, target.provider + "/" + target.model, target)) {
        return refuse(target.provider + "/" + target.model);
      }
    }
  }
  return {};
}

}  // namespace

Admitter::Admitter(const GatewayConfig& config) : keys_(config.keys), catalog_(config.models) {}

Result<const ApiKey*, HttpError> Admitter::authenticate(const RequestHeaders& headers) const {
  if (!keys_.enabled()) return static_cast<const ApiKey*>(nullptr);
  const std::string_view presented =
      presented_key(headers.authorization.value_or(""), headers.x_api_key.value_or(""));
  if (presented.empty()) {
    return formats::http_error(
        401, "no API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`",
        "missing_api_key");
  }
  const ApiKey* key = keys_.find(presented);
  if (key == nullptr) return formats::http_error(401, "invalid API key", "invalid_api_key");
  return key;
}

Result<Admission, HttpError> Admitter::admit(Api api, const ApiKey* key,
                                             const RequestHeaders& headers,
                                             std::string_view body) const {
  auto document = formats::parse_json_body(body, json_limits_);
  if (!document) return formats::http_error_from(document.error());
  auto chat = api == Api::openai ? formats::parse_openai_chat(*document)
                                 : formats::parse_anthropic_messages(*document);
  if (!chat) return formats::http_error_from(chat.error());
  if (auto applied = apply_headers(headers, *chat); !applied) return std::move(applied).error();
  auto resolved = formats::resolve_targets(*chat, catalog_);
  if (!resolved) return formats::http_error_from(resolved.error());
  if (key != nullptr) {
    if (auto allowed = check_allowed(*key, *chat); !allowed) return std::move(allowed).error();
  }
  Admission admission{DispatchRequest(std::move(chat->request)),
                      chat->stream,
                      chat->include_usage,
                      resolved->target,
                      key != nullptr ? key->name : std::string(),
                      key != nullptr ? key->tenant : std::string()};
  if (chat->priority) admission.request.with_priority(*chat->priority);
  if (headers.traceparent) {
    if (auto trace = parse_traceparent(trim(*headers.traceparent))) {
      admission.request.with_traceparent(format_traceparent(*trace));
    } else {
      admission.traceparent_problem = "traceparent ignored (" + trace.error().message + ")";
    }
  }
  return admission;
}

std::string Admitter::models_body(Api api, const ApiKey* key) const {
  std::set<std::string> names;
  const auto add = [&](const std::string& name, const protocol::Target& target) {
    if (key == nullptr || model_allowed(*key, name, target)) names.insert(name);
  };
  for (const auto& [alias, entry] : catalog_.aliases) {
    add(alias, entry.target);
    add(entry.target.provider + "/" + entry.target.model, entry.target);
    for (const auto& fallback : entry.fallbacks.value_or(std::vector<protocol::Target>{})) {
      add(fallback.provider + "/" + fallback.model, fallback);
    }
  }
  json data = json::array();
  for (const std::string& name : names) {
    if (api == Api::openai) {
      data.push_back({{"id", name}, {"object", "model"}, {"created", 0}, {"owned_by", "dispatch"}});
    } else {
      data.push_back({{"type", "model"},
                      {"id", name},
                      {"display_name", name},
                      {"created_at", "1970-01-01T00:00:00Z"}});
    }
  }
  if (api == Api::openai) return formats::dump_line(json{{"object", "list"}, {"data", data}});
  return formats::dump_line(
      json{{"data", data},
           {"has_more", false},
           {"first_id", names.empty() ? json(nullptr) : json(*names.begin())},
           {"last_id", names.empty() ? json(nullptr) : json(*names.rbegin())}});
}

}  // namespace dispatch::gateway
