"""Does correcting the suggested slices teach the model more than correcting evenly spaced ones?

Active learning on the bundled ``polyp`` model and the 5 CVC-ClinicDB video sequences it never
saw (2, 8, 16, 23, 29: not trained on, not its validation split; models/README.md), every frame of
each (``cvc_clinicdb`` + ``cvc_clinicdb_more``, 12-26 frames per sequence, in frame order, like
the slices of a volume). In each sequence an annotator corrects 3 frames, chosen

* ``suggest``: by :func:`braunet.infer.uncertainty.suggest_slices` (mean entropy over the
  predicted polyp and a band around it; no two picks closer than ``--spacing`` frames), or
* ``even``: evenly spaced (the centres of three equal parts of the sequence);

their ground-truth masks are the corrections. One fine-tuning round per strategy and seed
(:func:`braunet.train.finetune.finetune`, default settings: decoder, anchor replay, the blend, a
quarter of the 15 corrected frames held back for its accept/reject rule), with the same fixed
number of steps (``--steps``; a time budget would give the strategies different step counts on a
shared machine) and the same seed. Both models are then scored at the frames' own resolution on
the frames that neither strategy picked (``evaluate_slices``, mean Dice over frames); a rejected
round leaves the model as it was (gain 0), as it does for the user.

Why polyp and not CT: the shared data hold no CT subject in HU with all 8 organs labelled that
``ct-abdomen-8`` did not train on (it trained on case01 and case03; MSD spleen_8 labels only the
spleen, CURVAS slices are 8-bit and label 3 organs).

Prints one JSON line per seed and strategy (Dice before, after, gain, accepted, the frames
picked), then a summary line (mean gain per strategy and the mean difference suggest - even).
Usage: python bench/bench_suggest.py [--seeds 0 1 2] [--steps 30] [--spacing 4] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import emit  # noqa: E402

from braunet.infer.uncertainty import suggest_slices  # noqa: E402
from braunet.train.evaluate import evaluate_slices  # noqa: E402
from braunet.train.finetune import finetune  # noqa: E402
from braunet.train.slices import SliceSet, load_image_pair  # noqa: E402
from braunet.zoo import resolve_model  # noqa: E402

UNSEEN_SEQUENCES = (2, 8, 16, 23, 29)  # the polyp card's "held out for the fine-tuning benchmark"
PER_SEQUENCE = 3


def data_dir() -> Path:
    env = os.environ.get("BRAUNET_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def sequence_frames(sequence: int) -> SliceSet:
    """Every shared frame of a CVC-ClinicDB sequence, in frame order, with its binary mask."""
    paths = {}
    for folder, image_suffix, mask_dir in (("cvc_clinicdb", ".tif", "masks"), ("cvc_clinicdb_more", ".png", "masks")):
        root = data_dir() / folder
        with open(root / "cases.csv", newline="") as table:
            for row in csv.DictReader(table):
                if int(row["sequence"]) == sequence:
                    frame = int(row["frame"])
                    mask_suffix = ".tif" if folder == "cvc_clinicdb" else ".png"
                    paths[frame] = (root / "images" / f"{frame}{image_suffix}", root / mask_dir / f"{frame}{mask_suffix}")
    frames = SliceSet()
    for frame in sorted(paths):
        frames = frames + load_image_pair(*paths[frame], num_classes=1, group=f"s{sequence}")
    return frames


def even_positions(length: int, count: int) -> list[int]:
    """The centres of ``count`` equal parts of 0..length-1."""
    return sorted({min(length - 1, int((k + 0.5) * length / count)) for k in range(count)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps per round (30)")
    parser.add_argument("--spacing", type=int, default=4, help="suggestions at least this many frames apart (4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    source = resolve_model("polyp")
    parent, card = source.load()
    sequences = {s: sequence_frames(s) for s in UNSEEN_SEQUENCES}
    picks: dict[str, dict[int, list[int]]] = {"suggest": {}, "even": {}}
    for s, frames in sequences.items():
        found = suggest_slices(parent, card, frames.images, n=PER_SEQUENCE, spacing=args.spacing)
        picks["suggest"][s] = sorted(found.indices)
        picks["even"][s] = even_positions(len(frames), PER_SEQUENCE)
    scored = SliceSet()
    for s, frames in sequences.items():
        taken = set(picks["suggest"][s]) | set(picks["even"][s])
        scored = scored + frames.subset([k for k in range(len(frames)) if k not in taken])
    before = evaluate_slices(parent, card, scored).mean_dice
    corrections = {
        strategy: sum((sequences[s].subset(chosen[s]) for s in UNSEEN_SEQUENCES), SliceSet())
        for strategy, chosen in picks.items()
    }

    gains: dict[str, list[float]] = {"suggest": [], "even": []}
    for seed in args.seeds:
        for strategy in ("suggest", "even"):
            corrected = corrections[strategy]
            start = time.perf_counter()
            result = finetune(parent, card, corrected.images, corrected.labels, time_budget_s=3600.0,
                              max_steps=args.steps, seed=seed, anchors=source.anchors)  # fmt: skip
            wall = time.perf_counter() - start
            after = evaluate_slices(result.model, card, scored).mean_dice if result.accepted else before
            gains[strategy].append(after - before)
            emit(
                bench="suggest", model=f"{card.name}@{card.version}", strategy=strategy, seed=seed,
                steps=result.steps, accepted=result.accepted, n_corrected=len(corrected), n_scored=len(scored),
                dice_before=round(before, 4), dice_after=round(after, 4), gain=round(after - before, 4),
                heldout_dice_before=round(result.dice_before, 4), heldout_dice_after=round(result.dice_after, 4),
                picked={f"s{s}": chosen for s, chosen in picks[strategy].items()}, wall_s=round(wall, 1),
                threads=torch.get_num_threads(), load_avg_1min=os.getloadavg()[0],
            )  # fmt: skip
    mean = {strategy: sum(values) / len(values) for strategy, values in gains.items()}
    differences = [a - b for a, b in zip(gains["suggest"], gains["even"], strict=True)]
    emit(
        bench="suggest_summary", n_seeds=len(args.seeds), steps=args.steps, spacing=args.spacing,
        frames_per_sequence=PER_SEQUENCE, sequences=list(UNSEEN_SEQUENCES), n_scored=len(scored),
        dice_before=round(before, 4), mean_gain_suggest=round(mean["suggest"], 4), mean_gain_even=round(mean["even"], 4),
        mean_difference=round(sum(differences) / len(differences), 4),
        suggest_better_in=f"{sum(d > 0 for d in differences)} of {len(differences)} seeds",
        wall_s=round(time.perf_counter() - started, 1), load_avg_1min=os.getloadavg()[0],
    )  # fmt: skip


if __name__ == "__main__":
    main()
