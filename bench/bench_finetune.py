"""A realistic fine-tuning round with the bundled polyp model, on CVC-ClinicDB sequences it never saw.

The bundled ``polyp`` model was trained without CVC sequences 2, 8, 16, 23 and 29 (nor its
validation sequences 4, 13, 20, 28; see models/README.md). An annotator corrects the first frame of
each of the 5 new sequences; :func:`braunet.train.finetune.finetune` (default settings: decoder
mode, anchor replay, 25 % of the corrected frames held back for its accept/reject decision) runs
with a time budget; then both models are scored at the frames' own resolution on

* the other 10 frames of those sequences (middle and last frame): the gain the annotator sees;
* the model's validation split (12 frames of sequences 4, 13, 20, 28): what fine-tuning costs on
  data it was not tuned on (forgetting).

Prints one JSON line per mode and seed with wall time (whole ``finetune`` call, preprocessing and
scoring included) against the 60 s target, Dice before/after and the validation change, then one
summary line per mode (means over seeds: with 10 scored frames and a weak base model a single
round's figures swing by +-0.1 between seeds).
``--blend 1`` turns off the weight-space blend towards the parent (the rounds before it existed);
``--holdback-by slices|blocks`` chooses what a round holds back to judge itself. Each line also gives
``candidate_gain`` and ``candidate_val_change``: what the round's copy scores whether or not it was
accepted, which tells a wrong rejection from a round that was rightly turned down.
Usage: python bench/bench_finetune.py [--budget 30] [--modes decoder full] [--seeds 0 1 2] [--threads N]
       [--blend B] [--holdback-by slices|blocks]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import emit  # noqa: E402

from braunet.train.evaluate import evaluate_slices  # noqa: E402
from braunet.train.finetune import finetune  # noqa: E402
from braunet.train.slices import SliceSet, load_image_pair  # noqa: E402
from braunet.zoo import resolve_model  # noqa: E402

BENCH_SEQUENCES = {2: (26, 38, 50), 8: (152, 164, 177), 16: (318, 330, 342), 23: (467, 472, 478), 29: (592, 602, 612)}
VAL_SEQUENCES = {4: (68, 73, 78), 13: (253, 265, 277), 20: (409, 418, 428), 28: (572, 581, 591)}
TARGET_WALL_S, TARGET_GAIN, TARGET_VAL_DROP = 60.0, 0.05, 0.02


def data_dir() -> Path:
    env = os.environ.get("BRAUNET_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def frames(numbers) -> SliceSet:
    root = data_dir() / "cvc_clinicdb"
    out = SliceSet()
    for n in numbers:
        out = out + load_image_pair(root / "images" / f"{n}.tif", root / "masks" / f"{n}.tif", num_classes=1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=30.0, help="fine-tuning time budget in seconds (30)")
    parser.add_argument("--modes", nargs="+", default=["decoder", "full"], choices=("decoder", "full"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="fine-tuning seeds (holdback split, sampling, augmentation); one line each")
    parser.add_argument("--blend", type=float, default=None,
                        help="share of the fine-tuning update kept (default: finetune's; 1 = no blend)")
    parser.add_argument("--holdback-by", default=None, choices=("slices", "blocks"),
                        help="what the round holds back to judge itself (default: finetune's)")
    args = parser.parse_args()
    extra: dict = {} if args.blend is None else {"blend": args.blend}
    if args.holdback_by:
        extra["holdback_by"] = args.holdback_by
    if args.threads:
        torch.set_num_threads(args.threads)

    corrected = frames([seq[0] for seq in BENCH_SEQUENCES.values()])
    scored = frames([f for seq in BENCH_SEQUENCES.values() for f in seq[1:]])
    validation = frames([f for seq in VAL_SEQUENCES.values() for f in seq])
    source = resolve_model("polyp")
    parent, card = source.load()
    before = evaluate_slices(parent, card, scored).mean_dice
    val_before = evaluate_slices(parent, card, validation).mean_dice
    runs = []
    for mode, seed in [(m, s) for m in args.modes for s in args.seeds]:
        start = time.perf_counter()
        result = finetune(parent, card, corrected.images, corrected.labels, mode=mode, time_budget_s=args.budget,
                          seed=seed, anchors=source.anchors, keep_candidate=True, **extra)
        wall = time.perf_counter() - start
        after = evaluate_slices(result.model, card, scored).mean_dice
        val_after = evaluate_slices(result.model, card, validation).mean_dice
        # what the round's copy would have given, kept or not: tells a wrong rejection from a bad round
        candidate, candidate_val = (after, val_after) if result.accepted else (
            evaluate_slices(result.candidate, card, scored).mean_dice,
            evaluate_slices(result.candidate, card, validation).mean_dice)  # fmt: skip
        runs.append({"mode": mode, "wall_s": wall, "gain": after - before, "val_change": val_after - val_before,
                     "accepted": result.accepted, "blend": result.details["blend"],
                     "candidate_gain": candidate - before, "candidate_val_change": candidate_val - val_before})
        emit(
            bench="finetune", model=f"{card.name}@{card.version}", mode=mode, seed=seed, time_budget_s=args.budget,
            blend=result.details["blend"], holdback_by=result.details["heldout"],
            wall_s=round(wall, 2), wall_ratio_to_target=round(wall / TARGET_WALL_S, 3), steps=result.steps,
            accepted=result.accepted, heldout_dice_before=round(result.dice_before, 4),
            heldout_dice_after=round(result.dice_after, 4), n_corrected=len(corrected), n_scored=len(scored),
            dice_before=round(before, 4), dice_after=round(after, 4), gain=round(after - before, 4),
            gain_target=TARGET_GAIN, val_dice_before=round(val_before, 4), val_dice_after=round(val_after, 4),
            val_change=round(val_after - val_before, 4), val_drop_target=TARGET_VAL_DROP,
            candidate_gain=round(candidate - before, 4), candidate_val_change=round(candidate_val - val_before, 4),
            anchor_dice_before=result.anchor_dice_before, anchor_dice_after=result.anchor_dice_after,
            threads=torch.get_num_threads(), load_avg_1min=os.getloadavg()[0],
        )
    for mode in args.modes:
        mine = [r for r in runs if r["mode"] == mode]
        mean_gain = sum(r["gain"] for r in mine) / len(mine)
        mean_val_change = sum(r["val_change"] for r in mine) / len(mine)
        emit(
            bench="finetune_summary", mode=mode, n_seeds=len(mine), blend=mine[0]["blend"],
            mean_wall_s=round(sum(r["wall_s"] for r in mine) / len(mine), 2),
            mean_gain=round(mean_gain, 4), min_gain=round(min(r["gain"] for r in mine), 4),
            mean_val_change=round(mean_val_change, 4), min_val_change=round(min(r["val_change"] for r in mine), 4),
            accepted=sum(r["accepted"] for r in mine),
            mean_candidate_gain=round(sum(r["candidate_gain"] for r in mine) / len(mine), 4),
            mean_candidate_val_change=round(sum(r["candidate_val_change"] for r in mine) / len(mine), 4),
            meets_targets=bool(
                max(r["wall_s"] for r in mine) <= TARGET_WALL_S
                and mean_gain >= TARGET_GAIN
                and mean_val_change >= -TARGET_VAL_DROP
            ),
        )


if __name__ == "__main__":
    main()
