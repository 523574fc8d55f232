// One msgpack adaptor for every pactor object that lives in a memfd segment
// (queue, mutex, value, array): it travels to spawn and forkserver children
// as its fd number (or fd numbers), which the process start adds to the
// child's pass_fds, and the child maps the same segment with T::attach.

#pragma once

#include <pactor/runtime/detail/sync.hpp>

#include <msgpack.hpp>

#include <type_traits>
#include <utility>

namespace pactor::detail {

/// True for types that declare `using pactor_fd_handle = void;` and have
/// `int fd() const` and `static T attach(int)`, or (objects made of several
/// fds) `std::array<int, N> fds() const` and `static T attach(array)`.
template <class T, class = void>
struct is_fd_handle : std::false_type {};

template <class T>
struct is_fd_handle<T, std::void_t<typename T::pactor_fd_handle>>
    : std::true_type {};

template <class T>
inline constexpr bool is_fd_handle_v = is_fd_handle<T>::value;

template <class T>
concept has_fd_array = requires(const T& t) {
  t.fds();
};

} // namespace pactor::detail

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <class T>
  struct pack<T, std::enable_if_t<pactor::detail::is_fd_handle_v<T>>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const T& h) const {
      if constexpr (pactor::detail::has_fd_array<T>) {
        auto fds = h.fds();
        for (int fd : fds)
          pactor::detail::fd_collector::collect(fd);
        o.pack(fds);
      } else {
        pactor::detail::fd_collector::collect(h.fd());
        o.pack(h.fd());
      }
      return o;
    }
  };
  template <class T>
  struct as<T, std::enable_if_t<pactor::detail::is_fd_handle_v<T>>> {
    T operator()(const msgpack::object& o) const {
      if constexpr (pactor::detail::has_fd_array<T>)
        return T::attach(o.as<decltype(std::declval<const T&>().fds())>());
      else
        return T::attach(o.as<int>());
    }
  };
  } // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack
