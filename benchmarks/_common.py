"""Helpers the benchmark scripts share: the machine's load, timing one command, a process's memory.

Scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_average() -> str:
    """The 1/5/15-minute load average and core count, for the record beside every timing."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unavailable"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, exit code and stderr of one run of ``argv`` from the repository root."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stderr.strip()


def rss_mib() -> float:
    """This process's resident set size now, in MiB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
