// pactor::manager: shared objects held by a supervised actor, reached
// through proxies (cf. Python's multiprocessing.Manager), with atomic
// compound operations and optional persistence. Design:
// docs/design/manager.md; guide: docs/manager.md.

#pragma once

#include <pactor/actors/actor_ref.hpp>
#include <pactor/actors/supervisor.hpp>
#include <pactor/actors/system.hpp>
#include <pactor/runtime/queue.hpp> // queue_empty
#include <pactor/serialization/codec.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace pactor {

/// Base of the errors a manager sends back. The manager keeps running.
class manager_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A key that is not in a dict (Python's KeyError), or an object that does
/// not exist.
class key_error : public manager_error {
public:
  using manager_error::manager_error;
};

/// A list index out of range, or pop from an empty list (IndexError).
class index_error : public manager_error {
public:
  using manager_error::manager_error;
};

/// An object of another kind under that name, or a value that does not
/// decode as the operation needs (increment of a string...).
class wrong_type : public manager_error {
public:
  using manager_error::manager_error;
};

/// update() or call() named a function or method nobody registered.
class unknown_function : public manager_error {
public:
  using manager_error::manager_error;
};

/// A transaction's check failed; nothing of it was applied.
class transaction_aborted : public manager_error {
public:
  using manager_error::manager_error;
};

/// The manager was shut down: every later use of its proxies fails so.
class manager_shut_down : public manager_error {
public:
  using manager_error::manager_error;
};

/// When a write reaches the disk.
enum class durability : std::uint8_t {
  /// write(2) before the reply: survives a crash of the manager process
  /// (the kernel has the data), not of the machine.
  process_crash,
  /// fdatasync before every reply: survives a machine crash.
  every_write,
  /// fdatasync at most every `sync_every`: a machine crash loses at most
  /// that much acknowledged work.
  periodic,
};

/// How a manager runs.
struct manager_options {
  /// Where the snapshot and the log live; empty: in memory only (a
  /// restart starts empty).
  std::string data_dir{};
  durability sync = durability::process_crash;
  std::chrono::milliseconds sync_every{100};
  /// The log is folded into a new snapshot when it grows past this.
  std::size_t snapshot_after_bytes = std::size_t{64} << 20;
  /// Restarts allowed within `period` before its supervisor gives up.
  int intensity = 100;
  std::chrono::milliseconds period{5000};
  /// How long a proxy call waits for the manager (a restart included).
  std::chrono::milliseconds timeout{30000};
  /// The process name.
  std::string name = "manager";
  /// How long the manager spins on its empty mailbox before it sleeps
  /// (negative: the system's default; 0: never).
  std::chrono::nanoseconds spin{-1};
};

namespace detail {

enum class mgr_kind : std::uint8_t {
  dict = 1,
  list = 2,
  value = 3,
  counter = 4,
  object = 5,
  queue = 6,
  lock = 7,
};

enum class mgr_opcode : std::uint8_t {
  create = 1, // key: the kind; value: initial (value, object)
  drop,
  get,
  set,
  erase,
  contains,
  size,
  keys,
  items,
  increment, // value: the delta (int64 or double)
  cas,       // value: desired; extra: expected ("" = missing)
  get_or_insert,
  update, // extra: [function name, argument]
  clear,
  append,
  at,
  set_at,
  pop,
  call,     // extra: [method name, arguments]
  check,    // transactions: abort unless key holds extra ("" = missing)
  at_least, // transactions: abort unless the number at key >= value
  put,      // queue: append value
  try_get,  // queue: the oldest value, or no value
  acquire,  // lock: take it if free (value: the holder's ref, set by the
            // manager)
  release,  // lock: free it (only its holder)
  locked,   // lock: whether it is held
  confirm,  // after pipelined calls: the first error among them, if any
};

enum class mgr_status : std::uint8_t {
  ok = 0,
  key_error,
  index_error,
  wrong_type,
  unknown_function,
  aborted,
  bad_request,
  shut_down,
  function_error, // a registered function or method threw
};

struct mgr_op {
  std::uint8_t op = 0;
  std::string object;
  std::string key;   // msgpack of the key, or the index, or the kind
  std::string value; // msgpack
  std::string extra; // msgpack
  MSGPACK_DEFINE(op, object, key, value, extra)
};

struct mgr_request {
  std::uint64_t client = 0;
  std::uint64_t seq = 0;
  bool transaction = false;
  std::vector<mgr_op> ops;
  bool told = false; // sent without waiting (pipelined): no reply goes back
  // try_get / acquire: how long the manager may hold the request for a
  // value or the lock before it answers with nothing (0: at once).
  std::int64_t wait_ms = 0;
  // Waiting calls: past this (steady_clock, ns since its epoch: the same
  // clock in every process) the client no longer waits for the answer, so
  // the manager answers nothing without applying it (0: no limit).
  std::int64_t stale_after_ns = 0;
  MSGPACK_DEFINE(client, seq, transaction, ops, told, wait_ms, stale_after_ns)
};

struct mgr_reply {
  std::uint8_t status = 0;
  std::vector<std::string> values;
  std::string error;
  MSGPACK_DEFINE(status, values, error)
};

/// What the manager actor is started with.
struct mgr_config {
  std::string data_dir;
  std::uint8_t sync = 0;
  std::int64_t sync_every_ms = 100;
  std::uint64_t snapshot_after_bytes = 0;
  MSGPACK_DEFINE(data_dir, sync, sync_every_ms, snapshot_after_bytes)
};

template <class T>
std::string to_bytes(const T& v) {
  std::string out(packed_size(v), '\0');
  pack_into(v, std::as_writable_bytes(std::span(out)));
  return out;
}

template <class T>
T from_bytes(const std::string& b) {
  return decode_payload<T>(std::as_bytes(std::span(b)));
}

/// Sends `req` to the manager with this thread's client id and next
/// sequence number; throws the manager's error as its type.
mgr_reply call_manager(actor_ref mgr, mgr_request req,
                       std::chrono::milliseconds timeout);
/// One operation, one reply value.
mgr_reply call_one(actor_ref mgr, mgr_op op, std::chrono::milliseconds timeout);
/// One operation sent without waiting (pipelined); confirm_all() later.
void send_one(actor_ref mgr, mgr_op op);
/// Waits until the manager applied this thread's pipelined operations;
/// throws the first error among them.
void confirm_all(actor_ref mgr, std::chrono::milliseconds timeout);
/// One try_get or acquire that the manager holds until it succeeds or
/// `wait` has passed (in slices of at most 100 ms, each sent again with
/// the same sequence number if its answer is lost, e.g. to a restart of the
/// manager: applied once). Throws timeout_error if no answer comes within
/// `wait` + `rpc_timeout`.
mgr_reply call_waiting(actor_ref mgr, mgr_op op, std::chrono::milliseconds wait,
                       std::chrono::milliseconds rpc_timeout);
/// Whether the reply to a single try_get or acquire found nothing.
bool found_nothing(const mgr_op& op, const mgr_reply& reply);

/// A registered function or method: (current state bytes or null,
/// argument bytes) -> new state bytes, and (method) the result bytes.
using mgr_update_fn
  = std::string (*)(const std::string* current, const std::string& arg);
using mgr_method_fn
  = std::string (*)(std::string& state, const std::string& args);

void register_update_fn(const std::string& name, mgr_update_fn fn);
void register_method_fn(const std::string& type, const std::string& method,
                        mgr_method_fn fn);

template <class F>
struct update_traits;
template <class V, class A>
struct update_traits<V (*)(std::optional<V>, A)> {
  using value = V;
  using arg = std::decay_t<A>;
};

template <class T>
struct method_traits;
template <class T, class R, class... A>
struct method_traits<R (T::*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class T, class R, class... A>
struct method_traits<R (T::*)(A...) const> : method_traits<R (T::*)(A...)> {};

} // namespace detail

/// Registers `fn` (V fn(std::optional<V> current, A arg)) as an update
/// function under `name`, for dict/value update(): it runs inside the
/// manager, atomically. Register at static initialisation
/// (PACTOR_MANAGER_UPDATE) so that the manager's process has it.
template <auto Fn>
void register_update(const std::string& name) {
  using F = decltype(Fn);
  detail::register_update_fn(
    name, +[](const std::string* current, const std::string& arg) {
      using traits = detail::update_traits<F>;
      using V = typename traits::value;
      using A = typename traits::arg;
      std::optional<V> cur;
      if (current != nullptr)
        cur = detail::from_bytes<V>(*current);
      return detail::to_bytes<V>(
        Fn(std::move(cur), detail::from_bytes<A>(arg)));
    });
}

/// Registers method `M` of type T under `method`, for object<T>().call().
template <class T, auto M>
void register_method(const std::string& type, const std::string& method) {
  detail::register_method_fn(
    type, method, +[](std::string& state, const std::string& args) {
      using traits = detail::method_traits<decltype(M)>;
      using R = typename traits::result;
      using Args = typename traits::args;
      T obj = state.empty() ? T{} : detail::from_bytes<T>(state);
      auto a = detail::from_bytes<Args>(args);
      std::string out;
      if constexpr (std::is_void_v<R>) {
        std::apply([&obj](auto&&... x) { (obj.*M)(std::move(x)...); }, a);
        out = detail::to_bytes(msgpack::type::nil_t());
      } else {
        out = detail::to_bytes(std::apply(
          [&obj](auto&&... x) { return (obj.*M)(std::move(x)...); }, a));
      }
      state = detail::to_bytes(obj);
      return out;
    });
}

class manager;
class transaction;

#define PACTOR_MANAGER_CAT2(a, b) a##b
#define PACTOR_MANAGER_CAT(a, b) PACTOR_MANAGER_CAT2(a, b)
/// Registers update function `fn` under `name` at static initialisation.
#define PACTOR_MANAGER_UPDATE(name, fn)                                        \
  static const bool PACTOR_MANAGER_CAT(pactor_manager_update_, __COUNTER__)    \
    = (::pactor::register_update<fn>(name), true)
/// Registers method T::method for objects of type `type_name`.
#define PACTOR_MANAGER_METHOD(type_name, T, method)                            \
  static const bool PACTOR_MANAGER_CAT(pactor_manager_method_, __COUNTER__)    \
    = (::pactor::register_method<T, &T::method>(type_name, #method), true)

namespace detail {

/// What every proxy is: the manager's ref, the object's name, the call
/// timeout; and how it sends one operation.
class proxy_base {
public:
  proxy_base() = default;
  proxy_base(actor_ref mgr, std::string name, std::int64_t timeout_ms)
      : mgr_(mgr), name_(std::move(name)), timeout_ms_(timeout_ms) {
  }
  /// The object's name in its manager.
  [[nodiscard]] const std::string& name() const noexcept {
    return name_;
  }
  /// The manager actor.
  [[nodiscard]] actor_ref manager_ref() const noexcept {
    return mgr_;
  }

protected:
  friend class pactor::transaction;
  [[nodiscard]] mgr_op make(mgr_opcode code, std::string key = {},
                            std::string value = {},
                            std::string extra = {}) const {
    mgr_op op;
    op.op = static_cast<std::uint8_t>(code);
    op.object = name_;
    op.key = std::move(key);
    op.value = std::move(value);
    op.extra = std::move(extra);
    return op;
  }
  mgr_reply send(mgr_op op) const {
    return call_one(mgr_, std::move(op),
                    std::chrono::milliseconds(timeout_ms_));
  }
  mgr_reply send(mgr_opcode code, std::string key = {}, std::string value = {},
                 std::string extra = {}) const {
    return send(make(code, std::move(key), std::move(value), std::move(extra)));
  }
  /// The first value of the reply to one operation, decoded as T.
  template <class T>
  T first(mgr_opcode code, std::string key = {}, std::string value = {},
          std::string extra = {}) const {
    return from_bytes<T>(
      send(code, std::move(key), std::move(value), std::move(extra))
        .values.at(0));
  }

  actor_ref mgr_;
  std::string name_;
  std::int64_t timeout_ms_ = 30000;
};

} // namespace detail

/// A dict<K, V> held by a manager (Python's Manager().dict()). A handle:
/// copies, and copies sent to other actors, reach the same dict. Every
/// call is one request to the manager; compound operations run there,
/// atomically.
template <class K, class V>
class dict_proxy : public detail::proxy_base {
  using op = detail::mgr_opcode;

public:
  using proxy_base::proxy_base;

  /// The value, or nullopt (Python's d.get(k)).
  std::optional<V> get(const K& k) const {
    auto r = send(op::get, key(k));
    if (r.values.empty())
      return std::nullopt;
    return detail::from_bytes<V>(r.values.front());
  }
  /// The value; key_error if missing (Python's d[k]).
  V at(const K& k) const {
    auto v = get(k);
    if (!v)
      throw key_error("pactor::key_error: no such key in dict '" + name_ + "'");
    return *v;
  }
  void set(const K& k, const V& v) const {
    send(op::set, key(k), detail::to_bytes(v));
  }
  /// Removes k; returns whether it was there.
  bool erase(const K& k) const {
    return first<bool>(op::erase, key(k));
  }
  [[nodiscard]] bool contains(const K& k) const {
    return first<bool>(op::contains, key(k));
  }
  [[nodiscard]] std::size_t size() const {
    return first<std::size_t>(op::size);
  }
  [[nodiscard]] std::vector<K> keys() const {
    std::vector<K> out;
    for (auto& b : send(op::keys).values)
      out.push_back(detail::from_bytes<K>(b));
    return out;
  }
  [[nodiscard]] std::vector<std::pair<K, V>> items() const {
    auto r = send(op::items);
    std::vector<std::pair<K, V>> out;
    for (std::size_t i = 0; i + 1 < r.values.size(); i += 2)
      out.emplace_back(detail::from_bytes<K>(r.values[i]),
                       detail::from_bytes<V>(r.values[i + 1]));
    return out;
  }
  /// d[k] += delta inside the manager (a missing key counts as 0); returns
  /// the new value. wrong_type if the value is not a number.
  V increment(const K& k, V delta = V{1}) const {
    static_assert(std::is_arithmetic_v<V>,
                  "pactor::dict_proxy::increment needs a numeric value type");
    return first<V>(op::increment, key(k), detail::to_bytes(delta));
  }
  /// Sets k to `desired` if it holds `expected` (nullopt: if it is
  /// missing); returns whether it did.
  bool compare_and_set(const K& k, const std::optional<V>& expected,
                       const V& desired) const {
    return first<bool>(op::cas, key(k), detail::to_bytes(desired),
                       expected ? detail::to_bytes(*expected) : std::string());
  }
  /// The value at k, inserting `v` first if k is missing (setdefault).
  V get_or_insert(const K& k, const V& v) const {
    return first<V>(op::get_or_insert, key(k), detail::to_bytes(v));
  }
  /// d[k] = fn(d.get(k), arg) inside the manager, with a function
  /// registered under `fn` (PACTOR_MANAGER_UPDATE); returns the new value.
  template <class A>
  V update(const K& k, const std::string& fn, const A& arg) const {
    return first<V>(op::update, key(k), {},
                    detail::to_bytes(std::pair(fn, detail::to_bytes(arg))));
  }
  void clear() const {
    send(op::clear);
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)

private:
  friend class transaction;
  static std::string key(const K& k) {
    return detail::to_bytes(k);
  }
};

/// A list<T> held by a manager (Python's Manager().list()).
template <class T>
class list_proxy : public detail::proxy_base {
  using op = detail::mgr_opcode;

public:
  using proxy_base::proxy_base;

  /// Appends; returns the new size.
  std::size_t append(const T& v) const {
    return first<std::size_t>(op::append, {}, detail::to_bytes(v));
  }
  /// Element i; index_error out of range (negative counts from the end).
  T at(std::int64_t i) const {
    return first<T>(op::at, detail::to_bytes(i));
  }
  void set(std::int64_t i, const T& v) const {
    send(op::set_at, detail::to_bytes(i), detail::to_bytes(v));
  }
  /// Removes and returns element i (the last by default); index_error on
  /// an empty list.
  T pop(std::int64_t i = -1) const {
    return first<T>(op::pop, detail::to_bytes(i));
  }
  [[nodiscard]] std::size_t size() const {
    return first<std::size_t>(op::size);
  }
  /// A copy of every element.
  [[nodiscard]] std::vector<T> items() const {
    std::vector<T> out;
    for (auto& b : send(op::items).values)
      out.push_back(detail::from_bytes<T>(b));
    return out;
  }
  void clear() const {
    send(op::clear);
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)
};

/// A single value<T> held by a manager (Python's Manager().Value()).
template <class T>
class value_proxy : public detail::proxy_base {
  using op = detail::mgr_opcode;

public:
  using proxy_base::proxy_base;

  T get() const {
    return first<T>(op::get);
  }
  void set(const T& v) const {
    send(op::set, {}, detail::to_bytes(v));
  }
  bool compare_and_set(const T& expected, const T& desired) const {
    return first<bool>(op::cas, {}, detail::to_bytes(desired),
                       detail::to_bytes(expected));
  }
  /// v = fn(v, arg) inside the manager (PACTOR_MANAGER_UPDATE); the new
  /// value.
  template <class A>
  T update(const std::string& fn, const A& arg) const {
    return first<T>(op::update, {}, {},
                    detail::to_bytes(std::pair(fn, detail::to_bytes(arg))));
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)
};

/// A FIFO queue held by a manager (Python's Manager().Queue()). get()
/// waits at the manager: it holds the request (with a reply_promise, not
/// blocking anyone else) until a put gives it a value or the timeout
/// passes.
template <class T>
class queue_proxy : public detail::proxy_base {
  using op = detail::mgr_opcode;

public:
  using proxy_base::proxy_base;

  /// Appends; returns the new size.
  std::size_t put(const T& v) const {
    return first<std::size_t>(op::put, {}, detail::to_bytes(v));
  }
  /// The oldest value if there is one.
  std::optional<T> try_get() const {
    auto r = send(op::try_get);
    if (r.values.empty())
      return std::nullopt;
    return detail::from_bytes<T>(r.values.front());
  }
  /// Waits at most `timeout` for a value; queue_empty after it.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const {
    auto r = detail::call_waiting(
      mgr_, make(op::try_get),
      std::chrono::ceil<std::chrono::milliseconds>(timeout),
      std::chrono::milliseconds(timeout_ms_));
    if (r.values.empty())
      throw queue_empty();
    return detail::from_bytes<T>(r.values.front());
  }
  [[nodiscard]] std::size_t size() const {
    return first<std::size_t>(op::size);
  }
  [[nodiscard]] bool empty() const {
    return size() == 0;
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)
};

/// A lock held by a manager (Python's Manager().Lock()), owned by the
/// process (program or actor) that acquired it. When an actor holding it
/// ends, the manager releases it. acquire() waits at the manager, as
/// queue_proxy::get does (no polling). BasicLockable:
/// std::lock_guard<pactor::lock_proxy> works.
class lock_proxy : public detail::proxy_base {
public:
  using proxy_base::proxy_base;

  /// Takes the lock if it is free now.
  bool try_acquire() const;
  /// Waits at most `timeout`; returns whether it got the lock.
  bool acquire(std::chrono::milliseconds timeout) const;
  /// Waits for the lock (at most the proxy's timeout: timeout_error).
  void lock() const;
  void unlock() const {
    release();
  }
  /// Frees the lock; manager_error if this process does not hold it.
  void release() const;
  [[nodiscard]] bool locked() const;

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)

private:
  detail::mgr_reply holder_op(detail::mgr_opcode code) const;
};

/// A 64-bit counter held by a manager.
class counter_proxy : public detail::proxy_base {
public:
  using proxy_base::proxy_base;

  /// Adds `delta` atomically; returns the new value.
  std::int64_t add(std::int64_t delta = 1) const {
    return first<std::int64_t>(detail::mgr_opcode::increment, {},
                               detail::to_bytes(delta));
  }
  [[nodiscard]] std::int64_t get() const {
    return first<std::int64_t>(detail::mgr_opcode::get);
  }
  void set(std::int64_t v) const {
    send(detail::mgr_opcode::set, {}, detail::to_bytes(v));
  }
  /// Pipelined add: sent without waiting for the manager (fire now,
  /// confirm later). Applied in order, once each (deduplicated as every
  /// call is); confirm() waits for them and throws the first error.
  void add_later(std::int64_t delta = 1) const {
    detail::send_one(
      mgr_, make(detail::mgr_opcode::increment, {}, detail::to_bytes(delta)));
  }
  /// Waits until every add_later of this thread to this manager is applied.
  void confirm() const {
    detail::confirm_all(mgr_, std::chrono::milliseconds(timeout_ms_));
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)
};

/// An object of a registered type T (PACTOR_MANAGER_METHOD), whose methods
/// run inside the manager (Python's BaseManager.register).
template <class T>
class object_proxy : public detail::proxy_base {
public:
  using proxy_base::proxy_base;

  /// Calls the method registered as `method`; R is its result type.
  template <class R, class... A>
  R call(const std::string& method, const A&... args) const {
    auto r = send(detail::mgr_opcode::call, {}, {},
                  detail::to_bytes(std::pair(
                    method, detail::to_bytes(std::tuple<A...>(args...)))));
    if constexpr (!std::is_void_v<R>)
      return detail::from_bytes<R>(r.values.at(0));
  }
  /// A copy of the object's state.
  [[nodiscard]] T get() const {
    auto r = send(detail::mgr_opcode::get);
    return r.values.at(0).empty() ? T{} : detail::from_bytes<T>(r.values.at(0));
  }

  MSGPACK_DEFINE(mgr_, name_, timeout_ms_)
};

/// Several operations on one manager, applied all or nothing (a
/// transaction_aborted when a check or an operation fails).
///
///     pactor::transaction tx;
///     tx.increment(accounts, std::string("alice"), -10L)
///       .require_at_least(accounts, std::string("alice"), 0L)
///       .increment(accounts, std::string("bob"), 10L);
///     tx.commit();
class transaction {
  using op = detail::mgr_opcode;

public:
  template <class K, class V>
  transaction& set(const dict_proxy<K, V>& d, const K& k, const V& v) {
    return add(d, d.make(op::set, detail::to_bytes(k), detail::to_bytes(v)));
  }
  template <class K, class V>
  transaction& increment(const dict_proxy<K, V>& d, const K& k, V delta) {
    return add(
      d, d.make(op::increment, detail::to_bytes(k), detail::to_bytes(delta)));
  }
  template <class K, class V>
  transaction& erase(const dict_proxy<K, V>& d, const K& k) {
    return add(d, d.make(op::erase, detail::to_bytes(k)));
  }
  /// Aborts the transaction unless k holds `expected` (nullopt: missing).
  template <class K, class V>
  transaction& require(const dict_proxy<K, V>& d, const K& k,
                       const std::optional<V>& expected) {
    return add(d,
               d.make(op::check, detail::to_bytes(k), {},
                      expected ? detail::to_bytes(*expected) : std::string()));
  }
  /// Aborts the transaction unless the number at k is >= `floor` (a
  /// missing key counts as 0).
  template <class K, class V>
  transaction& require_at_least(const dict_proxy<K, V>& d, const K& k,
                                V floor) {
    return add(
      d, d.make(op::at_least, detail::to_bytes(k), detail::to_bytes(floor)));
  }
  /// Adds `delta` to a counter.
  transaction& add(const counter_proxy& c, std::int64_t delta) {
    return add(c, c.make(op::increment, {}, detail::to_bytes(delta)));
  }

  /// Applies every operation atomically; result<T>(i) decodes the values
  /// the operations returned, in order.
  void commit();
  template <class T>
  [[nodiscard]] T result(std::size_t i) const {
    return detail::from_bytes<T>(results_.at(i));
  }

private:
  transaction& add(const detail::proxy_base& p, detail::mgr_op o);
  actor_ref mgr_{};
  std::vector<detail::mgr_op> ops_;
  std::vector<std::string> results_;
  std::int64_t timeout_ms_ = 30000;
};

/// Starts a manager: a supervised actor holding named shared objects
/// (Python's multiprocessing.Manager()). Proxies from it work in the
/// program and in any actor they are sent to. The destructor shuts it
/// down; proxies used afterwards throw manager_shut_down.
///
/// Example:
///
///     pactor::actor_system sys;
///     pactor::manager mgr(sys, {.data_dir = "/var/lib/app/state"});
///     auto words = mgr.dict<std::string, long>("words");
///     words.increment("hello");           // atomic, inside the manager
///     long n = words.at("hello");
class manager {
public:
  explicit manager(actor_system& sys, manager_options opts = {});
  ~manager();
  manager(const manager&) = delete;
  manager& operator=(const manager&) = delete;

  /// The dict called `name` (created empty if it does not exist);
  /// wrong_type if `name` is another kind of object.
  template <class K, class V>
  dict_proxy<K, V> dict(const std::string& name) {
    create(name, detail::mgr_kind::dict, {});
    return {ref_, name, opts_.timeout.count()};
  }
  template <class T>
  list_proxy<T> list(const std::string& name) {
    create(name, detail::mgr_kind::list, {});
    return {ref_, name, opts_.timeout.count()};
  }
  /// The value called `name`, set to `initial` if it does not exist.
  template <class T>
  value_proxy<T> value(const std::string& name, const T& initial = T{}) {
    create(name, detail::mgr_kind::value, detail::to_bytes(initial));
    return {ref_, name, opts_.timeout.count()};
  }
  counter_proxy counter(const std::string& name);
  /// A FIFO queue (Manager().Queue()).
  template <class T>
  queue_proxy<T> queue(const std::string& name) {
    create(name, detail::mgr_kind::queue, {});
    return {ref_, name, opts_.timeout.count()};
  }
  /// A lock (Manager().Lock()), released by the manager when its holder
  /// ends.
  lock_proxy lock(const std::string& name);
  /// An object of registered type `type` (register_method<T, ...>(type,
  /// ...)), default-constructed if it does not exist.
  template <class T>
  object_proxy<T> object(const std::string& name, const std::string& type) {
    create(name, detail::mgr_kind::object, detail::to_bytes(type));
    return {ref_, name, opts_.timeout.count()};
  }
  /// A namespace: a dict of msgpack values by name (Python's Namespace).
  template <class V>
  dict_proxy<std::string, V> ns(const std::string& name = "namespace") {
    return dict<std::string, V>(name);
  }
  /// Removes an object; returns whether it existed.
  bool drop(const std::string& name);

  /// The manager actor (stays the same across its restarts).
  [[nodiscard]] actor_ref ref() const noexcept {
    return ref_;
  }
  /// Its supervisor.
  [[nodiscard]] actor_ref supervisor() const noexcept {
    return sup_;
  }
  /// Stops the manager (after the requests already sent); later proxy
  /// calls throw manager_shut_down. Idempotent.
  void shutdown();

private:
  void create(const std::string& name, detail::mgr_kind kind,
              std::string initial);

  actor_system* sys_;
  manager_options opts_;
  actor_ref sup_{};
  actor_ref ref_{};
  bool down_ = false;
};

} // namespace pactor
