"""Whole-model speed and memory of the full ``synapse`` preset (224 px, 9 classes) against the official forward.

The baseline runs in the same process: ``bench/reference_braunet.py``, the official BRAU-Net++
forward written plainly (gather-based routing attention, unfused ops), holding our model's weights;
the first JSON line checks that both give the same logits. Then, for forward passes at batch 1 and
8 and a training step at batch 2 (Dice + CE loss, backward, no optimizer step): ours in float32 and
ours under ``torch.autocast(dtype=torch.bfloat16)``, each against the float32 reference. Timing:
the implementations alternate call by call (reference, ours, ours bf16, reference, ...), the median
of each per round, best of the rounds' medians. Achieved GFLOP/s (35.16 GFLOP per 224^2 slice, the
official count) is also given as a fraction of this machine's float32 matmul rate measured in the
same run. Resident-memory growth: each (kind, implementation) once in a fresh process (peak after
the call minus resident before it, no warm-up). Every line carries date, CPU, threads and load average.

Usage: python bench/bench_model.py [--device cpu|cuda] [--threads N] [--rounds 3] [--no-bf16] [--no-memory]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import (  # noqa: E402
    alternating_best_medians,
    cpu_has_native_bf16,
    emit,
    growth_in_subprocess,
    matmul_gflops,
    measure_growth,
    run_context,
)
from bench.reference_braunet import ReferenceBRAUNet  # noqa: E402

from braunet.model import BRAUNet, get_preset  # noqa: E402
from braunet.train.losses import DiceCELoss  # noqa: E402

GFLOP_PER_SLICE = 35.16  # work per 224^2 slice (official model, torch.utils.flop_counter), not a timing
KINDS = {"forward_b1": (1, 5), "forward_b8": (8, 5), "train_b2": (2, 3)}  # kind: (batch, calls per round)
# implementation: (model, bf16 autocast); "reference" is always float32
IMPLS = {"reference": ("reference", False), "ours": ("ours", False), "ours_bf16": ("ours", True)}


def build(impl: str, device: str, weights: BRAUNet | None = None) -> nn.Module:
    """Our model, or the reference (with ``weights``' state dict when given); seeded official init."""
    torch.manual_seed(0)
    config = get_preset("synapse")
    if impl == "ours":
        return BRAUNet(config).to(device)
    reference = ReferenceBRAUNet(config)
    if weights is not None:
        reference.load_state_dict(weights.state_dict())
    return reference.to(device)


def inputs(kind: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 224, 224) images and (B, 224, 224) labels in [0, 9), the same for every implementation."""
    batch = KINDS[kind][0]
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 224, 224, generator=generator).to(device)
    return x, torch.randint(0, 9, (batch, 224, 224), generator=generator).to(device)


def step(kind: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, device: str, bf16: bool) -> Callable[[], None]:
    """One timed call of ``kind``; sets the model's mode (eval for forward passes, train for the step)."""
    loss_fn = DiceCELoss(num_classes=9)
    model.train(not kind.startswith("forward"))

    def call() -> None:
        if kind.startswith("forward"):
            with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x), target)
            loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return call


def check(models: dict[str, nn.Module], device: str, bf16: bool) -> float:
    """Emit how far ours is from the reference on the batch-1 input; returns the float32 max abs logit difference."""
    x, _ = inputs("forward_b1", device)
    with torch.inference_mode():
        for model in models.values():
            model.eval()
        reference, ours = models["reference"](x), models["ours"](x)
        row = {"bench": "model", "preset": "synapse", "kind": "check", "device": device,
               "max_abs_logit_diff": float((ours - reference).abs().max()), "logit_abs_max": float(reference.abs().max())}
        if bf16:
            with torch.autocast(device, dtype=torch.bfloat16):
                ours_bf16 = models["ours"](x).float()
            row["bf16_max_abs_logit_diff"] = float((ours_bf16 - reference).abs().max())
            row["bf16_label_agreement"] = float((ours_bf16.argmax(1) == reference.argmax(1)).float().mean())
    emit(**row, **run_context())
    return row["max_abs_logit_diff"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast rows")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurements")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "IMPL", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, impl, device = args.child
        model_name, bf16 = IMPLS[impl]
        model = build(model_name, device)
        print(measure_growth(step(kind, model, *inputs(kind, device), device, bf16)))
        return

    device = args.device
    bf16 = not args.no_bf16
    impls = [name for name in IMPLS if bf16 or not IMPLS[name][1]]
    context_extra = {"device": device}
    if device == "cuda":
        context_extra["gpu"] = torch.cuda.get_device_name()
        context_extra["bf16_native"] = torch.cuda.is_bf16_supported()
    else:
        context_extra["bf16_native"] = cpu_has_native_bf16()
    matmul = matmul_gflops() if device == "cpu" else None
    matmul_1_thread = None
    if device == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        matmul_1_thread = matmul_gflops()
        torch.set_num_threads(threads)

    ours = build("ours", device)
    models = {"ours": ours, "reference": build("reference", device, weights=ours)}
    difference = check(models, device, bf16)
    if difference > 1e-3:  # reason: ratios between two different functions would mean nothing
        raise SystemExit(f"reference and ours disagree (max abs logit difference {difference:.3g}); fix before timing")

    for kind, (batch, reps) in KINDS.items():
        x, target = inputs(kind, device)
        calls = {name: step(kind, models[IMPLS[name][0]], x, target, device, IMPLS[name][1]) for name in impls}
        seconds = alternating_best_medians(calls, reps=reps, rounds=args.rounds, warmup=1)
        growth = {}
        if device == "cpu" and not args.no_memory:
            extra = ("--threads", str(args.threads)) if args.threads else ()
            growth = {name: growth_in_subprocess(Path(__file__), kind, name, device, *extra) / 2**30 for name in impls}
        flop = GFLOP_PER_SLICE * batch * (3 if kind.startswith("train") else 1)  # backward ~ 2x forward
        for name in impls:
            row: dict[str, object] = {
                "bench": "model", "preset": "synapse", "kind": kind, "impl": IMPLS[name][0],
                "precision": "bf16" if IMPLS[name][1] else "fp32", "seconds": round(seconds[name], 4),
                "seconds_per_slice": round(seconds[name] / batch, 4), "gflop_per_s": round(flop / seconds[name], 1),
            }
            if matmul and matmul_1_thread and not IMPLS[name][1]:  # a float32 rate: fp32 rows only
                row["matmul_gflop_per_s"] = round(matmul, 1)
                row["matmul_fraction"] = round(flop / seconds[name] / matmul, 3)
                row["matmul_1_thread_gflop_per_s"] = round(matmul_1_thread, 1)
            if name != "reference":
                row["reference_seconds"] = round(seconds["reference"], 4)
                row["speed_vs_reference"] = round(seconds["reference"] / seconds[name], 2)
            if growth:
                row["rss_growth_gib"] = round(growth[name], 3)
                if name != "reference":
                    row["reference_rss_growth_gib"] = round(growth["reference"], 3)
                    row["memory_vs_reference"] = round(growth[name] / growth["reference"], 3)
            emit(**row, **context_extra, **run_context())


if __name__ == "__main__":
    main()
