// Shared values and arrays of trivially copyable T (cf. multiprocessing.Value,
// Array, RawValue and RawArray).

#pragma once

#include <pactor/runtime/lock.hpp>

#include <cstddef>
#include <cstring>
#include <mutex>
#include <span>
#include <stdexcept>
#include <type_traits>

namespace pactor {

/// A T in shared memory with its own death-aware mutex (Python's Value).
/// load, store and update take the mutex; raw() does not.
///
/// Example:
///
///     pactor::value<long> counter(0);
///     auto work = [counter]() mutable {
///       for (int i = 0; i < 1000; ++i) counter.update([](long& x) { ++x; });
///     };
template <class T>
class value {
  static_assert(std::is_trivially_copyable_v<T>,
                "pactor::value<T> needs a trivially copyable T");

public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  explicit value(const T& initial = T{})
      : mu_(detail::shared_mutex_handle(false, sizeof(T))),
        ptr_(reinterpret_cast<T*>(mu_.handle().extra())) {
    std::memcpy(static_cast<void*>(ptr_), &initial, sizeof(T));
  }

  /// Returns a copy of the value, under the mutex.
  [[nodiscard]] T load() {
    std::lock_guard g(mu_);
    T out;
    std::memcpy(&out, ptr_, sizeof(T));
    return out;
  }

  /// Replaces the value, under the mutex.
  void store(const T& v) {
    std::lock_guard g(mu_);
    std::memcpy(static_cast<void*>(ptr_), &v, sizeof(T));
  }

  /// Calls f(T&) under the mutex and returns its result: an atomic
  /// read-modify-write across processes.
  template <class F>
  decltype(auto) update(F&& f) {
    std::lock_guard g(mu_);
    return std::forward<F>(f)(*ptr_);
  }

  /// Returns the mutex that guards the value (Python's get_lock()).
  [[nodiscard]] mutex& get_lock() noexcept {
    return mu_;
  }

  /// Returns the shared T itself, without locking.
  [[nodiscard]] T& raw() const noexcept {
    return *ptr_;
  }

  [[nodiscard]] int fd() const noexcept {
    return mu_.fd();
  }

  /// Maps the value behind `fd` (from another process).
  static value attach(int fd) {
    return value(detail::shared_mutex_handle::attach(fd));
  }

private:
  explicit value(detail::shared_mutex_handle h)
      : mu_(std::move(h)), ptr_(reinterpret_cast<T*>(mu_.handle().extra())) {
    if (mu_.handle().seg()->size() < 64 + sizeof(T))
      throw std::invalid_argument("pactor::value: the segment is too small");
  }

  mutex mu_;
  T* ptr_;
};

/// `n` elements of T in shared memory with one death-aware mutex (Python's
/// Array). get/set take the mutex; operator[] and span() do not.
template <class T>
class array {
  static_assert(std::is_trivially_copyable_v<T>,
                "pactor::array<T> needs a trivially copyable T");

public:
  /// Travels to spawn/forkserver children as its fd (detail/fd_handle.hpp).
  using pactor_fd_handle = void;

  explicit array(std::size_t n, const T& fill = T{})
      : mu_(detail::shared_mutex_handle(false, 64 + n * sizeof(T))) {
    *reinterpret_cast<std::size_t*>(mu_.handle().extra()) = n;
    bind();
    for (std::size_t i = 0; i < n; ++i)
      std::memcpy(static_cast<void*>(data_ + i), &fill, sizeof(T));
  }

  [[nodiscard]] std::size_t size() const noexcept {
    return n_;
  }

  /// Returns element `i` under the mutex; throws std::out_of_range.
  [[nodiscard]] T get(std::size_t i) {
    check(i);
    std::lock_guard g(mu_);
    return data_[i];
  }

  /// Sets element `i` under the mutex; throws std::out_of_range.
  void set(std::size_t i, const T& v) {
    check(i);
    std::lock_guard g(mu_);
    data_[i] = v;
  }

  /// Element `i`, without locking or bounds check.
  T& operator[](std::size_t i) const noexcept {
    return data_[i];
  }

  /// All elements, without locking.
  [[nodiscard]] std::span<T> span() const noexcept {
    return {data_, n_};
  }

  [[nodiscard]] mutex& get_lock() noexcept {
    return mu_;
  }

  [[nodiscard]] int fd() const noexcept {
    return mu_.fd();
  }

  static array attach(int fd) {
    return array(detail::shared_mutex_handle::attach(fd));
  }

private:
  explicit array(detail::shared_mutex_handle h) : mu_(std::move(h)) {
    bind();
    if (mu_.handle().seg()->size() < 128 + n_ * sizeof(T))
      throw std::invalid_argument("pactor::array: the segment is too small");
  }
  void bind() noexcept {
    n_ = *reinterpret_cast<std::size_t*>(mu_.handle().extra());
    data_ = reinterpret_cast<T*>(mu_.handle().extra() + 64);
  }
  void check(std::size_t i) const {
    if (i >= n_)
      throw std::out_of_range("pactor::array: index " + std::to_string(i)
                              + " out of range for size " + std::to_string(n_));
  }

  mutex mu_;
  std::size_t n_ = 0;
  T* data_ = nullptr;
};

} // namespace pactor
