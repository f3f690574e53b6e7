"""Whole-model speed and memory of the full ``synapse`` preset (224 px, 9 classes).

JSON lines: forward time at batch 1 and 8 and a training step at batch 2 (median of 5 / 3 runs),
achieved GFLOP/s (35.16 GFLOP per 224^2 slice, the official count) as a fraction of this machine's
float32 matmul rate measured in the same run, and resident-memory growth of each call in a fresh
process (peak after the call minus resident before it, no warm-up, as the official baseline was
measured). Usage: python bench/bench_model.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import emit, growth_in_subprocess, matmul_gflops, measure_growth, median_time  # noqa: E402

from braunet.model import BRAUNet, get_preset  # noqa: E402
from braunet.train.losses import DiceCELoss  # noqa: E402

GFLOP_PER_SLICE = 35.16
OFFICIAL = {"forward_b8_matmul_fraction": 0.60, "train_b2_growth_gib": 1.30, "forward_b8_growth_gib": 0.62}
# The official code on this kind of machine, idle, 2 threads (../shared/notes/official-architecture.md, section 16).
# reason: its 0.60 "matmul fraction" at batch 8 implies a matmul rate of ~149 GFLOP/s, this machine's single-thread
# rate, so the fraction alone depends on how the matmul rate is taken; the direct speed ratio does not.
OFFICIAL_SECONDS_2_THREADS = {"forward_b1": 0.405, "forward_b8": 3.14, "train_b2": 3.11}


def build(device: str) -> BRAUNet:
    torch.manual_seed(0)
    return BRAUNet(get_preset("synapse")).to(device)


def step(kind: str, model: BRAUNet, device: str):
    if kind.startswith("forward"):
        batch = int(kind.removeprefix("forward_b"))
        x = torch.randn(batch, 3, 224, 224, device=device)
        model.eval()

        def call():
            with torch.inference_mode():
                model(x)
    else:
        x = torch.randn(2, 3, 224, 224, device=device)
        target = torch.randint(0, 9, (2, 224, 224), device=device)
        loss_fn = DiceCELoss(num_classes=9)
        model.train()

        def call():
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), target).backward()

    def synced():
        call()
        if device == "cuda":
            torch.cuda.synchronize()

    return synced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DEVICE"))
    args = parser.parse_args()
    if args.child:
        kind, device = args.child
        model = build(device)
        print(measure_growth(step(kind, model, device)))
        return
    device = args.device
    matmul = matmul_gflops() if device == "cpu" else None
    matmul_1_thread = None
    if device == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        matmul_1_thread = matmul_gflops()
        torch.set_num_threads(threads)
    model = build(device)
    for kind, batch, reps in (("forward_b1", 1, 5), ("forward_b8", 8, 5), ("train_b2", 2, 3)):
        seconds = median_time(step(kind, model, device), reps=reps, warmup=1)
        flop = GFLOP_PER_SLICE * batch * (3 if kind.startswith("train") else 1)  # backward ~ 2x forward
        row = {"bench": "model", "preset": "synapse", "kind": kind, "device": device,
               "threads": torch.get_num_threads(), "seconds": round(seconds, 4),
               "seconds_per_slice": round(seconds / batch, 4), "gflop_per_s": round(flop / seconds, 1)}
        if matmul:
            row["matmul_gflop_per_s"] = round(matmul, 1)
            row["matmul_fraction"] = round(flop / seconds / matmul, 3)
            row["matmul_1_thread_gflop_per_s"] = round(matmul_1_thread, 1)
        official_s = OFFICIAL_SECONDS_2_THREADS.get(kind)
        if device == "cpu" and torch.get_num_threads() == 2 and official_s:
            row["official_seconds"] = official_s
            row["speed_vs_official"] = round(official_s / seconds, 2)
        if device == "cpu":
            growth = growth_in_subprocess(Path(__file__), kind, device) / 2**30
            row["rss_growth_gib"] = round(growth, 3)
            official = OFFICIAL.get(f"{kind}_growth_gib")
            if official:
                row["official_rss_growth_gib"] = official
                row["memory_ratio_vs_official"] = round(growth / official, 3)
        emit(**row)


if __name__ == "__main__":
    main()
