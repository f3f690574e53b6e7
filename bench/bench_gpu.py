"""What a GPU user meets: forward time of the official-width model over batch sizes, per precision,
against the plain reference of the official forward in the same process.

For each batch size (default 1, 2, 4, 8, 16, 32, 64) and precision (fp32, bf16 and fp16 autocast;
the reference always float32): seconds per call, slices/s and the ratio to the reference at the
same batch, timed side by side (alternating calls, best of medians; ``torch.cuda.synchronize``
around every call on CUDA). A batch that runs out of memory is reported as such and ends the sweep
for larger ones. The first line names the device (``torch.cuda.get_device_name``), so every figure
says which card gave it. The whole-volume ``predict`` of a 512 x 512 x 300 CT is
``bench/bench_infer.py --device cuda``; ``scripts/gpu_bench.sh`` runs both within one budget.

It also runs on a CPU (``--device cpu --batches 1 2``), which is how its code is checked where no
GPU is lent. Usage: python bench/bench_gpu.py [--device cuda] [--batches 1 2 4 ...]
[--precisions fp32 bf16 fp16] [--reps 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import alternating_best_medians, emit, run_context  # noqa: E402
from bench.reference_braunet import ReferenceBRAUNet  # noqa: E402

from braunet.model import BRAUNet, get_preset  # noqa: E402

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _call(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], object]:
    """One synchronised forward pass of ``model`` on ``x`` under autocast to ``dtype`` (None: float32)."""
    device = x.device

    def run() -> object:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):  # fmt: skip
            out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--precisions", nargs="+", default=list(AUTOCAST), choices=list(AUTOCAST))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here (give --device cpu to check the script)")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit(bench="gpu", device=name, torch=torch.__version__, **run_context())
    torch.manual_seed(0)
    config = get_preset("synapse")
    ours = BRAUNet(config).to(device).eval()
    reference = ReferenceBRAUNet(config)
    reference.load_state_dict(ours.state_dict())
    reference = reference.to(device).eval()
    for batch in args.batches:
        x = torch.randn(batch, 3, config.img_size, config.img_size, device=device)
        calls = {"reference_fp32": _call(reference, x, None)}
        calls.update({f"ours_{p}": _call(ours, x, AUTOCAST[p]) for p in args.precisions})
        try:
            seconds = alternating_best_medians(calls, reps=args.reps, rounds=args.rounds)
        except torch.OutOfMemoryError:
            emit(bench="gpu_forward", device=name, batch=batch, out_of_memory=True)
            break
        for impl, value in seconds.items():
            emit(bench="gpu_forward", device=name, batch=batch, impl=impl, s_per_call=round(value, 5),
                 slices_per_s=round(batch / value, 1), ratio_to_reference=round(seconds["reference_fp32"] / value, 2),
                 **({"max_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
                    if device.type == "cuda" else {}))  # fmt: skip
        del x, calls
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
