#!/usr/bin/env python3
"""The pactor-bench cases written with Python's multiprocessing (stdlib only).

Prints one JSON line per case (../../../shared/BENCH_SCHEMA.md) with
"impl": "python-multiprocessing". Flags: --quick, --filter REGEX, --list.
"""

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import signal
import sys
import time


def noop():
    pass


def check_exit(p):
    p.join(30)
    if p.exitcode != 0:
        raise RuntimeError(f"a child exited with {p.exitcode}")


def spawn_join_ms(method, iterations):
    ctx = mp.get_context(method)
    for _ in range(2):  # warm up (and start the forkserver)
        p = ctx.Process(target=noop)
        p.start()
        check_exit(p)
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        p = ctx.Process(target=noop)
        p.start()
        check_exit(p)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def max_processes_per_s(quick):
    ctx = mp.get_context("fork")
    budget = 0.1 if quick else 1.0
    t0 = time.perf_counter()
    count = 0
    while time.perf_counter() - t0 < budget:
        p = ctx.Process(target=noop)
        p.start()
        check_exit(p)
        count += 1
    return count / (time.perf_counter() - t0)


def idle_child(ready_w, release_r):
    os.write(ready_w, b"r")
    os.read(release_r, 1)


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return float(line.split()[1])
    raise RuntimeError("no Pss in smaps_rollup")


def private_kb(pid):
    kb = 0.0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb += float(line.split()[1])
    return kb


def idle_pss_kb(method, measure=None):
    """PSS (or `measure`) of an idle child, forked from this (small) parent."""
    ctx = mp.get_context(method)
    samples = []
    for _ in range(3):
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        p = ctx.Process(target=idle_child, args=(ready_w, release_r))
        p.start()
        if os.read(ready_r, 1) != b"r":
            raise RuntimeError("the idle child did not start")
        samples.append((measure or pss_kb)(p.pid))
        os.write(release_w, b"x")  # the forked child holds release_w too
        for fd in (ready_r, ready_w, release_r, release_w):
            os.close(fd)
        check_exit(p)
    return statistics.median(samples)


def produce(q, size, count):
    msg = b"x" * size
    for _ in range(count):
        q.put(msg)
    q.put(b"")


def queue_1p1c_msgs_per_s(size, count):
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, size, count))
    p.start()
    first = q.get(timeout=30)
    t0 = time.perf_counter()
    got, nbytes = 1, len(first)
    while True:
        m = q.get(timeout=30)
        if not m:
            break
        got += 1
        nbytes += len(m)
    secs = time.perf_counter() - t0
    check_exit(p)
    if got != count or nbytes != size * count:
        raise RuntimeError(f"received {got} of {count} messages")
    return (count - 1) / secs


def consume_until_empty(q, size):
    while True:
        m = q.get(timeout=30)
        if not m:
            return
        if len(m) != size:
            raise SystemExit(1)


def produce_no_end(q, size, count):
    msg = b"x" * size
    for _ in range(count):
        q.put(msg)


def queue_4p4c_msgs_per_s(quick):
    per_producer = 2000 if quick else 100000
    q = mp.Queue()
    consumers = [mp.Process(target=consume_until_empty, args=(q, 64)) for _ in range(4)]
    for c in consumers:
        c.start()
    t0 = time.perf_counter()
    producers = [mp.Process(target=produce_no_end, args=(q, 64, per_producer))
                 for _ in range(4)]
    for p in producers:
        p.start()
    for p in producers:
        check_exit(p)
    for _ in range(4):
        q.put(b"")
    for c in consumers:
        check_exit(c)
    return 4 * per_producer / (time.perf_counter() - t0)


def echo_queue(qin, qout):
    while True:
        v = qin.get(timeout=30)
        qout.put(v)
        if v < 0:
            return


def echo_pipe(conn):
    while True:
        v = conn.recv()
        conn.send(v)
        if v < 0:
            return


def percentiles(samples):
    samples.sort()
    return samples[len(samples) // 2], samples[len(samples) * 99 // 100]


def round_trip_us(n, warmup, round_trip):
    """Times n round trips after warmup untimed ones; returns (p50, p99)."""
    samples = []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        round_trip(i)
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e6)
    return percentiles(samples)


def queue_pingpong_us(quick):
    there, back = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(there, back))
    p.start()
    def round_trip(i):
        there.put(i)
        if back.get(timeout=30) != i:
            raise RuntimeError("wrong value")
    result = round_trip_us(200 if quick else 10000, 100, round_trip)
    there.put(-1)
    back.get(timeout=30)
    check_exit(p)
    return result


def pipe_pingpong_us(quick):
    parent, child = mp.Pipe()
    p = mp.Process(target=echo_pipe, args=(child,))
    p.start()
    def round_trip(i):
        parent.send(i)
        if parent.recv() != i:
            raise RuntimeError("wrong value")
    result = round_trip_us(200 if quick else 20000, 100, round_trip)
    parent.send(-1)
    parent.recv()
    check_exit(p)
    return result


def locked_increments(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def shared_value_locked_incr_per_s(quick):
    n = 2000 if quick else 200000
    v = mp.Value("l", 0)
    t0 = time.perf_counter()
    ps = [mp.Process(target=locked_increments, args=(v, n)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        check_exit(p)
    secs = time.perf_counter() - t0
    if v.value != 2 * n:
        raise RuntimeError(f"lost increments: {v.value} of {2 * n}")
    return 2 * n / secs


_cache = {}


# --- "actors": the usual multiprocessing stand-in, a Process that owns its
# state and reads an inbox Queue, answering requests on a replies Queue.

def counting_actor(inbox, replies, kept=None):
    n = kept.value if kept is not None else 0
    while True:
        msg = inbox.get(timeout=60)
        if msg[0] == "m":
            n += 1
            if kept is not None:  # state kept outside the process
                kept.value = n
        elif msg[0] == "count":
            replies.put(n)
        elif msg[0] == "echo":
            replies.put(msg[1])
        else:
            return


def start_actor(kept=None):
    inbox, replies = mp.Queue(), mp.Queue()
    p = mp.Process(target=counting_actor, args=(inbox, replies, kept))
    p.start()
    return p, inbox, replies


def stop_actor(actor):
    p, inbox, _ = actor
    inbox.put(("stop",))
    check_exit(p)


def actor_1p1c_msgs_per_s(quick, warm=False):
    n = 2000 if quick else 300000
    # "warm": multiprocessing has no state committed with the message; the
    # nearest a user writes is the count stored in a shared Value after each
    # message (it survives the process, not atomically with the get).
    actor = start_actor(mp.Value("q", 0, lock=False) if warm else None)
    _, inbox, replies = actor
    inbox.put(("count",))
    replies.get(timeout=30)  # ready
    msg = ("m", b"x" * 56)  # about 64 bytes pickled
    t0 = time.perf_counter()
    for _ in range(n):
        inbox.put(msg)
    inbox.put(("count",))
    got = replies.get(timeout=120)
    secs = time.perf_counter() - t0
    stop_actor(actor)
    if got != n:
        raise RuntimeError(f"the actor counted {got} of {n}")
    return n / secs


def actor_pingpong_us(quick):
    actor = start_actor()
    _, inbox, replies = actor
    def round_trip(i):
        inbox.put(("echo", i))
        if replies.get(timeout=30) != i:
            raise RuntimeError("wrong echo")
    result = round_trip_us(200 if quick else 10000, 100, round_trip)
    stop_actor(actor)
    return result


def supervisor_restart_ms(quick):
    """multiprocessing has no supervisor: the hand-written one, a parent
    that joins the killed Process and starts a new one, timed from SIGKILL
    to the new process answering. The new process gets new queues: a
    reader killed inside get() can die holding the queue's lock, after which
    the old queue blocks every reader (what was in it is lost)."""
    def start():
        inbox, replies = mp.Queue(), mp.Queue()
        p = mp.Process(target=counting_actor, args=(inbox, replies))
        p.start()
        return p, inbox, replies
    p, inbox, replies = start()
    samples = []
    for i in range(10 if quick else 200):
        t0 = time.perf_counter()
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        p, inbox, replies = start()
        inbox.put(("echo", i))
        if replies.get(timeout=30) != i:
            raise RuntimeError("wrong echo")
        samples.append((time.perf_counter() - t0) * 1e3)
    inbox.put(("stop",))
    check_exit(p)
    return percentiles(samples)


def pipeline_worker(tasks, results):
    while True:
        i = tasks.get(timeout=60)
        if i is None:
            return
        results.put((i, i * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))


def pipeline_source(n, tasks, workers):
    for i in range(1, n + 1):
        tasks.put(i)
    for _ in range(workers):
        tasks.put(None)


def pipeline_items_per_s(quick):
    """examples/pipeline with no work per item and no chaos: a source
    Process, 4 worker Processes on a task Queue, the sink in this process
    (Python's processes cannot survive the chaos run: a worker killed inside
    get() can leave the queue locked)."""
    n, workers = (20000 if quick else 200000), 4
    tasks, results = mp.Queue(), mp.Queue()
    t0 = time.perf_counter()
    src = mp.Process(target=pipeline_source, args=(n, tasks, workers))
    ws = [mp.Process(target=pipeline_worker, args=(tasks, results))
          for _ in range(workers)]
    src.start()
    for w in ws:
        w.start()
    seen = set()
    while len(seen) < n:
        i, _ = results.get(timeout=60)
        seen.add(i)
    secs = time.perf_counter() - t0
    check_exit(src)
    for w in ws:
        check_exit(w)
    return n / secs


def actor_spawn_ms(quick):
    samples = []
    for _ in range(5 if quick else 100):
        t0 = time.perf_counter()
        actor = start_actor()
        actor[1].put(("echo", 1))
        actor[2].get(timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
        stop_actor(actor)
    return statistics.median(samples)


def actors_1000_spawn_s(quick):
    n = 20 if quick else 1000
    t0 = time.perf_counter()
    actors = [start_actor() for _ in range(n)]
    for i, (_, inbox, replies) in enumerate(actors):
        inbox.put(("echo", i))
        if replies.get(timeout=60) != i:
            raise RuntimeError("wrong echo")
    secs = time.perf_counter() - t0
    for a in actors:
        stop_actor(a)
    return secs


def _dict_client(d, n, do_set, out):
    times = []
    total = 0
    for i in range(n):
        key = "k%d" % (i % 64)
        t0 = time.perf_counter()
        if do_set:
            d[key] = i
        else:
            total += d.get(key, 0)
        times.append((time.perf_counter() - t0) * 1e6)
    out.put(statistics.median(times))


def manager_dict_us(quick, do_set):
    """Median us of one get (set) through a Manager dict proxy, from a child."""
    ctx = mp.get_context("fork")
    with ctx.Manager() as m:
        d = m.dict()
        for i in range(64):
            d["k%d" % i] = i
        out = ctx.Queue()
        p = ctx.Process(target=_dict_client, args=(d, 300 if quick else 5000, do_set, out))
        p.start()
        value = out.get(timeout=300)
        p.join()
        return value


def _counter_client(counter, lock, n):
    for _ in range(n):
        with lock:
            counter.value += 1


def manager_counter_per_s(quick):
    """2 processes x n increments of a Manager Value under a Manager Lock."""
    ctx = mp.get_context("fork")
    n = 500 if quick else 10000
    with ctx.Manager() as m:
        counter = m.Value("l", 0)
        lock = m.Lock()
        procs = [ctx.Process(target=_counter_client, args=(counter, lock, n))
                 for _ in range(2)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        dt = time.perf_counter() - t0
        if counter.value != 2 * n:
            raise RuntimeError("lost increments under the lock")
        return 2 * n / dt


def tiny_square(x):
    return x * x


def pool_rate(n, runs, call):
    """Median tasks/s of `runs` timed calls of call(n)."""
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(n)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def check_squares(got, n):
    if len(got) != n or got[n // 2] != (n // 2) ** 2 or got[-1] != (n - 1) ** 2:
        raise RuntimeError("pool results are wrong")


_pool = None


def bench_pool():
    global _pool
    if _pool is None:
        _pool = mp.get_context("fork").Pool(2)
        _pool.map(tiny_square, range(1000))
    return _pool


def pool_map_tiny_per_s(quick):
    p = bench_pool()
    return pool_rate(200000 if quick else 2000000, 1 if quick else 3,
                     lambda n: check_squares(p.map(tiny_square, range(n)), n))


def pool_map_chunk1_per_s(quick):
    p = bench_pool()
    return pool_rate(2000 if quick else 20000, 1 if quick else 3,
                     lambda n: check_squares(
                         p.map(tiny_square, range(n), chunksize=1), n))


def pool_imap_unordered_per_s(quick):
    p = bench_pool()

    def run(n):
        if sum(p.imap_unordered(tiny_square, range(n))) != (n - 1) * n * (2 * n - 1) // 6:
            raise RuntimeError("imap_unordered results are wrong")
    return pool_rate(2000 if quick else 20000, 1 if quick else 3, run)


def executor_submit_per_s(quick):
    import concurrent.futures as cf
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
        ex.submit(tiny_square, 1).result()

        def run(n):
            fs = [ex.submit(tiny_square, i) for i in range(n)]
            if sum(f.result() for f in fs) != (n - 1) * n * (2 * n - 1) // 6:
                raise RuntimeError("executor results are wrong")
        return pool_rate(2000 if quick else 20000, 1 if quick else 3, run)


def cached(key, fn):
    """Runs fn once per key (p50 and p99 come from the same run)."""
    if key not in _cache:
        _cache[key] = fn()
    return _cache[key]


CASES = [
    ("spawn_join_ms_fork", "ms", lambda q: spawn_join_ms("fork", 5 if q else 300)),
    ("spawn_join_ms_spawn", "ms", lambda q: spawn_join_ms("spawn", 3 if q else 30)),
    ("spawn_join_ms_forkserver", "ms",
     lambda q: spawn_join_ms("forkserver", 3 if q else 100)),
    ("max_processes_spawned_1s", "processes", max_processes_per_s),
    ("idle_process_pss_kb", "kB", lambda q: idle_pss_kb("fork")),
    ("queue_1p1c_64B_msgs_per_s", "msgs/s",
     lambda q: queue_1p1c_msgs_per_s(64, 2000 if q else 300000)),
    ("queue_1p1c_4KB_msgs_per_s", "msgs/s",
     lambda q: queue_1p1c_msgs_per_s(4096, 1000 if q else 150000)),
    ("queue_1p1c_1MB_MB_per_s", "MB/s",
     lambda q: queue_1p1c_msgs_per_s(1 << 20, 10 if q else 400) * 1.048576),
    ("queue_4p4c_64B_msgs_per_s", "msgs/s", queue_4p4c_msgs_per_s),
    ("queue_pingpong_rtt_us_p50", "us",
     lambda q: cached("queue_pp", lambda: queue_pingpong_us(q))[0]),
    ("queue_pingpong_rtt_us_p99", "us",
     lambda q: cached("queue_pp", lambda: queue_pingpong_us(q))[1]),
    # Python's queue has no spin: its blocking round trip is the same one.
    ("queue_pingpong_blocking_rtt_us_p50", "us",
     lambda q: cached("queue_pp", lambda: queue_pingpong_us(q))[0]),
    ("shared_value_locked_incr_per_s", "incr/s", shared_value_locked_incr_per_s),
    ("pipe_pingpong_rtt_us_p50", "us",
     lambda q: cached("pipe_pp", lambda: pipe_pingpong_us(q))[0]),
    ("pipe_pingpong_rtt_us_p99", "us",
     lambda q: cached("pipe_pp", lambda: pipe_pingpong_us(q))[1]),
    ("actor_1p1c_64B_msgs_per_s", "msgs/s", actor_1p1c_msgs_per_s),
    ("actor_1p1c_64B_msgs_per_s_warm", "msgs/s",
     lambda q: cached("warm", lambda: actor_1p1c_msgs_per_s(q, warm=True))),
    # No batched commits in Python: the same stand-in, measured once.
    ("actor_1p1c_64B_msgs_per_s_warm_batch64", "msgs/s",
     lambda q: cached("warm", lambda: actor_1p1c_msgs_per_s(q, warm=True))),
    ("actor_pingpong_rtt_us_p50", "us",
     lambda q: cached("actor_pp", lambda: actor_pingpong_us(q))[0]),
    ("actor_pingpong_rtt_us_p99", "us",
     lambda q: cached("actor_pp", lambda: actor_pingpong_us(q))[1]),
    # No spin in Python: the blocking round trip is the same one.
    ("actor_pingpong_blocking_rtt_us_p50", "us",
     lambda q: cached("actor_pp", lambda: actor_pingpong_us(q))[0]),
    ("actor_spawn_ms", "ms", actor_spawn_ms),
    ("actors_1000_spawn_s", "s", actors_1000_spawn_s),
    # An idle actor is an idle process here.
    ("idle_actor_pss_kb", "kB", lambda q: idle_pss_kb("fork")),
    ("idle_actor_private_kb", "kB", lambda q: idle_pss_kb("fork", private_kb)),
    ("pipeline_items_per_s", "items/s", pipeline_items_per_s),
    ("manager_dict_get_us", "us",
     lambda q: cached("mgr_get", lambda: manager_dict_us(q, False))),
    ("manager_dict_set_us", "us",
     lambda q: cached("mgr_set", lambda: manager_dict_us(q, True))),
    # Python's manager has no spin: the same round trips.
    ("manager_dict_get_us_nospin", "us",
     lambda q: cached("mgr_get", lambda: manager_dict_us(q, False))),
    ("manager_dict_set_us_nospin", "us",
     lambda q: cached("mgr_set", lambda: manager_dict_us(q, True))),
    # Python's manager does not persist: its plain set is the stand-in.
    ("manager_dict_set_us_persist", "us",
     lambda q: cached("mgr_set", lambda: manager_dict_us(q, True))),
    ("manager_counter_incr_per_s", "incr/s",
     lambda q: cached("mgr_ctr", lambda: manager_counter_per_s(q))),
    ("manager_counter_incr_per_s_persist", "incr/s",
     lambda q: cached("mgr_ctr", lambda: manager_counter_per_s(q))),
    # Python's manager has no pipelined form: the same locked increments.
    ("manager_counter_incr_per_s_pipelined", "incr/s",
     lambda q: cached("mgr_ctr", lambda: manager_counter_per_s(q))),
    ("pool_map_tiny_tasks_per_s", "tasks/s", pool_map_tiny_per_s),
    ("pool_map_tiny_tasks_per_s_chunk1", "tasks/s", pool_map_chunk1_per_s),
    ("pool_imap_unordered_tasks_per_s", "tasks/s", pool_imap_unordered_per_s),
    ("executor_submit_tasks_per_s", "tasks/s", executor_submit_per_s),
    ("supervisor_restart_ms_p50", "ms",
     lambda q: cached("sup", lambda: supervisor_restart_ms(q))[0]),
    ("supervisor_restart_ms_p99", "ms",
     lambda q: cached("sup", lambda: supervisor_restart_ms(q))[1]),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--filter", default=".*")
    args = ap.parse_args()
    failures = 0
    for name, unit, fn in CASES:
        if not re.search(args.filter, name):
            continue
        if args.list:
            print(name)
            continue
        print(f"python-bench: {name} ...", file=sys.stderr)
        try:
            value = fn(args.quick)
        except Exception as e:  # report, go on with the other cases
            print(f"python-bench: {name} FAILED: {e}", file=sys.stderr)
            failures += 1
            continue
        print(json.dumps({"bench": name, "value": round(value, 6), "unit": unit,
                          "impl": "python-multiprocessing"}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
