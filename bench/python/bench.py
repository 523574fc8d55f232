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


def idle_pss_kb(method):
    """PSS of an idle child, forked from this (small) parent."""
    ctx = mp.get_context(method)
    samples = []
    for _ in range(3):
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        p = ctx.Process(target=idle_child, args=(ready_w, release_r))
        p.start()
        if os.read(ready_r, 1) != b"r":
            raise RuntimeError("the idle child did not start")
        samples.append(pss_kb(p.pid))
        os.write(release_w, b"x")  # the forked child holds release_w too
        for fd in (ready_r, ready_w, release_r, release_w):
            os.close(fd)
        check_exit(p)
    return statistics.median(samples)


CASES = [
    ("spawn_join_ms_fork", "ms", lambda q: spawn_join_ms("fork", 5 if q else 300)),
    ("spawn_join_ms_spawn", "ms", lambda q: spawn_join_ms("spawn", 3 if q else 30)),
    ("spawn_join_ms_forkserver", "ms",
     lambda q: spawn_join_ms("forkserver", 3 if q else 100)),
    ("max_processes_spawned_1s", "processes", max_processes_per_s),
    ("idle_process_pss_kb", "kB", lambda q: idle_pss_kb("fork")),
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
