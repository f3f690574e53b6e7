"""Helpers shared by the bench scripts: timing, resident-memory growth in a fresh process, JSON lines."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def median_time(fn: Callable[[], object], reps: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """VmHWM of this process image. reason: ru_maxrss survives exec on Linux, so a child started from
    a big parent would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_growth(fn: Callable[[], object]) -> int:
    """Peak RSS after ``fn()`` minus RSS before it (call in a fresh process, once)."""
    before = rss_bytes()
    fn()
    return peak_rss_bytes() - before


def growth_in_subprocess(script: Path, *args: str) -> int:
    """Run ``script --child ARGS`` in a fresh interpreter; it prints the growth in bytes last."""
    # reason: with glibc's default dynamic mmap threshold, freed blocks stay in the heap and later
    # allocations reuse them invisibly; a fixed 64 KiB threshold returns large blocks to the OS at
    # once, so the peak RSS follows the peak of live memory (same setting for every variant).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, str(script), "--child", *args], check=True, capture_output=True, text=True, cwd=REPO, env=env
    ).stdout
    return int(out.strip().splitlines()[-1])


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """This machine's float32 matmul rate (GFLOP/s) for a 2048^2 ``a @ b``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, reps=reps) / 1e9
