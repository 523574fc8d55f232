#!/usr/bin/env python3
"""Runs pactor-bench and the Python multiprocessing cases in one run and
writes the comparison table (bench/RESULTS.md). Called by `make bench`.

Extra arguments (--quick, --filter REGEX) are passed to both programs.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LOWER_IS_BETTER = {"ms", "us", "kB", "s"}


def run(cmd):
    print("bench: running " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=3600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, rows


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt(v):
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pactor", required=True, help="path of pactor-bench")
    ap.add_argument("--out", required=True, help="where to write RESULTS.md")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--filter", default=None)
    args = ap.parse_args()
    extra = (["--quick"] if args.quick else []) + (
        ["--filter", args.filter] if args.filter else [])

    rc_p, pactor = run([args.pactor] + extra)
    rc_py, python = run([sys.executable, os.path.join(HERE, "python", "bench.py")] + extra)
    by_name = {}
    for row in pactor + python:
        by_name.setdefault(row["bench"], {})[row["impl"]] = row

    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (bench/run.py): pactor-bench and the same cases in",
        "Python 3 multiprocessing (bench/python/bench.py), run one after the other on",
        "the same machine. Shared 2-core VMs are noisy: compare within one run.",
        "The bare floor is the same operation without pactor (a futex ping-pong);",
        "a blocking round trip costs 2-3 us when both processes share a CPU and",
        "13-60 us when one must wake the other CPU, so blocking latencies vary by",
        "that much from run to run.",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, Linux {platform.release()}",
        f"- python: {platform.python_version()}",
        f"- mode: {'quick (numbers not meaningful)' if args.quick else 'full'}",
        "",
        "| bench | unit | pactor | python | pactor vs python | bare floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, impls in by_name.items():
        p = impls.get("pactor", {}).get("value")
        q = impls.get("python-multiprocessing", {}).get("value")
        bare = impls.get("bare", {}).get("value")
        unit = next(iter(impls.values()))["unit"]
        ratio = "-"
        if p and q:
            better = q / p if unit in LOWER_IS_BETTER else p / q
            ratio = f"{better:.1f}x {'better' if better >= 1 else 'worse'}"
        lines.append(f"| {name} | {unit} | {fmt(p)} | {fmt(q)} | {ratio} | {fmt(bare)} |")
    lines += ["", "Raw JSON lines of this run:", "", "```"]
    lines += [json.dumps(r) for r in pactor + python]
    lines += ["```", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    table = lines.index("| bench | unit | pactor | python | pactor vs python | bare floor |")
    print("\n".join(lines[table:table + len(by_name) + 2]))
    if rc_p != 0 or rc_py != 0:
        print(f"bench: a benchmark failed (pactor exit {rc_p}, python exit {rc_py})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
