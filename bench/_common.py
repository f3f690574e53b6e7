"""Helpers shared by the bench scripts: timing, resident-memory growth in a fresh process, JSON lines, run context."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_train_bundled() -> ModuleType:
    """scripts/train_bundled.py imported as a module: its held-out splits and data builders, for the
    benches and tests that score the bundled models on the data they never trained on.

    The script reads BRAUNET_DATA_DIR when it builds data: callers set it first.
    """
    spec = importlib.util.spec_from_file_location("train_bundled", REPO / "scripts" / "train_bundled.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_bundled"] = module
    spec.loader.exec_module(module)
    return module


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


def alternating_best_medians(
    calls: dict[str, Callable[[], object]], reps: int = 5, rounds: int = 3, warmup: int = 1
) -> dict[str, float]:
    """Seconds per call of each of ``calls``, timed side by side: best over ``rounds`` of the median of ``reps``.

    Within a round the calls alternate (a, b, c, a, b, c, ...), so a change in machine load (another
    process, frequency scaling) lands on all of them alike instead of on whichever ran during it.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(reps):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            best[name] = min(best[name], statistics.median(values))
    return best


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


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), which makes bf16 autocast pay."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_context() -> dict[str, object]:
    """What a figure depends on, for every JSON line: date (UTC), CPU, torch threads, load average, torch version.

    The load average is read now, so each line says how busy the machine was while it was measured.
    """
    import torch

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "load_avg": [round(load, 2) for load in os.getloadavg()],
        "torch": torch.__version__,
    }
