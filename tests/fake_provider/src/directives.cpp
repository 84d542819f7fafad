#include "dispatch/fake_provider/directives.hpp"

#include <charconv>
#include <functional>
#include <map>

namespace dispatch::fake_provider {
namespace {

// One hour: far beyond any test, small enough that timers and counters stay sane.
constexpr int64_t kMaxMillis = 3'600'000;
constexpr int64_t kMaxCount = 1'000'000;

std::optional<int64_t> parse_int(std::string_view text) {
  int64_t value = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

using Setter = std::function<std::optional<std::string>(Directives&, std::optional<int64_t>)>;

Setter number(std::optional<int64_t> Directives::*field, int64_t min, int64_t max) {
  return
      [field, min, max](Directives& d, std::optional<int64_t> value) -> std::optional<std::string> {
        if (!value) return "needs an integer value";
        if (*value < min || *value > max) {
          return "must be between " + std::to_string(min) + " and " + std::to_string(max);
        }
        d.*field = *value;
        return std::nullopt;
      };
}

Setter flag(bool Directives::*field) {
  return [field](Directives& d, std::optional<int64_t> value) -> std::optional<std::string> {
    if (value) return "takes no value";
    d.*field = true;
    return std::nullopt;
  };
}

const std::map<std::string, Setter, std::less<>>& setters() {
  static const std::map<std::string, Setter, std::less<>> table{
      {"latency_ms", number(&Directives::latency_ms, 0, kMaxMillis)},
      {"first_token_ms", number(&Directives::first_token_ms, 0, kMaxMillis)},
      {"chunk_delay_ms", number(&Directives::chunk_delay_ms, 0, kMaxMillis)},
      {"tokens", number(&Directives::tokens, 0, 100'000)},
      {"status", number(&Directives::status, 400, 599)},
      {"fail_first", number(&Directives::fail_first, 0, kMaxCount)},
      {"retry_after", number(&Directives::retry_after_s, 0, 86'400)},
      {"retry_after_ms", number(&Directives::retry_after_ms, 0, 86'400'000)},
      {"retry_after_date", flag(&Directives::retry_after_date)},
      {"context_length", flag(&Directives::context_length)},
      {"content_filter", flag(&Directives::content_filter)},
      {"flap", number(&Directives::flap_ms, 0, kMaxMillis)},
      {"reset", flag(&Directives::reset)},
      {"hang", flag(&Directives::hang)},
      {"cut_after", number(&Directives::cut_after, 0, kMaxCount)},
      {"stall_after", number(&Directives::stall_after, 0, kMaxCount)},
      {"malformed_at", number(&Directives::malformed_at, 1, kMaxCount)},
      {"error_mid_stream", number(&Directives::error_mid_stream, 0, kMaxCount)},
      {"no_terminator", flag(&Directives::no_terminator)},
  };
  return table;
}

std::optional<std::string> apply_list(Directives& directives, std::string_view list) {
  // Bounded by the list length: each iteration consumes at least one character.
  while (!list.empty()) {
    const size_t tilde = list.find('~');
    const std::string_view item = list.substr(0, tilde);
    list = tilde == std::string_view::npos ? std::string_view{} : list.substr(tilde + 1);
    if (item.empty()) continue;
    const size_t equals = item.find('=');
    const std::string_view key = item.substr(0, equals);
    const auto setter = setters().find(key);
    if (setter == setters().end())
      return "unknown fake-provider directive '" + std::string(key) + "'";
    std::optional<int64_t> value;
    if (equals != std::string_view::npos) {
      value = parse_int(item.substr(equals + 1));
      if (!value) {
        return "fake-provider directive '" + std::string(key) + "' needs an integer value";
      }
    }
    if (auto problem = setter->second(directives, value)) {
      return "fake-provider directive '" + std::string(key) + "' " + *problem;
    }
  }
  return std::nullopt;
}

}  // namespace

std::variant<Directives, std::string> parse_directives(std::string_view model,
                                                       std::string_view header) {
  Directives directives;
  const size_t tilde = model.find('~');
  directives.base_model = std::string(model.substr(0, tilde));
  if (tilde != std::string_view::npos) {
    if (auto problem = apply_list(directives, model.substr(tilde + 1))) return *problem;
  }
  if (auto problem = apply_list(directives, header)) return *problem;
  return directives;
}

}  // namespace dispatch::fake_provider
