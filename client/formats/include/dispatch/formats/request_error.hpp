#pragma once

// Why an HTTP API body could not become a dispatch request: the status the API answers with,
// a sentence that starts with the offending field's path, and that path on its own (OpenAI's
// `param`), so a client can point at the field without parsing the sentence.

#include <string>
#include <string_view>

namespace dispatch::formats {

struct RequestError {
  int status = 400;
  std::string message;  // "temperature must be a number", "messages[2].role 'robot' is not …"
  std::string param;    // "temperature", "messages[2].role"; "" when no single field is at fault
  std::string code;     // machine-readable: "invalid_type", "invalid_value", "model_not_found" …

  bool operator==(const RequestError&) const = default;
};

// `param` + " " + `problem` ("must be a number"), or `param` + `problem` when the problem
// starts with ':' ("model: target 'x' is not …").
RequestError invalid_field(std::string param, std::string_view problem,
                           std::string code = "invalid_value");
// A wrong JSON type: "<param> must be <expected>".
RequestError wrong_type(std::string param, std::string_view expected);

// "messages" + 2 -> "messages[2]"; "messages[2]" + "content" -> "messages[2].content".
std::string path_index(std::string_view path, std::size_t index);
std::string path_key(std::string_view path, std::string_view key);

}  // namespace dispatch::formats
