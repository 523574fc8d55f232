// Supervisors: the decision core (strategies, restart types, intensity,
// backoff), the supervisor actor, and the embedded supervisor. Design:
// docs/design/supervisors.md.

#include <pactor/actors/supervisor.hpp>
#include <pactor/actors/system.hpp>
#include <pactor/actors/this_actor.hpp>
#include <pactor/runtime/wait.hpp>

#include "context.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

namespace pactor {

namespace detail {

namespace {

constexpr std::size_t supervisor_state_bytes = std::size_t{4} << 20;

enum child_status : std::uint8_t {
  st_running = 0,
  st_restarting = 1, // waiting for its backoff
  st_terminated = 2, // terminate_child, or not restarted
};

struct child_rec {
  child_wire spec;
  std::uint64_t ref = 0;
  std::uint32_t incarnation = 0;
  std::int32_t pid = 0;
  std::uint8_t status = st_running;
  std::uint32_t restarts = 0;
  MSGPACK_DEFINE(spec, ref, incarnation, pid, status, restarts)
};

// All a supervisor knows: a supervisor actor's warm state.
struct sup_state {
  supervisor_wire spec;
  std::vector<child_rec> children;         // in start order
  std::vector<std::int64_t> restart_times; // steady clock, ns
  std::uint64_t dynamic_n = 0;
  bool started = false;
  MSGPACK_DEFINE(spec, children, restart_times, dynamic_n, started)
};

// How a supervisor reaches the node, and its timers.
struct sup_env {
  std::uint64_t self = 0; // receives the children's downs
  bool link = false;      // an actor supervisor: its death takes its children
  std::function<rpc_reply(const rpc_request&)> call;
  std::function<void(const std::string&, std::chrono::milliseconds)> schedule;
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           steady::now().time_since_epoch())
    .count();
}

const char* status_name(std::uint8_t s) {
  switch (s) {
  case st_running:
    return "running";
  case st_restarting:
    return "restarting";
  default:
    return "terminated";
  }
}

class sup_core {
public:
  sup_core(sup_state& st, sup_env env) : st_(st), env_(std::move(env)) {
  }

  [[nodiscard]] bool gave_up() const noexcept {
    return gave_up_;
  }

  // First start: every child in order. A child that cannot be spawned stops
  // those started before it (reverse order) and fails the supervisor.
  void start_all() {
    if (st_.spec.how == strategy::simple_one_for_one) {
      st_.started = true;
      return;
    }
    for (auto& c : st_.spec.children) {
      child_rec rec;
      rec.spec = c;
      try {
        spawn(rec);
      } catch (const std::exception& e) {
        close_all();
        throw std::runtime_error("pactor::supervisor: child '" + c.id
                                 + "' failed to start: " + e.what());
      }
      st_.children.push_back(std::move(rec));
    }
    st_.started = true;
  }

  // A restarted supervisor (warm): takes its children back, restarting
  // those that ended meanwhile (not counted as restarts).
  void adopt() {
    st_.restart_times.clear();
    for (auto& rec : st_.children) {
      if (rec.status == st_terminated)
        continue;
      if (pid_of(rec.ref) == 0)
        relaunch(rec);
      else
        watch(rec);
    }
  }

  void on_down(const down& d) {
    auto* rec = find_ref(d.who.id());
    if (rec == nullptr)
      return;
    // A death of an earlier incarnation, or one already replaced (the
    // down of a supervisor's previous life, redelivered): nothing to do.
    if (d.reason.incarnation != 0 && d.reason.incarnation < rec->incarnation)
      return;
    if (rec->status == st_terminated) {
      rec->pid = 0;
      return;
    }
    if (auto pid = pid_of(rec->ref); pid != 0) {
      rec->pid = pid;
      return;
    }
    rec->pid = 0;
    const auto type = rec->spec.restart;
    bool again = type == restart_type::permanent
                 || (type == restart_type::transient && !d.reason.is_normal());
    if (!again) {
      if (type == restart_type::temporary)
        remove(*rec);
      else {
        rec->status = st_terminated;
        set_open(rec->ref, false);
      }
      return;
    }
    if (!count_restart()) {
      give_up();
      return;
    }
    ++rec->restarts;
    const auto idx = static_cast<std::size_t>(rec - st_.children.data());
    switch (st_.spec.how) {
    case strategy::one_for_one:
    case strategy::simple_one_for_one:
      restart_one(*rec);
      return;
    case strategy::one_for_all:
      restart_group(0);
      return;
    case strategy::rest_for_one:
      restart_group(idx);
      return;
    }
  }

  void restart_due(const std::string& id) {
    auto* rec = find_id(id);
    if (rec != nullptr && rec->status == st_restarting)
      relaunch(*rec);
  }

  actor_ref start_child(child_wire spec) {
    if (st_.spec.how == strategy::simple_one_for_one)
      throw std::invalid_argument("pactor::supervisor: start_child on a "
                                  "simple_one_for_one supervisor: use "
                                  "start_dynamic(args...)");
    if (find_id(spec.id) != nullptr)
      throw std::invalid_argument("pactor::supervisor: a child '" + spec.id
                                  + "' exists already");
    child_rec rec;
    rec.spec = std::move(spec);
    spawn(rec);
    st_.children.push_back(std::move(rec));
    return actor_ref(st_.children.back().ref);
  }

  actor_ref start_dynamic(std::vector<std::byte> args) {
    if (st_.spec.how != strategy::simple_one_for_one)
      throw std::invalid_argument("pactor::supervisor: start_dynamic needs a "
                                  "simple_one_for_one supervisor");
    child_rec rec;
    rec.spec = st_.spec.children.at(0);
    rec.spec.id += "-" + std::to_string(++st_.dynamic_n);
    rec.spec.options.name = rec.spec.id;
    rec.spec.start.args = std::move(args);
    spawn(rec);
    st_.children.push_back(std::move(rec));
    return actor_ref(st_.children.back().ref);
  }

  void terminate_child(const std::string& id) {
    auto& rec = must_find(id);
    if (rec.status != st_terminated) {
      rec.status = st_terminated;
      stop_proc(rec);
      set_open(rec.ref, false);
    }
    // A temporary child, and any dynamic child (as OTP), leaves with it.
    if (rec.spec.restart == restart_type::temporary
        || st_.spec.how == strategy::simple_one_for_one)
      remove(rec);
  }

  actor_ref restart_child(const std::string& id) {
    auto& rec = must_find(id);
    if (rec.status != st_terminated)
      throw std::invalid_argument("pactor::supervisor: child '" + id
                                  + "' is not terminated");
    relaunch(rec);
    return actor_ref(rec.ref);
  }

  void delete_child(const std::string& id) {
    auto& rec = must_find(id);
    if (rec.status != st_terminated)
      throw std::invalid_argument("pactor::supervisor: child '" + id
                                  + "' is running: terminate it first");
    remove(rec);
  }

  std::vector<child_info> which() {
    std::vector<child_info> out;
    for (auto& rec : st_.children) {
      child_info i;
      i.id = rec.spec.id;
      i.ref = actor_ref(rec.ref);
      i.pid = rec.status == st_terminated ? 0 : pid_of(rec.ref);
      i.type = rec.spec.type;
      i.status = status_name(rec.status);
      if (rec.status == st_running && i.pid == 0)
        i.status = "restarting";
      i.restarts = rec.restarts;
      out.push_back(std::move(i));
    }
    return out;
  }

  child_counts count() {
    child_counts c;
    c.specs = static_cast<std::uint32_t>(st_.children.size());
    for (auto& rec : st_.children) {
      if (rec.status != st_terminated && pid_of(rec.ref) != 0)
        ++c.active;
      if (rec.spec.type == child_type::supervisor)
        ++c.supervisors;
      else
        ++c.workers;
    }
    return c;
  }

  // Whether `ref` is or was a child of this incarnation (an exit_msg from
  // a temporary child can come after its down removed it).
  [[nodiscard]] bool is_child(std::uint64_t ref) {
    return find_ref(ref) != nullptr || linked_.count(ref) != 0;
  }

  [[nodiscard]] actor_ref ref_of(const std::string& id) {
    return actor_ref(must_find(id).ref);
  }

  // Stops every child, in reverse start order (each with its shutdown).
  void stop_all_children() {
    for (auto it = st_.children.rbegin(); it != st_.children.rend(); ++it)
      if (it->status != st_terminated)
        stop_proc(*it);
  }

  // Stops the children and closes their mailboxes (a request to one then
  // fails at once instead of waiting for a restart that will not come).
  void stop_for_good() {
    stop_all_children();
    for (auto& rec : st_.children)
      set_open(rec.ref, false);
  }

  // Stops the children and drops them for good, mailboxes and all (the end
  // of an embedded supervisor, a failed start).
  void close_all() {
    stop_all_children();
    for (auto& rec : st_.children) {
      set_open(rec.ref, false);
      (void)call({rpc_op::forget, rec.ref, 0, {}, {}});
    }
    st_.children.clear();
  }

private:
  rpc_reply call(const rpc_request& q) {
    return env_.call(q);
  }

  std::int32_t pid_of(std::uint64_t ref) {
    return static_cast<std::int32_t>(call({rpc_op::pid_of, ref, 0, {}, {}}).a);
  }

  void set_open(std::uint64_t ref, bool open) {
    (void)call({rpc_op::set_mailbox_open, ref, open ? 1U : 0U, {}, {}});
  }

  void watch(child_rec& rec) {
    (void)call({rpc_op::monitor, env_.self, rec.ref, {}, {}});
    if (env_.link) {
      (void)call({rpc_op::link, env_.self, rec.ref, {}, {}});
      linked_.insert(rec.ref);
    }
  }

  void took(child_rec& rec, const rpc_reply& r) {
    rec.ref = r.a;
    rec.pid = static_cast<std::int32_t>(r.b);
    rec.incarnation = r.blob.empty() ? rec.incarnation + 1
                                     : decode_payload<std::uint32_t>(r.blob);
    rec.status = st_running;
    watch(rec);
  }

  void spawn(child_rec& rec) {
    auto opts = rec.spec.options;
    if (opts.name.empty())
      opts.name = rec.spec.id;
    // Messages sent to a child between its death and its restart wait in
    // its mailbox (a temporary child is not restarted: senders are told).
    opts.keep_mailbox_open = rec.spec.restart != restart_type::temporary;
    rpc_request q{rpc_op::spawn, 0, 0, opts.name, {}};
    pack_payload(q.blob, std::make_tuple(rec.spec.start, opts));
    auto r = call(q);
    if (!r.ok)
      throw std::runtime_error(r.error);
    took(rec, r);
  }

  // Starts the next incarnation of an ended child (a failure, as at system
  // shutdown, leaves it terminated).
  void relaunch(child_rec& rec) {
    auto r = call({rpc_op::restart, rec.ref, 0, {}, {}});
    if (!r.ok) {
      if (r.error == "it is running") {
        rec.status = st_running;
        rec.pid = pid_of(rec.ref);
        watch(rec);
        return;
      }
      if (r.error == "the actor system is shutting down") {
        rec.status = st_terminated;
        return;
      }
      // Could not fork (out of fds, memory...): a failed restart counts as
      // one, and is tried again after a moment, or the supervisor gives up.
      std::fprintf(stderr, "pactor: supervisor: child '%s' not restarted: %s\n",
                   rec.spec.id.c_str(), r.error.c_str());
      if (!count_restart() || !env_.schedule) {
        give_up();
        return;
      }
      rec.status = st_restarting;
      env_.schedule(rec.spec.id, std::chrono::milliseconds(100));
      return;
    }
    took(rec, r);
  }

  void restart_one(child_rec& rec) {
    auto delay = backoff_delay(rec);
    if (delay.count() > 0 && env_.schedule) {
      rec.status = st_restarting;
      env_.schedule(rec.spec.id, delay);
      return;
    }
    relaunch(rec);
  }

  // one_for_all (from 0) / rest_for_one (from the dead child): stops the
  // running ones from the end back to `from`, then starts them in order; a
  // temporary child caught in it is not restarted.
  void restart_group(std::size_t from) {
    for (auto i = st_.children.size(); i-- > from;) {
      auto& rec = st_.children[i];
      if (rec.status == st_running && rec.pid != 0)
        stop_proc(rec);
    }
    std::vector<std::uint64_t> gone;
    for (auto i = from; i < st_.children.size(); ++i) {
      auto& rec = st_.children[i];
      if (rec.status == st_terminated)
        continue;
      if (rec.spec.restart == restart_type::temporary) {
        gone.push_back(rec.ref);
        continue;
      }
      relaunch(rec);
    }
    for (auto ref : gone)
      if (auto* rec = find_ref(ref))
        remove(*rec);
  }

  // Stops the running incarnation of `rec` by its shutdown policy and waits
  // until it has ended.
  void stop_proc(child_rec& rec) {
    using kind = shutdown_policy::kind;
    switch (rec.spec.shutdown) {
    case kind::brutal_kill:
      (void)call({rpc_op::kill, rec.ref, 0, {}, {}});
      break;
    case kind::timeout:
      (void)call({rpc_op::stop,
                  rec.ref,
                  1 + static_cast<std::uint64_t>(rec.spec.shutdown_ms),
                  {},
                  {}});
      break;
    case kind::infinity:
      (void)call({rpc_op::stop, rec.ref, ~std::uint64_t{0}, {}, {}});
      break;
    }
    for (;;) {
      auto r = call({rpc_op::await_end, rec.ref, 30000, {}, {}});
      if (r.a == 1 || (!r.ok && r.error != "still running"))
        break;
    }
    rec.pid = 0;
  }

  void remove(child_rec& rec) {
    set_open(rec.ref, false);
    (void)call({rpc_op::forget, rec.ref, 0, {}, {}});
    auto ref = rec.ref;
    std::erase_if(st_.children,
                  [&](const child_rec& c) { return c.ref == ref; });
  }

  // Notes a restart; false when that is more than `intensity` within the
  // sliding `period`.
  bool count_restart() {
    auto now = now_ns();
    auto window = st_.spec.period_ms * 1000000;
    std::erase_if(st_.restart_times,
                  [&](std::int64_t t) { return t <= now - window; });
    st_.restart_times.push_back(now);
    return static_cast<int>(st_.restart_times.size()) <= st_.spec.intensity;
  }

  std::chrono::milliseconds backoff_delay(const child_rec& rec) {
    const auto& s = rec.spec;
    if (s.backoff_initial_ms <= 0)
      return std::chrono::milliseconds(0);
    auto n = std::min<std::size_t>(st_.restart_times.size(), 30);
    double ms = static_cast<double>(s.backoff_initial_ms)
                * static_cast<double>(std::uint64_t{1} << (n > 0 ? n - 1 : 0));
    ms = std::min(ms, static_cast<double>(s.backoff_max_ms));
    std::uniform_real_distribution<double> j(-s.backoff_jitter,
                                             s.backoff_jitter);
    ms *= 1.0 + j(rng_);
    return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
  }

  // Stops every child and closes their mailboxes, keeping their status: a
  // supervisor restarted after giving up (warm) starts them again.
  void give_up() {
    gave_up_ = true;
    stop_all_children();
    for (auto& rec : st_.children)
      if (rec.status != st_terminated)
        set_open(rec.ref, false);
  }

  child_rec* find_ref(std::uint64_t ref) {
    for (auto& c : st_.children)
      if (c.ref == ref)
        return &c;
    return nullptr;
  }
  child_rec* find_id(const std::string& id) {
    for (auto& c : st_.children)
      if (c.spec.id == id)
        return &c;
    return nullptr;
  }
  child_rec& must_find(const std::string& id) {
    auto* c = find_id(id);
    if (c == nullptr)
      throw std::invalid_argument("pactor::supervisor: no child '" + id + "'");
    return *c;
  }

  sup_state& st_;
  sup_env env_;
  std::set<std::uint64_t> linked_; // every child linked in this incarnation
  bool gave_up_ = false;
  std::mt19937 rng_{std::random_device{}()};
};

exit_reason gave_up_reason(const supervisor_wire& s) {
  exit_reason r;
  r.kind = exit_kind::exception;
  r.type = "pactor::supervisor_gave_up";
  r.message = "more than " + std::to_string(s.intensity) + " restarts in "
              + std::to_string(s.period_ms) + " ms";
  return r;
}

// The supervisor actor: its table is its warm state, so a restarted
// supervisor keeps its children's refs and takes them back.
class supervisor_actor {
public:
  explicit supervisor_actor(supervisor_wire spec) {
    st_.spec = std::move(spec);
  }
  sup_state& warm_state() {
    return st_;
  }

  void on_start() {
    this_actor::trap_exit(true); // a child's death is decided, not shared
    core_.emplace(st_, env());
    if (st_.started)
      core_->adopt();
    else
      core_->start_all();
  }

  void on_stop() {
    if (!core_ || core_->gave_up())
      return;
    if (st_.spec.top_level)
      core_->stop_for_good(); // no parent will restart it to adopt them
    else
      core_->stop_all_children(); // its parent may restart it: they wait
  }

  pactor::behavior behavior() {
    return pactor::behavior{
      [this](const down& d) {
        core_->on_down(d);
        if (core_->gave_up())
          exit_actor(gave_up_reason(st_.spec));
      },
      [this](const exit_msg& m) {
        // A child's: its down follows and is what counts. Anyone else's
        // (its own supervisor's): it goes too, as in OTP.
        if (!core_->is_child(m.from.id()))
          exit_actor(m.reason);
      },
      [this](const sup_restart_due& r) { core_->restart_due(r.id); },
      [this](const sup_start_child& m) {
        if (!m.spec.id.empty())
          return core_->start_child(m.spec);
        return core_->start_dynamic(m.args);
      },
      [this](const sup_child_op& m) {
        switch (m.op) {
        case 0:
          core_->terminate_child(m.id);
          return actor_ref{};
        case 1:
          return core_->restart_child(m.id);
        default:
          core_->delete_child(m.id);
          return actor_ref{};
        }
      },
      [this](const sup_which&) { return core_->which(); },
      [this](const sup_count&) { return core_->count(); },
    };
  }

private:
  static sup_env env() {
    sup_env e;
    e.self = self_ref().id();
    e.link = true;
    e.call = [](const rpc_request& q) { return call_node(q); };
    e.schedule = [](const std::string& id, std::chrono::milliseconds d) {
      this_actor::send_after(this_actor::self(), d, sup_restart_due{id});
    };
    return e;
  }

  sup_state st_;
  std::optional<sup_core> core_;
};

packed_target supervisor_target(const supervisor_wire& w) {
  packed_target t;
  t.trampoline = make_function_ref(reinterpret_cast<erased_fn>(
    &invoke_actor_class<supervisor_actor, supervisor_wire>));
  t.function = t.trampoline;
  t.args = pack_actor_args<supervisor_wire>(w);
  return t;
}

spawn_options supervisor_options(const std::string& name) {
  spawn_options o;
  o.name = name.empty() ? "supervisor" : name;
  o.restart = restart_mode::warm;
  o.state_bytes = supervisor_state_bytes;
  return o;
}

} // namespace

child_wire to_wire(const child_spec& c) {
  auto bad = [&](const std::string& field, const std::string& why) {
    return std::invalid_argument("pactor::child_spec '" + c.id + "': " + field
                                 + " " + why);
  };
  if (c.id.empty())
    throw std::invalid_argument("pactor::child_spec: id is empty");
  if (c.start.args.empty() && c.start.trampoline.module.empty()
      && c.start.trampoline.offset == 0)
    throw bad("start", "is not set (use pactor::worker<A>(id, args...))");
  if (c.shutdown.how == shutdown_policy::kind::timeout
      && c.shutdown.timeout.count() < 0)
    throw bad("shutdown", "has a negative timeout");
  if (c.backoff.initial.count() < 0 || c.backoff.max < c.backoff.initial)
    throw bad("backoff", "needs 0 <= initial <= max");
  if (c.backoff.jitter < 0 || c.backoff.jitter >= 1)
    throw bad("backoff", "jitter must be in [0, 1)");
  child_wire w;
  w.id = c.id;
  w.start = c.start;
  try {
    w.options = detail::to_wire(c.options);
  } catch (const std::invalid_argument& e) {
    throw bad("options", e.what());
  }
  w.restart = c.restart;
  w.shutdown = c.shutdown.how;
  w.shutdown_ms = c.shutdown.timeout.count();
  w.type = c.type;
  w.backoff_initial_ms = c.backoff.initial.count();
  w.backoff_max_ms = c.backoff.max.count();
  w.backoff_jitter = c.backoff.jitter;
  return w;
}

supervisor_wire to_wire(const supervisor_spec& s) {
  if (s.intensity < 0)
    throw std::invalid_argument(
      "pactor::supervisor_spec: intensity must be >= 0");
  if (s.period.count() <= 0)
    throw std::invalid_argument("pactor::supervisor_spec: period must be > 0");
  if (s.how == strategy::simple_one_for_one && s.children.size() != 1)
    throw std::invalid_argument(
      "pactor::supervisor_spec: simple_one_for_one takes exactly one child "
      "spec (the template), got "
      + std::to_string(s.children.size()));
  supervisor_wire w;
  w.how = s.how;
  w.intensity = s.intensity;
  w.period_ms = s.period.count();
  w.name = s.name;
  for (const auto& c : s.children) {
    for (const auto& other : w.children)
      if (other.id == c.id)
        throw std::invalid_argument("pactor::child_spec '" + c.id
                                    + "': id is used twice");
    w.children.push_back(to_wire(c));
  }
  return w;
}

actor_ref spawn_supervisor(const supervisor_spec& spec) {
  auto w = to_wire(spec);
  w.top_level = true;
  return spawn_packed(supervisor_target(w), supervisor_options(spec.name));
}

} // namespace detail

child_spec supervisor_child(std::string id, const supervisor_spec& spec) {
  auto w = detail::to_wire(spec);
  child_spec c;
  c.id = std::move(id);
  c.start = detail::supervisor_target(w);
  c.options = detail::supervisor_options(spec.name.empty() ? c.id : spec.name);
  c.type = child_type::supervisor;
  c.shutdown = shutdown_policy::infinity();
  return c;
}

// --- supervisor_ref --------------------------------------------------------

namespace {
detail::wait_limit within(std::chrono::milliseconds t) {
  return detail::wait_limit::after(t);
}
} // namespace

actor_ref supervisor_ref::start_child(const child_spec& spec,
                                      std::chrono::milliseconds timeout) {
  return detail::request<actor_ref>(
    ref_, detail::sup_start_child{detail::to_wire(spec), {}}, within(timeout));
}
void supervisor_ref::terminate_child(const std::string& id,
                                     std::chrono::milliseconds timeout) {
  (void)detail::request<actor_ref>(ref_, detail::sup_child_op{0, id},
                                   within(timeout));
}
actor_ref supervisor_ref::restart_child(const std::string& id,
                                        std::chrono::milliseconds timeout) {
  return detail::request<actor_ref>(ref_, detail::sup_child_op{1, id},
                                    within(timeout));
}
void supervisor_ref::delete_child(const std::string& id,
                                  std::chrono::milliseconds timeout) {
  (void)detail::request<actor_ref>(ref_, detail::sup_child_op{2, id},
                                   within(timeout));
}
std::vector<child_info>
supervisor_ref::which_children(std::chrono::milliseconds timeout) {
  return detail::request<std::vector<child_info>>(ref_, detail::sup_which{},
                                                  within(timeout));
}
child_counts supervisor_ref::count_children(std::chrono::milliseconds timeout) {
  return detail::request<child_counts>(ref_, detail::sup_count{},
                                       within(timeout));
}

supervisor_ref spawn_supervisor(actor_system& sys,
                                const supervisor_spec& spec) {
  (void)sys.self(); // this process has an actor system
  return supervisor_ref(detail::spawn_supervisor(spec));
}

// --- the embedded supervisor -------------------------------------------------

namespace {
struct sup_wake {
  MSGPACK_DEFINE()
};
} // namespace

struct supervisor::impl {
  mode how;
  detail::node_connection conn;
  detail::unique_fd sock;
  std::uint64_t endpoint = 0;
  detail::ring* box = nullptr;
  int poller_slot = -1;
  detail::sup_state st;
  std::optional<detail::sup_core> core;
  std::mutex mu; // the core: the thread's decisions and the API calls
  std::vector<std::pair<detail::steady::time_point, std::string>> timers;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<bool> stopped{false};
  std::exception_ptr failure;           // what ended the background thread
  std::optional<detail::ring> box_ring; // the endpoint's mailbox: box

  // Handles what is in the mailbox now (and due timers), without waiting.
  void drain() {
    std::lock_guard lock(mu);
    for (;;) {
      std::optional<down> d;
      auto read = [&](std::span<const std::byte> b, std::uint32_t) {
        try {
          auto mv = read_envelope(b);
          if (mv.header.type == type_tag<down>())
            d = decode_payload<down>(mv.payload);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "pactor: supervisor: a bad message: %s\n",
                       e.what());
        }
      };
      if (box->peek(read, detail::wait_limit::none())
          != detail::ring_status::ok)
        break;
      box->ack();
      if (d && core && !core->gave_up())
        core->on_down(*d);
    }
    auto now = detail::steady::now();
    std::vector<std::string> due;
    std::erase_if(timers, [&](const auto& t) {
      if (t.first > now)
        return false;
      due.push_back(t.second);
      return true;
    });
    for (auto& id : due)
      if (core && !core->gave_up())
        core->restart_due(id);
  }

  std::optional<detail::steady::time_point> next_timer() {
    std::lock_guard lock(mu);
    std::optional<detail::steady::time_point> t;
    for (auto& [at, id] : timers)
      t = t ? std::min(*t, at) : at;
    return t;
  }

  void run() {
    try {
      loop();
    } catch (...) {
      failure = std::current_exception();
      std::fprintf(stderr, "pactor: supervisor: its thread stopped: %s\n",
                   describe(failure).c_str());
    }
  }

  static std::string describe(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  void loop() {
    for (;;) {
      drain();
      // After the drain: a stop whose wake-up message the drain took is
      // seen here (stop() sets the flag before it sends).
      if (stopping.load())
        return;
      // Bounded as every wait (timers, and a safety net for the stop).
      auto until = detail::steady::now() + std::chrono::milliseconds(200);
      if (auto t = next_timer())
        until = std::min(until, *t);
      auto limit = detail::wait_limit::after(until - detail::steady::now());
      waitable w = waitable::of_ring(*box);
      (void)pactor::wait(std::span<const waitable>(&w, 1), limit);
    }
  }
};

supervisor::supervisor(actor_system& sys, const supervisor_spec& spec, mode m)
    : p_(std::make_unique<impl>()) {
  (void)sys.self();
  p_->how = m;
  p_->st.spec = detail::to_wire(spec);
  std::vector<detail::unique_fd> fds;
  auto r = detail::call_node(
    {detail::rpc_op::open_endpoint, 0, 0, spec.name, {}}, &fds);
  if (!r.ok || fds.empty())
    throw std::runtime_error("pactor::supervisor: no endpoint: " + r.error);
  p_->endpoint = r.a;
  p_->sock = std::move(fds.front());
  p_->box_ring.emplace(detail::mailbox_of(p_->endpoint)); // its own handle
  p_->box = &*p_->box_ring;
  detail::sup_env env;
  env.self = p_->endpoint;
  env.link = false;
  auto* self = p_.get();
  env.call = [self](const detail::rpc_request& q) {
    return detail::call_node_on(self->conn, self->sock.get(), q);
  };
  env.schedule = [self](const std::string& id, std::chrono::milliseconds d) {
    self->timers.emplace_back(detail::steady::now() + d, id);
    if (self->how == mode::background_thread) // wake the thread
      detail::send_message(actor_ref(self->endpoint), actor_ref{}, sup_wake{},
                           0, 0);
  };
  p_->core.emplace(p_->st, std::move(env));
  {
    std::lock_guard lock(p_->mu);
    p_->core->start_all();
  }
  if (m == mode::background_thread)
    p_->thread = std::thread([self] { self->run(); });
  else {
    p_->poller_slot = p_->box->add_poller();
    p_->box->arm_poller(); // a down before the first poll() must signal
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (p_->box->readable())
      p_->box->signal_pollers();
  }
}

supervisor::~supervisor() {
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pactor: supervisor: stopping: %s\n", e.what());
  }
}

void supervisor::stop() {
  if (p_->stopped.exchange(true))
    return;
  p_->stopping.store(true);
  if (p_->thread.joinable()) {
    try { // (its waits are bounded: it stops without the message too)
      detail::send_message(actor_ref(p_->endpoint), actor_ref{}, sup_wake{}, 0,
                           0);
    } catch (const std::exception&) {
    }
    p_->thread.join();
  }
  if (p_->how == mode::event_loop)
    p_->box->remove_poller(p_->poller_slot);
  std::lock_guard lock(p_->mu);
  if (!p_->core->gave_up())
    p_->core->close_all();
  // Closing its connection ends the endpoint (the node drops its mailbox).
  p_->sock.reset();
  if (p_->failure)
    std::rethrow_exception(p_->failure);
}

actor_ref supervisor::start_child(const child_spec& spec) {
  auto w = detail::to_wire(spec);
  std::lock_guard lock(p_->mu);
  return p_->core->start_child(std::move(w));
}
actor_ref supervisor::start_dynamic_packed(std::vector<std::byte> args) {
  std::lock_guard lock(p_->mu);
  return p_->core->start_dynamic(std::move(args));
}
void supervisor::terminate_child(const std::string& id) {
  std::lock_guard lock(p_->mu);
  p_->core->terminate_child(id);
}
actor_ref supervisor::restart_child(const std::string& id) {
  std::lock_guard lock(p_->mu);
  return p_->core->restart_child(id);
}
void supervisor::delete_child(const std::string& id) {
  std::lock_guard lock(p_->mu);
  p_->core->delete_child(id);
}
std::vector<child_info> supervisor::which_children() {
  std::lock_guard lock(p_->mu);
  return p_->core->which();
}
child_counts supervisor::count_children() {
  std::lock_guard lock(p_->mu);
  return p_->core->count();
}
actor_ref supervisor::child(const std::string& id) {
  std::lock_guard lock(p_->mu);
  return p_->core->ref_of(id);
}
int supervisor::poll_fd() const {
  return p_->box->poll_fd();
}
std::optional<std::chrono::steady_clock::time_point>
supervisor::next_timer() const {
  return p_->next_timer();
}
void supervisor::poll() {
  if (p_->how != mode::event_loop)
    throw std::logic_error("pactor::supervisor::poll: not in event_loop mode");
  for (;;) {
    p_->box->drain_poller();
    p_->drain();
    p_->box->arm_poller();
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!p_->box->readable())
      break;
  }
}
bool supervisor::gave_up() const {
  std::lock_guard lock(p_->mu);
  return p_->core->gave_up();
}

} // namespace pactor
