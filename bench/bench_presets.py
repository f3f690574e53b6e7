"""Size, compute and CPU latency of every preset (the table in models/README.md).

JSON lines: parameters (all, and those the forward actually uses), GFLOP per slice
(torch.utils.flop_counter: matmuls and convs), median latency of one slice at batch 1 and per
slice at batch 8. Usage: python bench/bench_presets.py [PRESET ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import emit, median_time  # noqa: E402

from braunet.model import BRAUNet, get_preset, list_presets  # noqa: E402


def main() -> None:
    for name in sys.argv[1:] or list_presets():
        torch.manual_seed(0)
        config = get_preset(name)
        model = BRAUNet(config).eval()
        params = sum(p.numel() for p in model.parameters())
        unused = 0 if config.bottleneck_blocks else sum(p.numel() for p in model.stages[3].parameters())
        x1 = torch.randn(1, 3, config.img_size, config.img_size)
        x8 = torch.randn(8, 3, config.img_size, config.img_size)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x1)
        with torch.inference_mode():
            batch1 = median_time(lambda: model(x1))
            batch8 = median_time(lambda: model(x8), reps=3, warmup=1)
        emit(bench="preset", preset=name, img_size=config.img_size, classes=config.num_classes,
             params_m=round(params / 1e6, 2), params_used_m=round((params - unused) / 1e6, 2),
             gflop=round(counter.get_total_flops() / 1e9, 2), ms_batch1=round(batch1 * 1e3, 1),
             ms_per_slice_batch8=round(batch8 / 8 * 1e3, 1), threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
