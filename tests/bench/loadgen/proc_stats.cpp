#include "proc_stats.hpp"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

namespace dispatch::bench {

namespace {

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::optional<uint64_t> parse_unsigned(std::string_view text) {
  uint64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
  return value;
}

// "VmRSS:\t  1234 kB" -> 1234
std::optional<uint64_t> status_field_kb(std::string_view text, std::string_view key) {
  const std::size_t at = text.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::size_t pos = at + key.size();
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t')) ++pos;
  return parse_unsigned(text.substr(pos));
}

}  // namespace

std::optional<ProcessSample> parse_proc_stat(std::string_view stat_text, double ticks_per_second) {
  // The command name (field 2) is in parentheses and may hold spaces and ')': fields are
  // counted from the last ')'.
  const std::size_t close = stat_text.rfind(')');
  if (close == std::string_view::npos || ticks_per_second <= 0) return std::nullopt;
  std::string_view rest = stat_text.substr(close + 1);
  // After ')': field 3 (state) is token 0, utime (field 14) token 11, stime (15) token 12.
  std::optional<uint64_t> utime;
  std::optional<uint64_t> stime;
  int token = 0;
  std::size_t pos = 0;
  while (pos < rest.size() && token <= 12) {
    while (pos < rest.size() && rest[pos] == ' ') ++pos;
    std::size_t end = rest.find(' ', pos);
    if (end == std::string_view::npos) end = rest.size();
    if (token == 11) utime = parse_unsigned(rest.substr(pos, end - pos));
    if (token == 12) stime = parse_unsigned(rest.substr(pos, end - pos));
    ++token;
    pos = end;
  }
  if (!utime || !stime) return std::nullopt;
  ProcessSample sample;
  sample.user_s = static_cast<double>(*utime) / ticks_per_second;
  sample.system_s = static_cast<double>(*stime) / ticks_per_second;
  return sample;
}

void parse_proc_status(std::string_view status_text, ProcessSample& sample) {
  sample.rss_kb = status_field_kb(status_text, "VmRSS:").value_or(0);
  sample.hwm_kb = status_field_kb(status_text, "VmHWM:").value_or(0);
}

std::optional<ProcessSample> sample_process(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  const auto stat = read_file(base + "/stat");
  const auto status = read_file(base + "/status");
  if (!stat || !status) return std::nullopt;
  auto sample = parse_proc_stat(*stat, static_cast<double>(sysconf(_SC_CLK_TCK)));
  if (!sample) return std::nullopt;
  parse_proc_status(*status, *sample);
  return sample;
}

double load_average_1m() {
  const auto text = read_file("/proc/loadavg");
  if (!text) return -1;
  try {
    return std::stod(*text);
  } catch (const std::exception&) {
    return -1;
  }
}

ProcessWatch::ProcessWatch(std::vector<WatchedProcess> processes,
                           std::chrono::milliseconds interval)
    : interval_(interval) {
  for (auto& process : processes) entries_.push_back(Entry{std::move(process), {}, {}, 0});
  thread_ = std::thread([this] { sample_loop(); });
}

ProcessWatch::~ProcessWatch() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ProcessWatch::mark_start() {
  std::lock_guard lock(mutex_);
  for (auto& entry : entries_) {
    entry.start = sample_process(entry.process.pid);
    entry.peak_rss_kb = entry.start ? entry.start->rss_kb : 0;
  }
  started_at_ = std::chrono::steady_clock::now();
  load_start_ = load_average_1m();
  measuring_ = true;
}

void ProcessWatch::mark_end() {
  std::lock_guard lock(mutex_);
  if (!measuring_) return;
  for (auto& entry : entries_) {
    entry.end = sample_process(entry.process.pid);
    if (entry.end) entry.peak_rss_kb = std::max(entry.peak_rss_kb, entry.end->rss_kb);
  }
  ended_at_ = std::chrono::steady_clock::now();
  load_end_ = load_average_1m();
  measuring_ = false;
}

void ProcessWatch::sample_loop() {
  // Bounded by the owner's lifetime: the destructor sets stop_.
  while (!stop_) {
    {
      std::lock_guard lock(mutex_);
      if (measuring_) {
        for (auto& entry : entries_) {
          if (auto sample = sample_process(entry.process.pid)) {
            entry.peak_rss_kb = std::max(entry.peak_rss_kb, sample->rss_kb);
          }
        }
      }
    }
    std::this_thread::sleep_for(interval_);
  }
}

nlohmann::json ProcessWatch::to_json(std::size_t jobs) const {
  std::lock_guard lock(mutex_);
  nlohmann::json out = nlohmann::json::object();
  const double window_s = std::chrono::duration<double>(ended_at_ - started_at_).count();
  for (const auto& entry : entries_) {
    nlohmann::json p;
    p["pid"] = entry.process.pid;
    if (entry.start && entry.end) {
      const double user = entry.end->user_s - entry.start->user_s;
      const double system = entry.end->system_s - entry.start->system_s;
      p["cpu_user_s"] = user;
      p["cpu_system_s"] = system;
      p["cpu_s"] = user + system;
      p["cpu_us_per_job"] = jobs == 0 ? 0.0 : (user + system) * 1e6 / static_cast<double>(jobs);
      p["cpu_cores"] = window_s > 0 ? (user + system) / window_s : 0.0;
      p["rss_start_kb"] = entry.start->rss_kb;
      p["rss_end_kb"] = entry.end->rss_kb;
      p["rss_peak_kb"] = entry.peak_rss_kb;
      p["hwm_end_kb"] = entry.end->hwm_kb;
    } else {
      p["error"] = "process not sampled (gone?)";
    }
    out[entry.process.name] = p;
  }
  return {{"window_s", window_s},
          {"load_avg_1m_start", load_start_},
          {"load_avg_1m_end", load_end_},
          {"processes", out}};
}

}  // namespace dispatch::bench
