#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "drivers.hpp"

namespace dispatch::bench {

std::string openai_chat_body(const std::string& model, const std::string& prompt, bool stream) {
  nlohmann::json body = {{"model", model},
                         {"messages", {{{"role", "user"}, {"content", prompt}}}},
                         {"stream", stream}};
  // What the worker's OpenAI adapter asks for too, so both paths get the same reply.
  if (stream) body["stream_options"] = {{"include_usage", true}};
  return body.dump();
}

namespace {

// True when an SSE data payload carries a non-empty "content" string.
bool has_content(std::string_view payload) {
  constexpr std::string_view kKey = "\"content\":";
  std::size_t at = payload.find(kKey);
  while (at != std::string_view::npos) {
    std::size_t pos = at + kKey.size();
    while (pos < payload.size() && payload[pos] == ' ') ++pos;
    if (pos + 1 < payload.size() && payload[pos] == '"' && payload[pos + 1] != '"') return true;
    at = payload.find(kKey, pos);
  }
  return false;
}

}  // namespace

uint32_t SseScanner::feed(const char* data, std::size_t size) {
  uint32_t content_events = 0;
  // A provider's events are a few hundred bytes; a line far longer is not worth keeping.
  constexpr std::size_t kMaxLine = 1 << 20;
  for (std::size_t i = 0; i < size; ++i) {
    const char c = data[i];
    if (c != '\n') {
      if (line_.size() < kMaxLine) line_.push_back(c);
      continue;
    }
    std::string_view line(line_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 5) == "data:") {
      std::string_view payload = line.substr(5);
      while (!payload.empty() && payload.front() == ' ') payload.remove_prefix(1);
      if (payload == "[DONE]") {
        done_ = true;
      } else if (has_content(payload)) {
        ++content_events;
      }
    }
    line_.clear();
  }
  return content_events;
}

namespace {

int64_t now_ns(BenchClock::time_point origin) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(BenchClock::now() - origin).count();
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd, const char* what) : fd_(fd) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), what);
  }
  ~FileDescriptor() { ::close(fd_); }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct CurlEasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};

class HttpLoad;

// One request slot; slots and their easy handles are reused, which keeps curl's connection
// cache warm and allocations out of the send path.
struct Transfer {
  HttpLoad* load = nullptr;
  std::unique_ptr<CURL, CurlEasyDeleter> easy;
  std::size_t index = 0;
  SseScanner sse;
  std::string body;   // non-streamed reply (bounded)
  bool busy = false;  // added to the multi handle
};

class HttpLoad {
 public:
  HttpLoad(const HttpTarget& target, const RunPlan& plan, std::vector<JobRecord>& records,
           RunObserver& observer)
      : target_(target),
        plan_(plan),
        records_(records),
        observer_(observer),
        epoll_(epoll_create1(EPOLL_CLOEXEC), "epoll_create1"),
        curl_timer_(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), "timerfd"),
        send_timer_(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC), "timerfd"),
        multi_(curl_multi_init()) {
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    for (const auto& header : target_.headers) append_header(header);
    append_header("Content-Type: application/json");
    append_header("Expect:");
    curl_multi_setopt(multi_.get(), CURLMOPT_SOCKETFUNCTION, &HttpLoad::on_socket);
    curl_multi_setopt(multi_.get(), CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_.get(), CURLMOPT_TIMERFUNCTION, &HttpLoad::on_timer);
    curl_multi_setopt(multi_.get(), CURLMOPT_TIMERDATA, this);
    // Keep every connection for reuse: a closed-loop run holds `concurrency` of them.
    curl_multi_setopt(multi_.get(), CURLMOPT_MAXCONNECTS, 100000L);
    watch(curl_timer_.get());
    watch(send_timer_.get());
  }

  void run() {
    origin_ = BenchClock::now();
    const std::size_t total = plan_.total_jobs();
    if (plan_.mode == LoadMode::closed_loop) {
      for (std::size_t i = 0; i < std::min(plan_.concurrency, total); ++i)
        start_next(now_ns(origin_));
    } else {
      send_due();
    }
    std::array<epoll_event, 256> events{};
    // Bounded: ends when every job finished or the drain deadline passed.
    while (finished_ < total) {
      const int64_t now = now_ns(origin_);
      if (next_ >= total) {
        if (all_sent_ns_ == 0) all_sent_ns_ = now;
        if (now - all_sent_ns_ > plan_.drain_timeout.count() * 1'000'000) break;
      }
      const int timeout_ms = curl_now_ ? 0 : 50;
      const int n =
          epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
      if (n < 0 && errno != EINTR)
        throw std::system_error(errno, std::generic_category(), "epoll_wait");
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<std::size_t>(i)].data.fd;
        const uint32_t ev = events[static_cast<std::size_t>(i)].events;
        if (fd == send_timer_.get()) {
          drain_timer(fd);
          send_due();
        } else if (fd == curl_timer_.get()) {
          drain_timer(fd);
          socket_action(CURL_SOCKET_TIMEOUT, 0);
        } else {
          int flags = 0;
          if (ev & EPOLLIN) flags |= CURL_CSELECT_IN;
          if (ev & EPOLLOUT) flags |= CURL_CSELECT_OUT;
          if (ev & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
          socket_action(fd, flags);
        }
      }
      if (curl_now_) {
        curl_now_ = false;
        socket_action(CURL_SOCKET_TIMEOUT, 0);
      }
      collect_finished();
      observer_.on_in_flight(in_flight_, streaming_);
    }
    // Whatever is still running is abandoned; its record stays unfinished.
    for (auto& transfer : all_) {
      if (transfer->busy) curl_multi_remove_handle(multi_.get(), transfer->easy.get());
    }
  }

 private:
  void append_header(const std::string& header) {
    curl_slist* appended = curl_slist_append(headers_.get(), header.c_str());
    if (!appended) throw std::runtime_error("curl_slist_append failed");
    headers_.release();
    headers_.reset(appended);
  }

  void watch(int fd) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }
  }

  static void drain_timer(int fd) {
    uint64_t expirations = 0;
    [[maybe_unused]] auto got = ::read(fd, &expirations, sizeof expirations);
  }

  static int on_socket(CURL*, curl_socket_t socket, int what, void* user, void*) {
    auto* self = static_cast<HttpLoad*>(user);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(self->epoll_.get(), EPOLL_CTL_DEL, socket, nullptr);
      return 0;
    }
    epoll_event event{};
    event.data.fd = socket;
    if (what & CURL_POLL_IN) event.events |= EPOLLIN;
    if (what & CURL_POLL_OUT) event.events |= EPOLLOUT;
    if (epoll_ctl(self->epoll_.get(), EPOLL_CTL_MOD, socket, &event) != 0 && errno == ENOENT) {
      epoll_ctl(self->epoll_.get(), EPOLL_CTL_ADD, socket, &event);
    }
    return 0;
  }

  static int on_timer(CURLM*, long timeout_ms, void* user) {
    auto* self = static_cast<HttpLoad*>(user);
    itimerspec spec{};
    if (timeout_ms == 0) {
      self->curl_now_ = true;
    } else if (timeout_ms > 0) {
      spec.it_value.tv_sec = timeout_ms / 1000;
      spec.it_value.tv_nsec = (timeout_ms % 1000) * 1'000'000;
    }
    // timeout_ms < 0 (and 0) disarm the timerfd.
    timerfd_settime(self->curl_timer_.get(), 0, &spec, nullptr);
    return 0;
  }

  static size_t on_data(char* data, size_t size, size_t count, void* user) {
    auto* transfer = static_cast<Transfer*>(user);
    const size_t n = size * count;
    transfer->load->on_body(*transfer, data, n);
    return n;
  }

  void on_body(Transfer& transfer, const char* data, std::size_t n) {
    JobRecord& record = records_[transfer.index];
    if (plan_.stream) {
      const uint32_t events = transfer.sse.feed(data, n);
      if (events > 0 && record.chunks == 0) {
        record.first_chunk_ns = now_ns(origin_);
        ++streaming_;
      }
      record.chunks += events;
    } else if (transfer.body.size() < (1u << 20)) {
      transfer.body.append(data, n);
    }
  }

  void socket_action(curl_socket_t socket, int flags) {
    int running = 0;
    curl_multi_socket_action(multi_.get(), socket, flags, &running);
  }

  // Open loop: starts every job whose due time has come, then arms the timer for the next.
  void send_due() {
    const int64_t now = now_ns(origin_);
    const std::size_t total = plan_.total_jobs();
    while (next_ < total && open_loop_due_ns(plan_, next_) <= now) {
      const std::size_t index = next_;
      records_[index].scheduled_ns = open_loop_due_ns(plan_, index);
      if (in_flight_ >= plan_.max_in_flight) {
        ++next_;
        if (index == plan_.warmup_jobs) observer_.on_measurement_start();
        records_[index].finished = true;
        records_[index].error = "loadgen_overflow";
        ++finished_;
        continue;
      }
      start_next(records_[index].scheduled_ns);
    }
    if (next_ < total) {
      const int64_t due = open_loop_due_ns(plan_, next_);
      const auto at = origin_.time_since_epoch() + std::chrono::nanoseconds(due);
      const int64_t at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at).count();
      itimerspec spec{};
      spec.it_value.tv_sec = at_ns / 1'000'000'000;
      spec.it_value.tv_nsec = at_ns % 1'000'000'000;
      // steady_clock is CLOCK_MONOTONIC on Linux, so its epoch is the timerfd's.
      timerfd_settime(send_timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
    }
  }

  Transfer& acquire_transfer() {
    if (!free_.empty()) {
      Transfer* transfer = free_.back();
      free_.pop_back();
      return *transfer;
    }
    auto transfer = std::make_unique<Transfer>();
    transfer->load = this;
    transfer->easy.reset(curl_easy_init());
    if (!transfer->easy) throw std::runtime_error("curl_easy_init failed");
    CURL* easy = transfer->easy.get();
    curl_easy_setopt(easy, CURLOPT_URL, target_.url.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers_.get());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, target_.body.data());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(target_.body.size()));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &HttpLoad::on_data);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer.get());
    curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer.get());
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(plan_.request_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    Transfer& slot = *transfer;
    all_.push_back(std::move(transfer));
    return slot;
  }

  void start_next(int64_t scheduled_ns) {
    const std::size_t index = next_++;
    if (index == plan_.warmup_jobs) observer_.on_measurement_start();
    Transfer& transfer = acquire_transfer();
    transfer.index = index;
    transfer.sse.reset();
    transfer.body.clear();
    JobRecord& record = records_[index];
    record.sent_ns = now_ns(origin_);
    record.scheduled_ns = plan_.mode == LoadMode::closed_loop ? record.sent_ns : scheduled_ns;
    const CURLMcode code = curl_multi_add_handle(multi_.get(), transfer.easy.get());
    if (code != CURLM_OK) {
      record.finished = true;
      record.error = "curl_multi_add_handle";
      ++finished_;
      free_.push_back(&transfer);
      return;
    }
    ++in_flight_;
    transfer.busy = true;
  }

  void collect_finished() {
    int queued = 0;
    // Bounded by the number of finished transfers curl holds.
    while (CURLMsg* message = curl_multi_info_read(multi_.get(), &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      CURL* easy = message->easy_handle;
      const CURLcode result = message->data.result;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, &transfer);
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi_.get(), easy);
      transfer->busy = false;
      finish(*transfer, result, status);
      free_.push_back(transfer);
      if (plan_.mode == LoadMode::closed_loop && next_ < plan_.total_jobs()) {
        start_next(now_ns(origin_));
      }
    }
  }

  void finish(Transfer& transfer, CURLcode result, long status) {
    JobRecord& record = records_[transfer.index];
    record.done_ns = now_ns(origin_);
    record.finished = true;
    --in_flight_;
    if (record.chunks > 0) --streaming_;
    ++finished_;
    if (result != CURLE_OK) {
      record.error = std::string("curl: ") + curl_easy_strerror(result);
    } else if (status != 200) {
      record.error = "http_" + std::to_string(status);
    } else if (plan_.stream && !transfer.sse.done()) {
      record.error = "stream_incomplete";
    } else if (plan_.stream && record.chunks == 0) {
      record.error = "stream_empty";
    } else if (!plan_.stream && transfer.body.find("\"choices\"") == std::string::npos) {
      record.error = "bad_body";
    } else {
      record.ok = true;
    }
  }

  const HttpTarget& target_;
  const RunPlan& plan_;
  std::vector<JobRecord>& records_;
  RunObserver& observer_;
  FileDescriptor epoll_;
  FileDescriptor curl_timer_;
  FileDescriptor send_timer_;
  std::unique_ptr<CURLM, CurlMultiDeleter> multi_;
  std::unique_ptr<curl_slist, CurlSlistDeleter> headers_;
  std::vector<std::unique_ptr<Transfer>> all_;
  std::vector<Transfer*> free_;
  BenchClock::time_point origin_;
  bool curl_now_ = false;
  std::size_t next_ = 0;
  std::size_t finished_ = 0;
  std::size_t in_flight_ = 0;
  std::size_t streaming_ = 0;
  int64_t all_sent_ns_ = 0;
};

}  // namespace

void run_http(const HttpTarget& target, const RunPlan& plan, std::vector<JobRecord>& records,
              RunObserver& observer) {
  HttpLoad load(target, plan, records, observer);
  load.run();
}

}  // namespace dispatch::bench
