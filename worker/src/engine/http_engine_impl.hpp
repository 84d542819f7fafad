#pragma once

// HttpEngine's state and the shape of what it does; the bodies are in http_engine.cpp, grouped
// as declared here: curl's multi callbacks, its per-transfer callbacks, the transfers' lifecycle.

#include <curl/curl.h>

#include <array>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dispatch/worker/http_engine.hpp"

namespace dispatch::worker {
namespace detail {

struct CurlMultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct CurlEasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using MultiPtr = std::unique_ptr<CURLM, CurlMultiDeleter>;
using EasyPtr = std::unique_ptr<CURL, CurlEasyDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, CurlSlistDeleter>;

}  // namespace detail

struct HttpEngine::Impl {
  struct Transfer {
    Impl* engine = nullptr;
    detail::EasyPtr easy;
    TransferId id = 0;
    TransferListener* listener = nullptr;
    HttpRequest request;  // owns the body curl sends from (CURLOPT_POSTFIELDS, no copy)
    detail::SlistPtr header_list;
    HttpHeaders response_headers;
    std::size_t response_header_bytes = 0;
    int status = 0;
    bool in_multi = false;
    bool response_started = false;
    bool cancelled = false;
    bool header_overflow = false;
    bool listener_threw = false;  // a listener callback threw: the transfer fails as internal
    std::array<char, CURL_ERROR_SIZE> error_buffer{};
  };
  using TransferPtr = std::unique_ptr<Transfer>;
  EventLoop& loop;
  HttpEngineOptions options;
  detail::MultiPtr multi;
  TimerId curl_timer = kNoTimer;
  TransferId next_id = 1;
  std::unordered_map<TransferId, TransferPtr> transfers;
  std::vector<TransferPtr> pool;
  // Indexed by fd: every socket curl asked us to watch, unwatched on teardown.
  std::vector<uint8_t> watched_sockets;
  // Work a listener asked for from inside a curl callback, where curl forbids
  // curl_multi_add_handle / curl_multi_remove_handle: done once curl returns.
  int curl_depth = 0;
  std::vector<Transfer*> deferred_adds;
  std::vector<TransferPtr> deferred_removals;
  Impl(EventLoop& event_loop, HttpEngineOptions engine_options);
  ~Impl();

  // ---- curl multi callbacks -------------------------------------------------------------

  static int socket_callback(CURL*, curl_socket_t fd, int what, void* userp, void*) noexcept;
  void update_socket(curl_socket_t fd, int what);
  static int timer_callback(CURLM*, long timeout_ms, void* userp) noexcept;
  void update_timer(long timeout_ms);
  void on_socket_ready(int fd, uint32_t ready);
  void socket_action(curl_socket_t fd, int mask);
  void after_curl();
  bool flush_deferred();

  // ---- easy callbacks ---------------------------------------------------------------------

  static size_t header_callback(char* data, size_t size, size_t count, void* userp) noexcept;
  size_t on_header_line(Transfer& transfer, std::string_view line);
  static size_t write_callback(char* data, size_t size, size_t count, void* userp) noexcept;
  void start_response(Transfer& transfer);

  // ---- lifecycle ----------------------------------------------------------------------------

  TransferPtr acquire();
  void recycle(TransferPtr transfer);
  void configure(Transfer& transfer, const TransferOptions& transfer_options);
  void configure_connection(Transfer& transfer, const TransferOptions& transfer_options);
  void configure_method(Transfer& transfer);
  void configure_headers(Transfer& transfer);
  void add_to_multi(Transfer& transfer);
  TransferId start(HttpRequest request, const TransferOptions& transfer_options,
                   TransferListener& listener);
  void cancel(TransferId id);
  void finish(CURL* easy, CURLcode result);
  static void complete(TransferListener& listener, const std::optional<TransportError>& error);
};

}  // namespace dispatch::worker
