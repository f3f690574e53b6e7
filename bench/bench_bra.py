"""Our bi-level routing attention against the plain gather oracle (tests/model/bra_oracle.py).

Prints JSON lines: time (median of 5, in this process) and resident-memory growth (each in a fresh
process) of forward and forward+backward, with ratios ours/oracle.
Usage: python bench/bench_bra.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import emit, growth_in_subprocess, measure_growth, median_time  # noqa: E402
from tests.model.bra_oracle import oracle_bra  # noqa: E402

from braunet.model import BiLevelRoutingAttention  # noqa: E402

CASES = {  # name: (N, H, W, C, n_win, topk, heads)
    "56x56_nwin7_topk2": (8, 56, 56, 96, 7, 2, 3),
    "64x64_nwin8_topk2": (8, 64, 64, 96, 8, 2, 3),
}


def make(case: str, device: str):
    n, h, w, c, n_win, topk, heads = CASES[case]
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(c, heads, n_win, c, topk).to(device)
    x = torch.randn(n, h, w, c, device=device)
    return module, x


def run_once(impl: str, mode: str, module, x) -> None:
    call = (lambda t: module(t)) if impl == "ours" else (lambda t: oracle_bra(module, t)[0])
    if mode == "forward":
        module.eval()
        with torch.inference_mode():
            call(x)
    else:
        module.train()
        module.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        call(xg).sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()


def child(case: str, impl: str, mode: str, device: str) -> None:
    module, x = make(case, device)
    run_once(impl, mode, module, x[:1, : x.shape[1] // 4, : x.shape[2] // 4])  # warm-up: library init, small
    print(measure_growth(lambda: run_once(impl, mode, module, x)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=4, metavar=("CASE", "IMPL", "MODE", "DEVICE"))
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    for case in CASES:
        module, x = make(case, args.device)
        for mode in ("forward", "forward+backward"):
            row = {"bench": "bra", "case": case, "mode": mode, "device": args.device, "threads": torch.get_num_threads()}
            for impl in ("oracle", "ours"):
                row[f"{impl}_s"] = round(median_time(lambda: run_once(impl, mode, module, x)), 4)
                if args.device == "cpu":
                    row[f"{impl}_rss_growth_mib"] = round(
                        growth_in_subprocess(Path(__file__), case, impl, mode, args.device) / 2**20, 1
                    )
            row["time_ratio"] = round(row["ours_s"] / row["oracle_s"], 3)
            if args.device == "cpu":
                row["memory_ratio"] = round(row["ours_rss_growth_mib"] / row["oracle_rss_growth_mib"], 3)
            emit(**row)


if __name__ == "__main__":
    main()
