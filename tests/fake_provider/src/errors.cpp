#include "dispatch/fake_provider/errors.hpp"

namespace dispatch::fake_provider {

ErrorKind kind_for_status(int status) {
  switch (status) {
    case 400:
      return ErrorKind::invalid_request;
    case 401:
      return ErrorKind::authentication;
    case 403:
      return ErrorKind::permission;
    case 404:
      return ErrorKind::not_found;
    case 408:
      return ErrorKind::request_timeout;
    case 409:
      return ErrorKind::conflict;
    case 413:
      return ErrorKind::request_too_large;
    case 422:
      return ErrorKind::unprocessable;
    case 429:
      return ErrorKind::rate_limited;
    case 500:
      return ErrorKind::internal;
    case 502:
      return ErrorKind::bad_gateway;
    case 503:
      return ErrorKind::unavailable;
    case 529:
      return ErrorKind::overloaded;
    default:
      return status >= 500 ? ErrorKind::internal : ErrorKind::invalid_request;
  }
}

}  // namespace dispatch::fake_provider
