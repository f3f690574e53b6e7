"""Does test-time flip averaging pay for itself? Dice on each bundled RGB model's held-out splits
with no flips, the left-right flip, and both flips, and what each costs per image.

The splits are those of ``scripts/train_bundled.py`` (its data builders: never seen in training),
scored by :func:`braunet.train.evaluate.evaluate_slices` at the images' own resolution, exactly as
the cards' figures are. The cost is the network time per image at batch 8 (``SliceRunner.logits``),
each variant timed side by side with the others in this process (alternating, best of medians), so
the ratio to the plain pass is what a user pays. CT models are left out: the abdomen is not
mirror-symmetric (the liver is on one side), so a flipped CT slice is not an image they were
trained on.

One JSON line per model and variant (Dice per split, ms per image, ratio to no flips), then one
line per model naming the variant with the best mean Dice over its splits.
Usage: python bench/bench_tta.py [--models polyp skin-lesion] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import alternating_best_medians, emit, load_train_bundled, run_context  # noqa: E402

from braunet.infer import SliceRunner  # noqa: E402
from braunet.train.evaluate import evaluate_slices  # noqa: E402
from braunet.zoo import resolve_model  # noqa: E402

VARIANTS = {"none": [], "hflip": ["hflip"], "hflip+vflip": ["hflip", "vflip"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["polyp", "skin-lesion"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    script = load_train_bundled()
    root = script.data_dir()
    for name in args.models:
        model, card = resolve_model(name).load("cpu")
        bundle = script.BUILDERS[name](root, None)
        splits = {**bundle.val, **bundle.extra_eval}
        cards = {}
        for variant, flips in VARIANTS.items():
            cards[variant] = dataclasses.replace(card, preprocessing={**card.preprocessing, "tta": flips})
        size = card.config.img_size
        x = torch.randn(8, card.config.in_chans, size, size)
        runners = {v: SliceRunner(model, c.recipe, size, card.config.num_classes, amp=False) for v, c in cards.items()}
        seconds = alternating_best_medians({v: (lambda r=r: r.logits(x)) for v, r in runners.items()}, reps=3)
        scores = {}
        for variant, variant_card in cards.items():
            dice = {split: round(evaluate_slices(model, variant_card, slices).mean_dice, 4)
                    for split, slices in splits.items() if len(slices)}  # fmt: skip
            scores[variant] = sum(dice.values()) / len(dice)
            emit(bench="tta", model=name, variant=variant, dice=dice, mean_dice=round(scores[variant], 4),
                 ms_per_image_b8=round(seconds[variant] / 8 * 1000, 1),
                 cost_ratio=round(seconds[variant] / seconds["none"], 2), **run_context())  # fmt: skip
        best = max(scores, key=scores.get)
        emit(bench="tta_summary", model=name, best=best, gain=round(scores[best] - scores["none"], 4),
             **{f"mean_dice_{v}": round(s, 4) for v, s in scores.items()})  # fmt: skip


if __name__ == "__main__":
    main()
