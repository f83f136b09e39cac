"""Run a command and report the peak memory of it and every process it starts (Ray's GCS, raylet, workers).

    python scripts/peak_memory.py [--interval S] -- COMMAND [ARGS ...]
    python scripts/peak_memory.py --pid PID         # watch a process that is already running

Samples the process tree every interval and sums PSS (proportional set size: a page shared by n processes
counts 1/n in each, so shared libraries and Ray's shared-memory object store are not counted n times).
Prints the peak and when it happened; the command's exit status is passed through.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def watch(root: psutil.Process, interval: float, done) -> tuple[int, float]:
    start, peak, at = time.monotonic(), 0, 0.0
    while not done():
        try:
            now = tree_pss(root)
        except psutil.NoSuchProcess:
            break
        if now > peak:
            peak, at = now, time.monotonic() - start
        time.sleep(interval)
    return peak, at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.pid is not None:
        root = psutil.Process(args.pid)
        peak, at = watch(root, args.interval, lambda: not root.is_running() or root.status() == psutil.STATUS_ZOMBIE)
        rc = 0
    elif command:
        proc = subprocess.Popen(command)
        peak, at = watch(psutil.Process(proc.pid), args.interval, lambda: proc.poll() is not None)
        rc = proc.wait()
    else:
        parser.error("give a command after -- or --pid")
    print(f"peak memory (PSS, all processes): {peak / 2**30:.2f} GiB at {at:.0f} s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
