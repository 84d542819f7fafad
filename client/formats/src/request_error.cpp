#include "dispatch/formats/request_error.hpp"

namespace dispatch::formats {

RequestError invalid_field(std::string param, std::string_view problem, std::string code) {
  RequestError error;
  error.message = param;
  if (!problem.empty() && problem.front() != ':') error.message += ' ';
  error.message += problem;
  error.param = std::move(param);
  error.code = std::move(code);
  return error;
}

RequestError wrong_type(std::string param, std::string_view expected) {
  return invalid_field(std::move(param), "must be " + std::string(expected), "invalid_type");
}

std::string path_index(std::string_view path, std::size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

std::string path_key(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return std::string(path) + "." + std::string(key);
}

}  // namespace dispatch::formats
