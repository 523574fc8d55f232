// pipe<T>: two connected ends that send and receive messages (cf. Python's
// multiprocessing.Pipe and Connection).

#pragma once

#include <pactor/runtime/detail/ring.hpp>
#include <pactor/runtime/queue.hpp>
#include <pactor/serialization/codec.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <utility>

namespace pactor {

/// recv on an end whose peer is gone (closed or died) and nothing is left
/// (Python's EOFError).
class eof_error : public std::runtime_error {
public:
  eof_error()
      : std::runtime_error("pactor::eof_error: the other end of the pipe is "
                           "closed and nothing is left to receive") {
  }
};

/// send on an end whose peer is gone, when the message cannot be buffered
/// (Python's BrokenPipeError).
class broken_pipe : public std::runtime_error {
public:
  broken_pipe()
      : std::runtime_error("pactor::broken_pipe: the other end of the pipe is "
                           "gone") {
  }
};

/// A timed operation ran out of time.
class timeout_error : public std::runtime_error {
public:
  timeout_error() : std::runtime_error("pactor::timeout_error: timed out") {
  }
};

struct pipe_options {
  /// Bytes buffered per direction; one message must fit.
  std::size_t capacity_bytes = std::size_t{256} << 10;
  /// How long a waiting send or recv spins before it sleeps; 0 = never.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
};

namespace detail {

struct pipe_flags;

/// One end of a pipe, untyped. See docs/design/pipe.md.
class pipe_end {
public:
  static std::pair<pipe_end, pipe_end> create(bool duplex,
                                              const pipe_options& opts);
  /// index, socket, flags, in ring (3 fds), out ring (3 fds).
  static constexpr int packed_ints = 9;
  /// Rebuilds an end from collect_fds() output (in another process); takes
  /// the socket fd over.
  static pipe_end attach(std::span<const int, packed_ints> f);

  void send(std::size_t size, fn_ref<void(std::byte*)> write);
  /// Returns false on timeout; throws eof_error.
  bool recv(fn_ref<void(std::span<const std::byte>)> read, wait_limit limit);
  bool poll(wait_limit limit);
  void close() noexcept;
  [[nodiscard]] bool closed() const noexcept;
  [[nodiscard]] bool readable_end() const noexcept {
    return in_.has_value();
  }
  [[nodiscard]] bool writable_end() const noexcept {
    return out_.has_value();
  }
  /// index, socket, flags, in ring, out ring (-1 where absent).
  void collect_fds(std::span<int, packed_ints> out) const noexcept;
  /// For pactor::wait: the socket, the in ring, and arming for a wake.
  [[nodiscard]] int wait_fd() const noexcept {
    return sock_ ? *sock_ : -1;
  }
  [[nodiscard]] const std::optional<ring>& in_ring() const noexcept {
    return in_;
  }
  /// Asks the peer to send a wake byte on its next send.
  void arm_reader() const noexcept;
  /// Reads pending wake bytes; returns false if the peer is gone.
  bool drain_wakes() const noexcept;

private:
  bool wait(bool for_write, std::size_t size, wait_limit& limit);
  void notify(int dir, int role) noexcept;
  void check_open() const;

  int index_ = 0;
  std::shared_ptr<segment> flags_seg_;
  pipe_flags* flags_ = nullptr;
  std::optional<ring> in_;
  std::optional<ring> out_;
  std::shared_ptr<int> sock_; // closes on last handle
};

} // namespace detail

/// One end of a pipe (Python's Connection). A handle: copies share the end.
/// Use one end from one thread at a time.
template <class T>
class connection {
public:
  /// Sends `value`, blocking while the pipe is full. Throws broken_pipe if
  /// the peer is gone and the message cannot be buffered.
  void send(const T& value) {
    auto size = packed_size(value);
    auto write = [&](std::byte* dst) { pack_into(value, {dst, size}); };
    end_.send(size, write);
  }

  /// Receives the next message, blocking. Throws eof_error when the peer is
  /// gone (closed, or its process died) and nothing is left.
  T recv() {
    return *recv_until(detail::wait_limit::forever());
  }

  /// Receives the next message, waiting at most `timeout` (timeout_error).
  template <class Rep, class Period>
  T recv(std::chrono::duration<Rep, Period> timeout) {
    auto v = recv_until(detail::wait_limit::after(timeout));
    if (!v)
      throw timeout_error();
    return std::move(*v);
  }

  /// Returns whether a message is there to receive (Python's poll(0)).
  bool poll() {
    return end_.poll(detail::wait_limit::none());
  }

  /// Waits up to `timeout` for a message (true) or end of file (true: recv
  /// then throws eof_error), like Python's poll(timeout).
  template <class Rep, class Period>
  bool poll(std::chrono::duration<Rep, Period> timeout) {
    return end_.poll(detail::wait_limit::after(timeout));
  }

  /// Closes this end in this process; the peer sees end of file once every
  /// process holding this end has closed it or died.
  void close() noexcept {
    end_.close();
  }
  [[nodiscard]] bool closed() const noexcept {
    return end_.closed();
  }

  /// Internal: the untyped end.
  explicit connection(detail::pipe_end e) : end_(std::move(e)) {
  }
  [[nodiscard]] const detail::pipe_end& end() const noexcept {
    return end_;
  }

private:
  std::optional<T> recv_until(detail::wait_limit limit) {
    std::optional<T> out;
    auto read = [&](std::span<const std::byte> payload) {
      out.emplace(decode_payload<T>(payload));
    };
    if (!end_.recv(read, limit))
      return std::nullopt;
    return out;
  }

  detail::pipe_end end_;
};

/// Returns two connected ends (Python's Pipe(duplex)). With duplex, both ends
/// send and receive; otherwise the first end receives and the second sends.
template <class T>
std::pair<connection<T>, connection<T>> pipe(bool duplex = true,
                                             pipe_options opts = {}) {
  auto [a, b] = detail::pipe_end::create(duplex, opts);
  return {connection<T>(std::move(a)), connection<T>(std::move(b))};
}

} // namespace pactor

// A connection travels to spawn and forkserver children as its fds.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <class T>
  struct pack<pactor::connection<T>> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o,
                               const pactor::connection<T>& c) const {
      constexpr int n = pactor::detail::pipe_end::packed_ints;
      int fds[n];
      c.end().collect_fds(fds);
      o.pack_array(n);
      for (int i = 0; i < n; ++i) {
        if (i > 0 && fds[i] >= 0)
          pactor::detail::fd_collector::collect(fds[i]);
        o.pack(fds[i]);
      }
      return o;
    }
  };
  template <class T>
  struct as<pactor::connection<T>> {
    pactor::connection<T> operator()(const msgpack::object& o) const {
      constexpr int n = pactor::detail::pipe_end::packed_ints;
      if (o.type != msgpack::type::ARRAY || o.via.array.size != n)
        throw msgpack::type_error();
      int f[n];
      for (int i = 0; i < n; ++i)
        f[i] = o.via.array.ptr[i].as<int>();
      return pactor::connection<T>(pactor::detail::pipe_end::attach(f));
    }
  };
  } // namespace adaptor
} // MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS)
} // namespace msgpack
