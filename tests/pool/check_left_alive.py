#!/usr/bin/env python3
"""Runs a program that leaves pools alive at the end of main; checks that it
exits with code 0 within its time limit and that none of the worker pids it
printed is alive afterwards."""
import os
import subprocess
import sys
import time

proc = subprocess.run([sys.argv[1]], capture_output=True, text=True, timeout=60)
print(proc.stdout, end="")
print(proc.stderr, end="", file=sys.stderr)
if proc.returncode != 0:
    sys.exit(f"FAIL: exit code {proc.returncode}")
pids = [int(line.split()[1]) for line in proc.stdout.splitlines()
        if line.startswith("worker ")]
if len(pids) != 4:
    sys.exit(f"FAIL: expected 4 worker pids, got {pids}")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


# The program reaped its workers before it exited; a pid might only be
# reused by an unrelated process, so look for our workers' command name.
deadline = time.monotonic() + 5
left = [p for p in pids if alive(p)]
while left and time.monotonic() < deadline:
    time.sleep(0.05)
    left = [p for p in pids if alive(p)]
if left:
    names = {p: open(f"/proc/{p}/comm").read().strip() for p in left}
    if any(n.startswith("pool") for n in names.values()):
        sys.exit(f"FAIL: workers left behind: {names}")
print("PASS: exit 0, no worker left")
