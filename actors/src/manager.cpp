// The manager actor: named objects, atomic operations and transactions,
// the snapshot + log, and the client side of proxies
// (docs/design/manager.md).

#include <pactor/actors/manager.hpp>
#include <pactor/actors/reply_promise.hpp>
#include <pactor/actors/this_actor.hpp>

#include "context.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace pactor {

namespace detail {

namespace {

// ---- registries (filled at static initialisation in every process) ----

struct registries {
  std::mutex mu;
  std::unordered_map<std::string, mgr_update_fn> updates;
  std::map<std::pair<std::string, std::string>, mgr_method_fn> methods;
};

registries& regs() {
  static auto* r = new registries; // never destroyed: used at exit too
  return *r;
}

// ---- the store ----

struct object_rec {
  mgr_kind kind = mgr_kind::dict;
  std::unordered_map<std::string, std::string> dict;
  std::vector<std::string> list;
  std::string value;
  std::int64_t counter = 0;
  std::string type; // object: the registered type
  std::deque<std::string> queue;
  std::string holder; // lock: the holder's actor ref (bytes), "" = free
};

/// One object as the snapshot holds it.
struct object_wire {
  std::string name;
  std::uint8_t kind = 0;
  std::vector<std::pair<std::string, std::string>> dict;
  std::vector<std::string> list;
  std::string value;
  std::int64_t counter = 0;
  std::string type;
  std::vector<std::string> queue;
  std::string holder;
  MSGPACK_DEFINE(name, kind, dict, list, value, counter, type, queue, holder)
};

struct client_wire {
  std::uint64_t client = 0;
  std::uint64_t seq = 0;
  mgr_reply reply;
  MSGPACK_DEFINE(client, seq, reply)
};

struct snapshot_wire {
  std::uint64_t log_generation = 0;
  std::vector<object_wire> objects;
  std::vector<client_wire> clients;
  MSGPACK_DEFINE(log_generation, objects, clients)
};

struct log_entry {
  mgr_request request;
  mgr_reply reply;
  MSGPACK_DEFINE(request, reply)
};

std::uint32_t fnv1a(const char* p, std::size_t n) {
  std::uint32_t h = 2166136261U;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(p[i]);
    h *= 16777619U;
  }
  return h;
}

const char* kind_name(mgr_kind k) {
  switch (k) {
  case mgr_kind::dict:
    return "dict";
  case mgr_kind::list:
    return "list";
  case mgr_kind::value:
    return "value";
  case mgr_kind::counter:
    return "counter";
  case mgr_kind::object:
    return "object";
  case mgr_kind::queue:
    return "queue";
  case mgr_kind::lock:
    return "lock";
  }
  return "?";
}

/// An operation's failure: a status and a message.
struct op_failure {
  mgr_status status;
  std::string message;
};

[[noreturn]] void fail(mgr_status s, std::string message) {
  throw op_failure{s, std::move(message)};
}

const char* kind_name(mgr_kind k);

[[noreturn]] void no_such_op(const mgr_op& op, mgr_kind k) {
  fail(mgr_status::wrong_type, "'" + op.object + "' is a " + kind_name(k)
                                 + ": no such operation on it");
}

/// A number as the manager sees it.
struct number {
  bool is_float = false;
  std::int64_t i = 0;
  double d = 0;
  [[nodiscard]] double as_double() const {
    return is_float ? d : static_cast<double>(i);
  }
};

number to_number(const std::string& bytes, const char* what) {
  try {
    scratch_zone zone;
    auto obj = unpack_checked(zone.get(), std::as_bytes(std::span(bytes)),
                              decode_limits{}, 0, "number");
    number n;
    switch (obj.type) {
    case msgpack::type::POSITIVE_INTEGER:
      n.i = static_cast<std::int64_t>(obj.via.u64);
      return n;
    case msgpack::type::NEGATIVE_INTEGER:
      n.i = obj.via.i64;
      return n;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      n.is_float = true;
      n.d = obj.via.f64;
      return n;
    default:
      break;
    }
  } catch (const decode_error&) {
  }
  fail(mgr_status::wrong_type, std::string(what) + " is not a number");
}

std::string number_bytes(const number& n) {
  return n.is_float ? to_bytes(n.d) : to_bytes(n.i);
}

bool mutating(mgr_opcode op) {
  switch (op) {
  case mgr_opcode::get:
  case mgr_opcode::contains:
  case mgr_opcode::size:
  case mgr_opcode::keys:
  case mgr_opcode::items:
  case mgr_opcode::at:
  case mgr_opcode::check:
  case mgr_opcode::at_least:
  case mgr_opcode::locked:
  case mgr_opcode::confirm:
    return false;
  default:
    return true;
  }
}

/// An index into a list of `size` (negative from the end).
std::size_t list_index(const std::string& key, std::size_t size) {
  std::int64_t i = 0;
  try {
    i = from_bytes<std::int64_t>(key);
  } catch (const decode_error&) {
    fail(mgr_status::bad_request, "a list index that is not an integer");
  }
  auto n = static_cast<std::int64_t>(size);
  if (i < 0)
    i += n;
  if (i < 0 || i >= n)
    fail(mgr_status::index_error, "list index out of range");
  return static_cast<std::size_t>(i);
}

class store {
public:
  // -- undo (transactions) --
  struct undo {
    std::string name;
    std::optional<object_rec> whole; // nullopt: the object did not exist
    bool keyed = false;
    std::string key;
    std::optional<std::string> old;
  };

  /// Applies one operation; the reply's values.
  std::vector<std::string> apply(const mgr_op& op, std::vector<undo>* log) {
    auto code = static_cast<mgr_opcode>(op.op);
    if (code == mgr_opcode::create)
      return create(op, log);
    if (code == mgr_opcode::drop) {
      auto it = objects_.find(op.object);
      if (it == objects_.end())
        return {to_bytes(false)};
      if (log != nullptr)
        log->push_back({op.object, it->second, false, {}, {}});
      objects_.erase(it);
      return {to_bytes(true)};
    }
    auto it = objects_.find(op.object);
    if (it == objects_.end())
      fail(mgr_status::key_error, "no object named '" + op.object + "'");
    auto& o = it->second;
    switch (o.kind) {
    case mgr_kind::dict:
      return dict_op(op, code, o, log);
    case mgr_kind::list:
      save_whole(op.object, o, log);
      return list_op(code, op, o);
    case mgr_kind::value:
    case mgr_kind::object:
      save_whole(op.object, o, log);
      return value_op(code, op, o);
    case mgr_kind::counter:
      save_whole(op.object, o, log);
      return counter_op(code, op, o);
    case mgr_kind::queue:
      save_whole(op.object, o, log);
      return queue_op(code, op, o);
    case mgr_kind::lock:
      save_whole(op.object, o, log);
      return lock_op(code, op, o);
    }
    fail(mgr_status::bad_request, "an object of an unknown kind");
  }

  void rollback(std::vector<undo>& log) {
    for (auto u = log.rbegin(); u != log.rend(); ++u) {
      if (u->keyed) {
        auto it = objects_.find(u->name);
        if (it == objects_.end())
          continue;
        if (u->old)
          it->second.dict[u->key] = *u->old;
        else
          it->second.dict.erase(u->key);
      } else if (u->whole) {
        objects_[u->name] = *u->whole;
      } else {
        objects_.erase(u->name);
      }
    }
  }

  [[nodiscard]] snapshot_wire to_wire() const {
    snapshot_wire w;
    for (const auto& [name, o] : objects_) {
      object_wire ow;
      ow.name = name;
      ow.kind = static_cast<std::uint8_t>(o.kind);
      ow.dict.assign(o.dict.begin(), o.dict.end());
      ow.list = o.list;
      ow.value = o.value;
      ow.counter = o.counter;
      ow.type = o.type;
      ow.queue.assign(o.queue.begin(), o.queue.end());
      ow.holder = o.holder;
      w.objects.push_back(std::move(ow));
    }
    return w;
  }

  void from_wire(snapshot_wire& w) {
    objects_.clear();
    for (auto& ow : w.objects) {
      object_rec o;
      o.kind = static_cast<mgr_kind>(ow.kind);
      o.dict.reserve(ow.dict.size());
      for (auto& [k, v] : ow.dict)
        o.dict.emplace(std::move(k), std::move(v));
      o.list = std::move(ow.list);
      o.value = std::move(ow.value);
      o.counter = ow.counter;
      o.type = std::move(ow.type);
      o.queue.assign(ow.queue.begin(), ow.queue.end());
      o.holder = std::move(ow.holder);
      objects_.emplace(std::move(ow.name), std::move(o));
    }
  }

private:
  static void save_whole(const std::string& name, const object_rec& o,
                         std::vector<undo>* log) {
    if (log != nullptr)
      log->push_back({name, o, false, {}, {}});
  }

  std::vector<std::string> create(const mgr_op& op, std::vector<undo>* log) {
    auto kind = static_cast<mgr_kind>(from_bytes<std::uint8_t>(op.key));
    if (kind < mgr_kind::dict || kind > mgr_kind::lock)
      fail(mgr_status::bad_request, "an unknown object kind");
    auto it = objects_.find(op.object);
    if (it != objects_.end()) {
      if (it->second.kind != kind)
        fail(mgr_status::wrong_type, "'" + op.object + "' is a "
                                       + kind_name(it->second.kind) + ", not a "
                                       + kind_name(kind));
      if (kind == mgr_kind::object
          && it->second.type != from_bytes<std::string>(op.value))
        fail(mgr_status::wrong_type,
             "'" + op.object + "' is an object of type " + it->second.type);
      return {to_bytes(false)};
    }
    object_rec o;
    o.kind = kind;
    if (kind == mgr_kind::value)
      o.value = op.value;
    if (kind == mgr_kind::object)
      o.type = from_bytes<std::string>(op.value);
    if (log != nullptr)
      log->push_back({op.object, std::nullopt, false, {}, {}});
    objects_.emplace(op.object, std::move(o));
    return {to_bytes(true)};
  }

  static void save_key(const std::string& name, object_rec& o,
                       const std::string& key, std::vector<undo>* log) {
    if (log == nullptr)
      return;
    auto it = o.dict.find(key);
    log->push_back(
      {name,
       {},
       true,
       key,
       it == o.dict.end() ? std::nullopt : std::optional(it->second)});
  }

  /// Whether `key` holds `expected` ("" = whether it is missing).
  static bool holds(const std::unordered_map<std::string, std::string>& d,
                    const std::string& key, const std::string& expected) {
    auto it = d.find(key);
    return expected.empty() ? it == d.end()
                            : (it != d.end() && it->second == expected);
  }

  static std::vector<std::string> dict_op(const mgr_op& op, mgr_opcode code,
                                          object_rec& o,
                                          std::vector<undo>* log) {
    auto& d = o.dict;
    switch (code) {
    case mgr_opcode::get: {
      auto it = d.find(op.key);
      if (it == d.end())
        return {};
      return {it->second};
    }
    case mgr_opcode::set:
      save_key(op.object, o, op.key, log);
      d[op.key] = op.value;
      return {};
    case mgr_opcode::erase:
      save_key(op.object, o, op.key, log);
      return {to_bytes(d.erase(op.key) != 0)};
    case mgr_opcode::contains:
      return {to_bytes(d.count(op.key) != 0)};
    case mgr_opcode::size:
      return {to_bytes(d.size())};
    case mgr_opcode::keys: {
      std::vector<std::string> out;
      out.reserve(d.size());
      for (const auto& kv : d)
        out.push_back(kv.first);
      return out;
    }
    case mgr_opcode::items: {
      std::vector<std::string> out;
      out.reserve(2 * d.size());
      for (const auto& kv : d) {
        out.push_back(kv.first);
        out.push_back(kv.second);
      }
      return out;
    }
    case mgr_opcode::increment: {
      auto it = d.find(op.key);
      number cur;
      if (it != d.end())
        cur = to_number(it->second, "the value");
      auto delta = to_number(op.value, "the increment");
      number out;
      if (cur.is_float || delta.is_float) {
        out.is_float = true;
        out.d = cur.as_double() + delta.as_double();
      } else if (__builtin_add_overflow(cur.i, delta.i, &out.i)) {
        fail(mgr_status::wrong_type,
             "the increment overflows a 64-bit integer");
      }
      save_key(op.object, o, op.key, log);
      d[op.key] = number_bytes(out);
      return {d[op.key]};
    }
    case mgr_opcode::cas: {
      if (!holds(d, op.key, op.extra))
        return {to_bytes(false)};
      save_key(op.object, o, op.key, log);
      d[op.key] = op.value;
      return {to_bytes(true)};
    }
    case mgr_opcode::check: {
      if (!holds(d, op.key, op.extra))
        fail(mgr_status::aborted,
             "a required value in '" + op.object + "' did not match");
      return {};
    }
    case mgr_opcode::at_least: {
      auto it = d.find(op.key);
      number cur;
      if (it != d.end())
        cur = to_number(it->second, "the value");
      auto floor = to_number(op.value, "the floor");
      if (cur.as_double() < floor.as_double())
        fail(mgr_status::aborted,
             "a value in '" + op.object + "' is below the required floor");
      return {};
    }
    case mgr_opcode::get_or_insert: {
      auto [it, inserted] = d.try_emplace(op.key, op.value);
      if (inserted && log != nullptr)
        log->push_back({op.object, {}, true, op.key, std::nullopt});
      return {it->second};
    }
    case mgr_opcode::update: {
      auto [fn, arg]
        = from_bytes<std::pair<std::string, std::string>>(op.extra);
      auto f = find_update(fn);
      auto it = d.find(op.key);
      auto out = run_update(f, fn, it == d.end() ? nullptr : &it->second, arg);
      save_key(op.object, o, op.key, log);
      d[op.key] = out;
      return {std::move(out)};
    }
    case mgr_opcode::clear:
      if (log != nullptr)
        log->push_back({op.object, o, false, {}, {}});
      d.clear();
      return {};
    default:
      no_such_op(op, mgr_kind::dict);
    }
  }

  static std::vector<std::string> list_op(mgr_opcode code, const mgr_op& op,
                                          object_rec& o) {
    auto& l = o.list;
    switch (code) {
    case mgr_opcode::append:
      l.push_back(op.value);
      return {to_bytes(l.size())};
    case mgr_opcode::at:
      return {l[list_index(op.key, l.size())]};
    case mgr_opcode::set_at:
      l[list_index(op.key, l.size())] = op.value;
      return {};
    case mgr_opcode::pop: {
      if (l.empty())
        fail(mgr_status::index_error, "pop from an empty list");
      auto i = list_index(op.key, l.size());
      auto v = std::move(l[i]);
      l.erase(l.begin() + static_cast<std::ptrdiff_t>(i));
      return {std::move(v)};
    }
    case mgr_opcode::size:
      return {to_bytes(l.size())};
    case mgr_opcode::items:
      return l;
    case mgr_opcode::clear:
      l.clear();
      return {};
    default:
      no_such_op(op, mgr_kind::list);
    }
  }

  static std::vector<std::string> value_op(mgr_opcode code, const mgr_op& op,
                                           object_rec& o) {
    if (o.kind == mgr_kind::object) {
      if (code == mgr_opcode::get)
        return {o.value};
      if (code != mgr_opcode::call)
        fail(mgr_status::wrong_type,
             "'" + op.object + "' is an object: use its methods");
      auto [method, args]
        = from_bytes<std::pair<std::string, std::string>>(op.extra);
      mgr_method_fn fn = nullptr;
      {
        auto& r = regs();
        std::lock_guard lk(r.mu);
        auto it = r.methods.find({o.type, method});
        if (it != r.methods.end())
          fn = it->second;
      }
      if (fn == nullptr)
        fail(mgr_status::unknown_function,
             "type " + o.type + " has no registered method '" + method + "'");
      auto state = o.value;
      std::string out;
      try {
        out = fn(state, args);
      } catch (const std::exception& e) {
        fail(mgr_status::function_error,
             "method '" + method + "' threw: " + e.what());
      }
      o.value = std::move(state);
      return {std::move(out)};
    }
    switch (code) {
    case mgr_opcode::get:
      return {o.value};
    case mgr_opcode::set:
      o.value = op.value;
      return {};
    case mgr_opcode::cas:
      if (o.value != op.extra)
        return {to_bytes(false)};
      o.value = op.value;
      return {to_bytes(true)};
    case mgr_opcode::update: {
      auto [fn, arg]
        = from_bytes<std::pair<std::string, std::string>>(op.extra);
      o.value = run_update(find_update(fn), fn, &o.value, arg);
      return {o.value};
    }
    default:
      no_such_op(op, mgr_kind::value);
    }
  }

  static std::vector<std::string> counter_op(mgr_opcode code, const mgr_op& op,
                                             object_rec& o) {
    switch (code) {
    case mgr_opcode::get:
      return {to_bytes(o.counter)};
    case mgr_opcode::increment: {
      std::int64_t sum = 0;
      if (__builtin_add_overflow(o.counter,
                                 to_number(op.value, "the increment").i, &sum))
        fail(mgr_status::wrong_type, "the counter would overflow");
      o.counter = sum;
      return {to_bytes(o.counter)};
    }
    case mgr_opcode::set:
      o.counter = to_number(op.value, "the value").i;
      return {};
    default:
      no_such_op(op, mgr_kind::counter);
    }
  }

  static std::vector<std::string> queue_op(mgr_opcode code, const mgr_op& op,
                                           object_rec& o) {
    switch (code) {
    case mgr_opcode::put:
      o.queue.push_back(op.value);
      return {to_bytes(o.queue.size())};
    case mgr_opcode::try_get: {
      if (o.queue.empty())
        return {};
      auto v = std::move(o.queue.front());
      o.queue.pop_front();
      return {std::move(v)};
    }
    case mgr_opcode::size:
      return {to_bytes(o.queue.size())};
    default:
      no_such_op(op, mgr_kind::queue);
    }
  }

  // op.value: the caller's actor ref (the manager fills it in).
  static std::vector<std::string> lock_op(mgr_opcode code, const mgr_op& op,
                                          object_rec& o) {
    switch (code) {
    case mgr_opcode::acquire:
      if (!o.holder.empty())
        return {to_bytes(false)};
      o.holder = op.value;
      return {to_bytes(true)};
    case mgr_opcode::release:
      if (o.holder.empty() || o.holder != op.value)
        fail(mgr_status::bad_request,
             "lock '" + op.object + "' is not held by this process");
      o.holder.clear();
      return {};
    case mgr_opcode::locked:
      return {to_bytes(!o.holder.empty())};
    default:
      no_such_op(op, mgr_kind::lock);
    }
  }

public:
  /// Frees every lock held by actor `who` (it ended); returns their names
  /// and holders.
  std::vector<std::pair<std::string, std::string>> release_all(actor_ref who) {
    std::vector<std::pair<std::string, std::string>> freed;
    for (auto& [name, o] : objects_)
      if (o.kind == mgr_kind::lock && !o.holder.empty()
          && holder_ref(o.holder) == who) {
        freed.emplace_back(name, o.holder);
        o.holder.clear();
      }
    return freed;
  }
  /// A lock holder is (client id, the sender's actor ref: none for the
  /// program, which ends with the whole system).
  static actor_ref holder_ref(const std::string& holder) {
    return from_bytes<std::pair<std::uint64_t, actor_ref>>(holder).second;
  }
  /// The holders of the locks that are held.
  [[nodiscard]] std::vector<std::string> holders() const {
    std::vector<std::string> out;
    for (const auto& [name, o] : objects_)
      if (o.kind == mgr_kind::lock && !o.holder.empty())
        out.push_back(o.holder);
    return out;
  }

private:
  static mgr_update_fn find_update(const std::string& name) {
    auto& r = regs();
    std::lock_guard lk(r.mu);
    auto it = r.updates.find(name);
    if (it == r.updates.end())
      fail(mgr_status::unknown_function,
           "no update function registered as '" + name + "'");
    return it->second;
  }

  static std::string run_update(mgr_update_fn f, const std::string& name,
                                const std::string* current,
                                const std::string& arg) {
    try {
      return f(current, arg);
    } catch (const std::exception& e) {
      fail(mgr_status::function_error,
           "update function '" + name + "' threw: " + e.what());
    }
  }

  std::map<std::string, object_rec> objects_;
};

// ---- the manager actor ----

/// A timer message: the wait of the waiter with this nonce is over.
struct mgr_wait_over {
  std::uint64_t nonce = 0;
  MSGPACK_DEFINE(nonce)
};

class manager_actor {
public:
  explicit manager_actor(mgr_config cfg) : cfg_(std::move(cfg)) {
    if (!cfg_.data_dir.empty())
      recover();
  }
  manager_actor(const manager_actor&) = delete;
  manager_actor& operator=(const manager_actor&) = delete;
  ~manager_actor() {
    if (log_fd_ >= 0) {
      if (dirty_)
        ::fdatasync(log_fd_);
      ::close(log_fd_);
    }
  }

  void on_start() {
    // Holders of locks from before a restart: watch them again.
    for (const auto& h : store_.holders())
      watch(h);
    if (log_fd_ >= 0
        && static_cast<durability>(cfg_.sync) == durability::periodic)
      this_actor::set_idle_timeout(std::chrono::milliseconds(
        std::max<std::int64_t>(cfg_.sync_every_ms, 1)));
  }

  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const mgr_request& r) -> reply_promise<mgr_reply> {
        if (r.told) { // pipelined: no reply
          mgr_request applied;
          auto reply = handle(r, &applied);
          if (reply.status != 0 && r.client != 0)
            told_errors_.try_emplace(r.client, reply); // the first counts
          else if (reply.status == 0)
            wake_after(applied);
          return {};
        }
        auto p = this_actor::promise<mgr_reply>();
        if (r.ops.size() == 1
            && static_cast<mgr_opcode>(r.ops.front().op)
                 == mgr_opcode::confirm) {
          p.deliver(confirmed(r.client));
          return p;
        }
        // This client moved on from (or sends again) what it waits for.
        drop_waiters(r.client, r.seq);
        if (r.stale_after_ns != 0
            && std::chrono::steady_clock::now().time_since_epoch()
                 > std::chrono::nanoseconds(r.stale_after_ns)) {
          // Its client stopped waiting: apply nothing, answer "nothing"
          // (an empty get, a lost acquire), as when a wait ends.
          mgr_reply nothing;
          if (r.ops.size() == 1
              && static_cast<mgr_opcode>(r.ops.front().op)
                   == mgr_opcode::acquire)
            nothing.values.push_back(to_bytes(false));
          p.deliver(nothing);
          return p;
        }
        mgr_request applied;
        auto reply = handle(r, &applied);
        if (r.wait_ms > 0 && reply.status == 0 && r.ops.size() == 1
            && !r.transaction && found_nothing(applied.ops.front(), reply)) {
          add_waiter(p, std::move(applied), std::move(reply), r.wait_ms);
          return p; // answered by a put / release, or when the wait ends
        }
        p.deliver(reply);
        if (reply.status == 0)
          wake_after(applied);
        return p;
      },
      [this](const this_actor::idle&) { sync_now(); },
      [this](const down& d) { holder_ended(d.who); },
      [this](const mgr_wait_over& w) { wait_over(w); },
    };
  }

private:
  // -- requests held until they can succeed (queue get, lock acquire) --

  struct waiter {
    reply_promise<mgr_reply> promise;
    mgr_request req;   // with the holder filled in (acquire)
    mgr_reply nothing; // the answer if the wait ends without success
    this_actor::timer_id timer{};
    std::uint64_t nonce = 0; // its timer message names it
  };

  void add_waiter(reply_promise<mgr_reply> p, mgr_request r, mgr_reply nothing,
                  std::int64_t wait_ms) {
    auto name = r.ops.front().object;
    auto nonce = ++next_nonce_;
    auto t = this_actor::send_after(this_actor::self(),
                                    std::chrono::milliseconds(wait_ms),
                                    mgr_wait_over{nonce});
    waiters_[name].push_back(
      {std::move(p), std::move(r), std::move(nothing), t, nonce});
  }

  /// Forgets the waits of `client` up to `seq` (a later request: it gave
  /// up on them; the same one: it is sent again, the new copy waits).
  void drop_waiters(std::uint64_t client, std::uint64_t seq) {
    if (client == 0 || waiters_.empty())
      return;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      std::erase_if(it->second, [&](const waiter& w) {
        if (w.req.client != client || w.req.seq > seq)
          return false;
        this_actor::cancel_timer(w.timer);
        return true;
      });
      it = it->second.empty() ? waiters_.erase(it) : std::next(it);
    }
  }

  void wait_over(const mgr_wait_over& over) {
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      auto& q = it->second;
      auto w = std::find_if(q.begin(), q.end(), [&](const waiter& x) {
        return x.nonce == over.nonce; // (a fired timer of a dropped waiter
      });                             // names none)
      if (w == q.end())
        continue;
      auto p = std::move(w->promise);
      auto nothing = std::move(w->nothing);
      q.erase(w);
      if (q.empty())
        waiters_.erase(it);
      p.deliver(nothing);
      return;
    }
  }

  /// After a request that changed objects: serves their waiters in order
  /// while they succeed.
  void wake_after(const mgr_request& r) {
    if (waiters_.empty())
      return;
    for (const auto& op : r.ops)
      if (mutating(static_cast<mgr_opcode>(op.op)))
        wake(op.object);
  }

  void wake(const std::string& name) {
    auto it = waiters_.find(name);
    if (it == waiters_.end())
      return;
    auto& q = it->second;
    while (!q.empty()) {
      auto reply = handle_applied(q.front().req);
      if (reply.status == 0 && found_nothing(q.front().req.ops.front(), reply))
        break; // (applied nothing: not logged, not recorded)
      this_actor::cancel_timer(q.front().timer);
      auto p = std::move(q.front().promise);
      q.pop_front();
      p.deliver(reply);
    }
    if (q.empty())
      waiters_.erase(it);
  }

  /// The first error among the client's pipelined (told) requests since its
  /// last confirm, or ok.
  mgr_reply confirmed(std::uint64_t client) {
    auto it = told_errors_.find(client);
    if (it == told_errors_.end())
      return {};
    auto reply = std::move(it->second);
    told_errors_.erase(it);
    reply.error = "a pipelined call failed: " + reply.error;
    return reply;
  }

  /// A lock holder ended: its locks are freed (a logged release, so that
  /// a replay frees them too).
  void holder_ended(actor_ref who) {
    watched_.erase(who.to_string());
    auto freed = store_.release_all(who);
    if (!freed.empty() && log_fd_ >= 0)
      log_releases(freed);
    for (const auto& f : freed)
      wake(f.first);
  }

  void
  log_releases(const std::vector<std::pair<std::string, std::string>>& freed) {
    mgr_request r;
    for (auto& [name, holder] : freed) {
      mgr_op op;
      op.op = static_cast<std::uint8_t>(mgr_opcode::release);
      op.object = name;
      op.value = holder;
      r.ops.push_back(std::move(op));
    }
    r.transaction = true; // replayed as one request, all or nothing
    // Replaying it on a state where they are free already would fail and
    // roll back: harmless.
    append(r, mgr_reply{});
  }

  void watch(const std::string& holder) {
    auto who = store::holder_ref(holder);
    if (who == actor_ref{})
      return; // the program: it ends with the whole system
    if (watched_.insert(who.to_string()).second)
      this_actor::monitor(who);
  }

  /// Applies `in` (its acquires and releases made the sender's); `applied`
  /// gets the request as applied.
  mgr_reply handle(const mgr_request& in, mgr_request* applied = nullptr) {
    // A lock is held by the process that sent the request: the manager
    // writes who that is into the request (and so into the log).
    const mgr_request* rp = &in;
    mgr_request patched;
    if (std::any_of(in.ops.begin(), in.ops.end(), [](const mgr_op& op) {
          auto c = static_cast<mgr_opcode>(op.op);
          return c == mgr_opcode::acquire || c == mgr_opcode::release;
        })) {
      patched = in;
      for (auto& op : patched.ops) {
        auto c = static_cast<mgr_opcode>(op.op);
        if (c != mgr_opcode::acquire && c != mgr_opcode::release)
          continue;
        // extra: whether the caller is an actor (the program's own ref
        // cannot be monitored; it ends with the whole system anyway).
        bool actor = !op.extra.empty() && from_bytes<bool>(op.extra);
        op.value = to_bytes(
          std::pair(in.client, actor ? this_actor::sender() : actor_ref{}));
      }
      rp = &patched;
    }
    if (applied != nullptr)
      *applied = *rp;
    return handle_applied(*rp);
  }

  mgr_reply handle_applied(const mgr_request& r) {
    auto reply = handle_checked(r);
    if (reply.status == 0)
      for (const auto& op : r.ops)
        if (static_cast<mgr_opcode>(op.op) == mgr_opcode::acquire
            && !reply.values.empty() && from_bytes<bool>(reply.values.back()))
          watch(op.value);
    return reply;
  }

  mgr_reply handle_checked(const mgr_request& r) {
    if (r.client != 0) {
      auto it = clients_.find(r.client);
      if (it != clients_.end() && r.seq <= it->second.seq) {
        if (r.seq == it->second.seq)
          return it->second.reply; // a redelivered request: answered once
        mgr_reply stale;
        stale.status = static_cast<std::uint8_t>(mgr_status::bad_request);
        stale.error = "a request older than one already applied";
        return stale;
      }
    }
    auto reply = execute(r);
    if (reply.status == 0 && changed_state(r, reply)) {
      // The client first: a snapshot that append() may take holds it.
      if (r.client != 0)
        clients_[r.client] = {r.seq, reply};
      if (log_fd_ >= 0)
        append(r, reply);
    }
    return reply;
  }

  /// Whether a successful request changed the store (a poll that found
  /// nothing, a lost acquire or CAS did not: they are not logged).
  static bool changed_state(const mgr_request& r, const mgr_reply& reply) {
    if (!std::any_of(r.ops.begin(), r.ops.end(), [](const auto& op) {
          return mutating(static_cast<mgr_opcode>(op.op));
        }))
      return false;
    if (r.transaction || r.ops.size() != 1)
      return true;
    switch (static_cast<mgr_opcode>(r.ops.front().op)) {
    case mgr_opcode::try_get:
      return !reply.values.empty();
    case mgr_opcode::acquire:
    case mgr_opcode::cas:
      return !reply.values.empty() && from_bytes<bool>(reply.values.front());
    default:
      return true;
    }
  }

  mgr_reply execute(const mgr_request& r) {
    mgr_reply reply;
    std::vector<store::undo> undo;
    std::size_t i = 0;
    try {
      for (; i < r.ops.size(); ++i) {
        auto values = store_.apply(r.ops[i], r.transaction ? &undo : nullptr);
        for (auto& v : values)
          reply.values.push_back(std::move(v));
        if (!r.transaction)
          break; // one operation per plain request
      }
    } catch (const op_failure& f) {
      if (r.transaction)
        store_.rollback(undo);
      reply.values.clear();
      reply.status = static_cast<std::uint8_t>(
        r.transaction && f.status != mgr_status::aborted ? mgr_status::aborted
                                                         : f.status);
      reply.error = r.transaction
                      ? "operation " + std::to_string(i) + ": " + f.message
                      : f.message;
    } catch (const decode_error& e) {
      if (r.transaction)
        store_.rollback(undo);
      reply.values.clear();
      reply.status = static_cast<std::uint8_t>(mgr_status::wrong_type);
      reply.error = std::string("a value did not decode: ") + e.what();
    } catch (const std::bad_alloc&) {
      throw;
    } catch (...) {
      if (r.transaction)
        store_.rollback(undo);
      reply.values.clear();
      reply.status = static_cast<std::uint8_t>(mgr_status::function_error);
      reply.error = "an operation failed: " + current_exception_type();
    }
    return reply;
  }

  // -- persistence --

  [[nodiscard]] std::string path(const std::string& leaf) const {
    return cfg_.data_dir + "/" + leaf;
  }
  [[nodiscard]] std::string log_path(std::uint64_t gen) const {
    return path("log." + std::to_string(gen));
  }

  void recover() {
    std::filesystem::create_directories(cfg_.data_dir);
    snapshot_wire snap;
    auto snap_bytes = read_file(path("snapshot"));
    if (!snap_bytes.empty()) {
      snap
        = decode_payload<snapshot_wire>(std::as_bytes(std::span(snap_bytes)));
      store_.from_wire(snap);
      for (auto& c : snap.clients)
        clients_[c.client] = {c.seq, std::move(c.reply)};
    }
    gen_ = snap.log_generation;
    // Replay the log after the snapshot, up to its last whole record.
    auto log = read_file(log_path(gen_));
    std::size_t off = 0;
    while (off + 8 <= log.size()) {
      std::uint32_t len = 0;
      std::uint32_t sum = 0;
      std::memcpy(&len, log.data() + off, 4);
      std::memcpy(&sum, log.data() + off + 4, 4);
      if (off + 8 + len > log.size() || fnv1a(log.data() + off + 8, len) != sum)
        break; // a record the crash cut short
      auto e = decode_payload<log_entry>(
        std::as_bytes(std::span(log.data() + off + 8, len)));
      (void)execute(e.request);
      if (e.request.client != 0)
        clients_[e.request.client] = {e.request.seq, std::move(e.reply)};
      off += 8 + len;
    }
    log_fd_ = ::open(log_path(gen_).c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd_ < 0)
      throw std::system_error(errno, std::system_category(),
                              "pactor::manager: cannot open " + log_path(gen_));
    if (off < log.size() && ::ftruncate(log_fd_, static_cast<off_t>(off)) != 0)
      throw std::system_error(errno, std::system_category(),
                              "pactor::manager: cannot truncate the log");
    log_bytes_ = off;
    // Logs of older generations (a crash during the last snapshot).
    for (const auto& entry :
         std::filesystem::directory_iterator(cfg_.data_dir)) {
      auto name = entry.path().filename().string();
      if (name.rfind("log.", 0) == 0 && name != "log." + std::to_string(gen_))
        std::filesystem::remove(entry.path());
    }
  }

  static std::string read_file(const std::string& p) {
    std::string out;
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT)
        return out; // absent: nothing to recover from
      throw std::system_error(errno, std::system_category(),
                              "pactor::manager: cannot read " + p);
    }
    char buf[1 << 16];
    for (;;) {
      auto n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        int err = errno;
        ::close(fd);
        throw std::system_error(err, std::system_category(),
                                "pactor::manager: cannot read " + p);
      }
      if (n == 0)
        break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
  }

  static void write_all(int fd, const char* p, std::size_t n,
                        const char* what) {
    while (n > 0) {
      auto w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        fatal(what, errno);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  /// The disk refused a write: the store in memory is ahead of the log, so
  /// this incarnation must not answer. It ends; its supervisor restarts it
  /// from the snapshot and the log, and the request at hand is redelivered.
  [[noreturn]] static void fatal(const char* what, int err) {
    std::fprintf(stderr,
                 "pactor::manager: %s failed: %s; restarting from "
                 "the data directory\n",
                 what, std::strerror(err));
    std::fflush(stderr);
    ::_exit(75);
  }

  void append(const mgr_request& r, const mgr_reply& reply) {
    log_entry e{r, reply};
    buf_.assign(8, '\0');
    auto size = packed_size(e);
    buf_.resize(8 + size);
    pack_into(e, std::as_writable_bytes(std::span(buf_).subspan(8)));
    auto len = static_cast<std::uint32_t>(size);
    auto sum = fnv1a(buf_.data() + 8, size);
    std::memcpy(buf_.data(), &len, 4);
    std::memcpy(buf_.data() + 4, &sum, 4);
    // One write: a crash leaves the record whole or cut (then dropped).
    write_all(log_fd_, buf_.data(), buf_.size(), "pactor::manager: log write");
    log_bytes_ += buf_.size();
    dirty_ = true;
    switch (static_cast<durability>(cfg_.sync)) {
    case durability::every_write:
      sync_now();
      break;
    case durability::periodic: {
      auto now = std::chrono::steady_clock::now();
      if (now - last_sync_ >= std::chrono::milliseconds(cfg_.sync_every_ms))
        sync_now();
      break;
    }
    case durability::process_crash:
      break;
    }
    if (log_bytes_ >= cfg_.snapshot_after_bytes)
      take_snapshot();
  }

  void sync_now() {
    if (log_fd_ >= 0 && dirty_) {
      ::fdatasync(log_fd_);
      dirty_ = false;
    }
    last_sync_ = std::chrono::steady_clock::now();
  }

  /// Folds the log into a new snapshot: write, sync, rename (the commit),
  /// then a fresh log of the next generation; the old one is removed.
  void take_snapshot() {
    auto w = store_.to_wire();
    w.log_generation = gen_ + 1;
    for (const auto& [client, c] : clients_)
      w.clients.push_back({client, c.seq, c.reply});
    std::vector<std::byte> bytes;
    pack_payload(bytes, w);
    auto tmp = path("snapshot.tmp");
    int fd
      = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
      fatal("cannot write a snapshot", errno);
    write_all(fd, reinterpret_cast<const char*>(bytes.data()), bytes.size(),
              "pactor::manager: snapshot write");
    ::fsync(fd);
    ::close(fd);
    if (::rename(tmp.c_str(), path("snapshot").c_str()) != 0)
      fatal("snapshot rename", errno);
    int dir = ::open(cfg_.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
    auto old = log_path(gen_);
    ++gen_;
    ::close(log_fd_);
    log_fd_ = ::open(log_path(gen_).c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd_ < 0)
      fatal("cannot open the new log", errno);
    ::unlink(old.c_str());
    log_bytes_ = 0;
    dirty_ = false;
  }

  struct client_rec {
    std::uint64_t seq = 0;
    mgr_reply reply;
  };

  mgr_config cfg_;
  store store_;
  std::unordered_map<std::uint64_t, client_rec> clients_;
  int log_fd_ = -1;
  std::uint64_t gen_ = 0;
  std::uint64_t log_bytes_ = 0;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point last_sync_{};
  std::string buf_;
  std::set<std::string> watched_;
  std::unordered_map<std::uint64_t, mgr_reply> told_errors_;
  // Held try_gets and acquires, by object name, oldest first.
  std::map<std::string, std::deque<waiter>> waiters_;
  std::uint64_t next_nonce_ = 0;
};

// ---- the client side ----

struct client_identity {
  std::uint64_t id = 0;
  std::uint64_t seq = 0;
  pid_t pid = 0;
};

client_identity& me() {
  thread_local client_identity c;
  pid_t pid = ::getpid();
  if (c.id == 0 || c.pid != pid) { // a fork child is another client
    std::random_device rd;
    c.id = (static_cast<std::uint64_t>(rd()) << 32 | rd()) | 1;
    c.seq = 0;
    c.pid = pid;
  }
  return c;
}

// A proxy call found the manager's mailbox closed (it was shut down).
[[noreturn]] void throw_gone(const actor_exited& e) {
  throw manager_shut_down(
    std::string("pactor::manager_shut_down: the manager is gone (") + e.what()
    + ")");
}

[[noreturn]] void throw_status(const mgr_reply& r) {
  switch (static_cast<mgr_status>(r.status)) {
  case mgr_status::key_error:
    throw key_error("pactor::key_error: " + r.error);
  case mgr_status::index_error:
    throw index_error("pactor::index_error: " + r.error);
  case mgr_status::wrong_type:
    throw wrong_type("pactor::wrong_type: " + r.error);
  case mgr_status::unknown_function:
    throw unknown_function("pactor::unknown_function: " + r.error);
  case mgr_status::aborted:
    throw transaction_aborted("pactor::transaction_aborted: " + r.error);
  case mgr_status::shut_down:
    throw manager_shut_down("pactor::manager_shut_down: " + r.error);
  default:
    throw manager_error("pactor::manager_error: " + r.error);
  }
}

} // namespace

void register_update_fn(const std::string& name, mgr_update_fn fn) {
  auto& r = regs();
  std::lock_guard lk(r.mu);
  r.updates[name] = fn;
}

void register_method_fn(const std::string& type, const std::string& method,
                        mgr_method_fn fn) {
  auto& r = regs();
  std::lock_guard lk(r.mu);
  r.methods[{type, method}] = fn;
}

mgr_reply call_manager(actor_ref mgr, mgr_request req,
                       std::chrono::milliseconds timeout) {
  auto& c = me();
  req.client = c.id;
  req.seq = ++c.seq;
  mgr_reply r;
  try {
    r = detail::request<mgr_reply>(mgr, req, wait_limit::after(timeout));
  } catch (const actor_exited& e) {
    throw_gone(e);
  }
  if (r.status != 0)
    throw_status(r);
  return r;
}

void send_one(actor_ref mgr, mgr_op op) {
  auto& c = me();
  mgr_request req;
  req.client = c.id;
  req.seq = ++c.seq;
  req.told = true;
  req.ops.push_back(std::move(op));
  try {
    send_message(mgr, self_ref(), req, 0, 0);
  } catch (const actor_exited& e) {
    throw_gone(e);
  }
}

void confirm_all(actor_ref mgr, std::chrono::milliseconds timeout) {
  mgr_op op;
  op.op = static_cast<std::uint8_t>(mgr_opcode::confirm);
  call_one(mgr, std::move(op), timeout); // after them in the mailbox
}

bool found_nothing(const mgr_op& op, const mgr_reply& reply) {
  switch (static_cast<mgr_opcode>(op.op)) {
  case mgr_opcode::try_get:
    return reply.values.empty();
  case mgr_opcode::acquire:
    return !reply.values.empty() && !from_bytes<bool>(reply.values.front());
  default:
    return false;
  }
}

mgr_reply call_waiting(actor_ref mgr, mgr_op op, std::chrono::milliseconds wait,
                       std::chrono::milliseconds rpc_timeout) {
  using clock = std::chrono::steady_clock;
  using ms = std::chrono::milliseconds;
  // A slice holds this process's request lock (one request at a time per
  // process, first come first served): other threads wait at most a slice.
  // A lost answer (a restart of the manager) costs a slice and the margin.
  constexpr ms slice(100);
  constexpr ms margin(250); // past the manager's own deadline
  auto& c = me();
  mgr_request req;
  req.client = c.id;
  req.seq = ++c.seq;
  req.ops.push_back(std::move(op));
  const auto deadline = clock::now() + wait;
  const auto give_up = deadline + rpc_timeout;
  for (;;) {
    auto left = std::max(ms(0), std::chrono::ceil<ms>(deadline - clock::now()));
    req.wait_ms = std::min(left, slice).count();
    const auto attempt = ms(req.wait_ms) + margin;
    req.stale_after_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           (clock::now() + attempt).time_since_epoch())
                           .count();
    mgr_reply r;
    try {
      r = detail::request<mgr_reply>(mgr, req, wait_limit::after(attempt));
    } catch (const timeout_error&) {
      // No answer: the same request again (the manager applies a sequence
      // number once, and answers a repeat of an applied one with its
      // recorded reply).
      if (clock::now() >= give_up)
        throw;
      continue;
    } catch (const actor_exited& e) {
      throw_gone(e);
    }
    if (r.status != 0)
      throw_status(r);
    if (!found_nothing(req.ops.front(), r) || left.count() == 0)
      return r;
    // This slice of the wait ended with nothing (not applied): wait on.
  }
}

mgr_reply call_one(actor_ref mgr, mgr_op op,
                   std::chrono::milliseconds timeout) {
  mgr_request req;
  req.ops.push_back(std::move(op));
  return call_manager(mgr, std::move(req), timeout);
}

} // namespace detail

transaction& transaction::add(const detail::proxy_base& p, detail::mgr_op o) {
  if (!ops_.empty() && p.mgr_ != mgr_)
    throw std::invalid_argument("pactor::transaction: every operation must "
                                "go to the same manager");
  mgr_ = p.mgr_;
  timeout_ms_ = p.timeout_ms_;
  ops_.push_back(std::move(o));
  return *this;
}

void transaction::commit() {
  if (ops_.empty())
    return;
  detail::mgr_request req;
  req.transaction = true;
  req.ops = ops_;
  auto r = detail::call_manager(mgr_, std::move(req),
                                std::chrono::milliseconds(timeout_ms_));
  results_ = std::move(r.values);
}

manager::manager(actor_system& sys, manager_options opts)
    : sys_(&sys), opts_(std::move(opts)) {
  detail::mgr_config cfg;
  cfg.data_dir = opts_.data_dir;
  cfg.sync = static_cast<std::uint8_t>(opts_.sync);
  cfg.sync_every_ms = opts_.sync_every.count();
  cfg.snapshot_after_bytes = opts_.snapshot_after_bytes;
  if (!cfg.data_dir.empty())
    cfg.data_dir = std::filesystem::absolute(cfg.data_dir).string();
  supervisor_spec spec;
  spec.intensity = opts_.intensity;
  spec.period = opts_.period;
  spec.name = opts_.name + "-sup";
  auto child = worker<detail::manager_actor>("manager", cfg);
  child.options.name = opts_.name;
  child.options.spin = opts_.spin;
  spec.children.push_back(std::move(child));
  auto sup = spawn_supervisor(sys, spec);
  sup_ = sup.ref();
  ref_ = sup.which_children().at(0).ref;
}

manager::~manager() {
  try {
    shutdown();
  } catch (...) {
  }
}

counter_proxy manager::counter(const std::string& name) {
  create(name, detail::mgr_kind::counter, {});
  return {ref_, name, opts_.timeout.count()};
}

lock_proxy manager::lock(const std::string& name) {
  create(name, detail::mgr_kind::lock, {});
  return {ref_, name, opts_.timeout.count()};
}

detail::mgr_reply lock_proxy::holder_op(detail::mgr_opcode code) const {
  // extra: whether the caller is an actor (the manager then watches it).
  return send(code, {}, {}, detail::to_bytes(detail::inside_actor()));
}

bool lock_proxy::try_acquire() const {
  return detail::from_bytes<bool>(
    holder_op(detail::mgr_opcode::acquire).values.at(0));
}

bool lock_proxy::acquire(std::chrono::milliseconds timeout) const {
  auto r
    = detail::call_waiting(mgr_,
                           make(detail::mgr_opcode::acquire, {}, {},
                                detail::to_bytes(detail::inside_actor())),
                           timeout, std::chrono::milliseconds(timeout_ms_));
  return detail::from_bytes<bool>(r.values.at(0));
}

void lock_proxy::lock() const {
  if (!acquire(std::chrono::milliseconds(timeout_ms_)))
    throw timeout_error();
}

void lock_proxy::release() const {
  holder_op(detail::mgr_opcode::release);
}

bool lock_proxy::locked() const {
  return first<bool>(detail::mgr_opcode::locked);
}

bool manager::drop(const std::string& name) {
  detail::mgr_op op;
  op.op = static_cast<std::uint8_t>(detail::mgr_opcode::drop);
  op.object = name;
  return detail::from_bytes<bool>(
    detail::call_one(ref_, std::move(op), opts_.timeout).values.at(0));
}

void manager::create(const std::string& name, detail::mgr_kind kind,
                     std::string initial) {
  if (down_)
    throw manager_shut_down("pactor::manager_shut_down: the manager was shut "
                            "down");
  detail::mgr_op op;
  op.op = static_cast<std::uint8_t>(detail::mgr_opcode::create);
  op.object = name;
  op.key = detail::to_bytes(static_cast<std::uint8_t>(kind));
  op.value = std::move(initial);
  detail::call_one(ref_, std::move(op), opts_.timeout);
}

void manager::shutdown() {
  if (down_)
    return;
  down_ = true;
  // A top-level supervisor closes its children's mailboxes as it stops: a
  // proxy call then fails with manager_shut_down.
  sys_->stop(sup_);
  (void)sys_->join(sup_, std::chrono::seconds(30));
}

} // namespace pactor
