#pragma once

// Result<T, E>: the one way a function returns "a T, or the reason it could not" (the shape of
// C++23's std::expected, which this toolchain's C++20 mode lacks). Used wherever the caller
// needs the reason: decoding (E = protocol::DecodeError), building a provider request
// (E = worker::Failure), reading files and command lines (E = std::string).
//
//   Result<Json, Failure> parse(std::string_view text) {
//     if (text.empty()) return Failure{...};   // an E converts implicitly when T cannot take it
//     return Json::parse(text);
//   }
//   auto json = parse(text);
//   if (!json) return json.error();
//   use(*json);
//
// When T and E are the same type (or convertible to each other) the error side is spelled
// `dispatch::fail(e)`, as std::unexpected would be. Result<void, E> is "ok or the reason".

#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace dispatch {

// The error side, made explicit.
template <class E>
struct Failed {
  E error;
};
template <class E>
Failed<std::decay_t<E>> fail(E&& error) {
  return Failed<std::decay_t<E>>{std::forward<E>(error)};
}

template <class T, class E>
class [[nodiscard]] Result {
  static_assert(!std::is_reference_v<T> && !std::is_reference_v<E>);
  // An E converts implicitly only when that cannot be mistaken for a T.
  static constexpr bool kImplicitError =
      !std::is_convertible_v<E, T> && !std::is_convertible_v<T, E>;

 public:
  using value_type = T;
  using error_type = E;

  // NOLINTBEGIN(google-explicit-constructor): implicit on purpose, as std::expected.
  Result(const T& value) : v_(std::in_place_index<0>, value) {}
  Result(T&& value) : v_(std::in_place_index<0>, std::move(value)) {}
  template <class U = E, std::enable_if_t<kImplicitError && std::is_same_v<U, E>, int> = 0>
  Result(const U& error) : v_(std::in_place_index<1>, error) {}
  template <class U = E, std::enable_if_t<kImplicitError && std::is_same_v<U, E>, int> = 0>
  Result(U&& error) : v_(std::in_place_index<1>, std::move(error)) {}
  template <class G>
  Result(Failed<G> failed) : v_(std::in_place_index<1>, std::move(failed.error)) {}
  // NOLINTEND(google-explicit-constructor)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  template <class U>
  T value_or(U&& fallback) const& {
    return ok() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

  E& error() & { return std::get<1>(v_); }
  const E& error() const& { return std::get<1>(v_); }
  E&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, E> v_;
};

// "Ok, or the reason it failed". Default-constructed is ok.
template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  using value_type = void;
  using error_type = E;

  Result() = default;
  // NOLINTBEGIN(google-explicit-constructor)
  Result(const E& error) : error_(error) {}
  Result(E&& error) : error_(std::move(error)) {}
  template <class G>
  Result(Failed<G> failed) : error_(std::move(failed.error)) {}
  // NOLINTEND(google-explicit-constructor)

  bool ok() const noexcept { return !error_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }

  E& error() & { return *error_; }
  const E& error() const& { return *error_; }
  E&& error() && { return std::move(*error_); }

 private:
  std::optional<E> error_;
};

}  // namespace dispatch
