// One msgpack adaptor for every pactor object that lives in a memfd segment
// (queue, mutex, value, array): it travels to spawn and forkserver children
// as its fd number, which the process start adds to the child's pass_fds,
// and the child maps the same segment with T::attach(fd).

#pragma once

#include <pactor/runtime/detail/sync.hpp>

#include <msgpack.hpp>

#include <type_traits>

namespace pactor::detail {

/// True for types that declare `using pactor_fd_handle = void;` and have
/// `int fd() const` and `static T attach(int)`.
template <class T, class = void>
struct is_fd_handle : std::false_type {};

template <class T>
struct is_fd_handle<T, std::void_t<typename T::pactor_fd_handle>>
    : std::true_type {};

template <class T>
inline constexpr bool is_fd_handle_v = is_fd_handle<T>::value;

} // namespace pactor::detail

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <class T>
  struct pack<T, std::enable_if_t<pactor::detail::is_fd_handle_v<T>>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const T& h) const {
      pactor::detail::fd_collector::collect(h.fd());
      o.pack(h.fd());
      return o;
    }
  };
  template <class T>
  struct as<T, std::enable_if_t<pactor::detail::is_fd_handle_v<T>>> {
    T operator()(const msgpack::object& o) const {
      return T::attach(o.as<int>());
    }
  };
  } // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack
