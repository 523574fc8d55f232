#!/usr/bin/env python3
"""Kills random actor processes of a running pipeline from outside it.

Usage: external_chaos.py PIPELINE [pipeline args...]

Starts the pipeline without its own chaos monkey (--kill-every 0 is added)
and, every 20 ms until it ends, SIGKILLs one of its actor processes chosen
at random (source, sink, the workers' supervisor, a worker), found through
/proc. Passes if the pipeline ends within the time limit with exit code 0,
"lost: 0" and a good checksum, after at least one kill.
"""

import os
import random
import signal
import subprocess
import sys
import time

ACTOR_NAMES = ("source", "sink", "workers")
LIMIT_S = 240


def descendants(root):
    """pid -> comm of every process below `root`."""
    parent = {}
    comm = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        comm[int(entry)] = name
    out = {}
    for pid in parent:
        p = pid
        while p in parent and p != root and p > 1:
            p = parent[p]
        if p == root and pid != root:
            out[pid] = comm[pid]
    return out


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd = sys.argv[1:] + ["--kill-every", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    kills = {}
    started = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - started > LIMIT_S:
            proc.kill()
            print(f"external_chaos: the pipeline did not end within {LIMIT_S} s")
            return 1
        time.sleep(0.02)  # the kill rate, not a synchronisation
        actors = {pid: name for pid, name in descendants(proc.pid).items()
                  if name in ACTOR_NAMES or name.startswith("worker-")}
        if not actors:
            continue
        pid = random.choice(list(actors))
        try:
            os.kill(pid, signal.SIGKILL)
            kills[actors[pid]] = kills.get(actors[pid], 0) + 1
        except ProcessLookupError:
            pass
    out = proc.stdout.read()
    print(out, end="")
    total = sum(kills.values())
    print(f"external kills: {total} "
          + " ".join(f"{k} {v}" for k, v in sorted(kills.items())))
    ok = (proc.returncode == 0 and "lost:       0\n" in out
          and "checksum ok" in out and total > 0)
    print("external_chaos: " + ("survived" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
