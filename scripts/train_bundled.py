"""Retrain the bundled models in ``models/`` from the shared real data.

    python scripts/train_bundled.py ct-abdomen-8 --minutes 12
    python scripts/train_bundled.py polyp --minutes 12
    python scripts/train_bundled.py skin-lesion --minutes 12
    python scripts/train_bundled.py all --minutes 12

Data: ``../shared/data`` next to the repository, or ``BRAUNET_DATA_DIR`` (see its README for sources
and licences). Each model is trained with a CPU preset for a wall-clock budget, the checkpoint with
the best validation Dice is kept (float16 weights, a few MB), scored again at the images' own
resolution (Dice, HD95 in mm) on the validation split, and written to ``models/<name>/`` with a
card that records data, licences, split, command, time and hardware, and a small anchor set for
fine-tuning replay. Intermediate files go to ``--work`` (default: a temporary folder).

Splits (no case, slice slab or video sequence is on both sides):

* ct-abdomen-8: TotalSegmentator case01 (3 mm, 112 axial slices; organs in slices 62-111) and the
  dcmqi case03 liver (3 slices, only the liver annotated: trained with the unannotated organs merged
  into background, see ``braunet.train.trainer``). Validation: the top slab of case01, slices
  100-111 (12 of the 50 organ-bearing slices), with a 3-slice gap (97-99) left out of both sides.
  Empty pelvis slices (0-61) are subsampled 1 in 4 for training.
* polyp: CVC-ClinicDB (60 frames, 20 sequences) + Kvasir-SEG (3 images). Validation: CVC sequences
  4, 13, 20, 28. Sequences 2, 8, 16, 23, 29 are kept out of training too: bench/bench_finetune.py
  fine-tunes on them; their Dice before fine-tuning is reported as a second held-out figure.
* skin-lesion: ISIC 2016 crops (253) + HAM10000 (3). Validation: every 5th ISIC id in sorted order.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from braunet.classes import (  # noqa: E402
    LESION_CLASSES,
    LESION_COLORS,
    POLYP_CLASSES,
    POLYP_COLORS,
    SYNAPSE8_CLASSES,
    SYNAPSE8_COLORS,
)
from braunet.infer.preprocess import official_preprocessing  # noqa: E402
from braunet.model import ModelCard, get_preset, save_checkpoint  # noqa: E402
from braunet.train.anchors import save_anchors  # noqa: E402
from braunet.train.evaluate import evaluate_slices  # noqa: E402
from braunet.train.loop import describe_hardware  # noqa: E402
from braunet.train.run import train_on_slices  # noqa: E402
from braunet.train.slices import SliceSet, load_image_pair, load_volume_pair  # noqa: E402
from braunet.train.trainer import TrainConfig  # noqa: E402

MODELS = ("ct-abdomen-8", "polyp", "skin-lesion")

CVC_VAL_SEQUENCES = (4, 13, 20, 28)
CVC_BENCH_SEQUENCES = (2, 8, 16, 23, 29)  # bench/bench_finetune.py fine-tunes and scores on these

LICENCES = {
    "totalseg": "Apache-2.0 (wasserth/TotalSegmentator repository; labels are TotalSegmentator v1 predictions, "
    "a silver standard)",
    "dcmqi": "BSD-3-Clause (QIICR/dcmqi repository; test segmentation of unknown accuracy)",
    "cvc": "CVC-ClinicDB: research and educational use only, commercial use forbidden (Bernal et al. 2015)",
    "kvasir": "Kvasir-SEG: research and educational use; commercial use needs prior written permission from "
    "Simula (Jha et al. 2020)",
    "isic": "ISIC 2016 challenge data: CC-0 (Gutman et al. 2016)",
    "ham": "HAM10000: non-commercial (CC BY-NC; Tschandl et al. 2018)",
}


def data_dir() -> Path:
    env = os.environ.get("BRAUNET_DATA_DIR")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------
# Datasets and splits


def ct_data(root: Path, view: str) -> tuple[SliceSet, SliceSet, SliceSet, dict]:
    image, label = root / "totalseg_ct" / "case01_ct.nii.gz", root / "totalseg_ct" / "case01_label_synapse8.nii.gz"
    val_slices = list(range(100, 112))
    train_slices = [k for k in range(97) if k >= 62 or k % 4 == 0]
    train = load_volume_pair(image, label, num_classes=9, slices=train_slices, group="case01", view=view)
    val = load_volume_pair(image, label, num_classes=9, slices=val_slices, group="case01-val", view=view)
    liver = load_volume_pair(
        root / "dcmqi_ct" / "case03_ct.nii.gz", root / "dcmqi_ct" / "case03_label_synapse8.nii.gz",
        num_classes=9, known_classes=(5,), group="case03", view=view,
    )
    anchors = train.subset([train_slices.index(k) for k in (66, 72, 78, 84, 90, 96)])
    info = {
        "data": [
            {"dataset": "totalseg_ct case01 (case01_ct.nii.gz + case01_label_synapse8.nii.gz)",
             "use": f"train: {len(train_slices)} axial slices (0-96; empty slices 0-61 subsampled 1 in 4); "
                    "validation: slices 100-111; slices 97-99 unused (gap)", "licence": LICENCES["totalseg"]},
            {"dataset": "dcmqi_ct case03 (case03_ct.nii.gz + case03_label_synapse8.nii.gz)",
             "use": "train: 3 slices, liver only (other organs unannotated, merged into background in the loss)",
             "licence": LICENCES["dcmqi"]},
        ],
        "split": "by slab: validation = top 12 axial slices of case01 (100-111, the upper abdomen: liver, spleen, "
                 "stomach, aorta, the tops of both kidneys, 30 voxels of pancreas; no gallbladder), 3-slice gap",
    }
    return train + liver, val, anchors, info


def _cvc(root: Path, sequences: set[int]) -> SliceSet:
    out = SliceSet()
    for row in _rows(root / "cvc_clinicdb" / "cases.csv"):
        if int(row["sequence"]) in sequences:
            frame = row["frame"]
            out = out + load_image_pair(
                root / "cvc_clinicdb" / "images" / f"{frame}.tif", root / "cvc_clinicdb" / "masks" / f"{frame}.tif",
                num_classes=1, group=f"cvc-seq{row['sequence']}",
            )
    return out


def cvc_sequences(root: Path) -> list[int]:
    return sorted({int(r["sequence"]) for r in _rows(root / "cvc_clinicdb" / "cases.csv")})


def polyp_data(root: Path) -> tuple[SliceSet, SliceSet, SliceSet, SliceSet, dict]:
    all_seq = cvc_sequences(root)
    train_seq = [s for s in all_seq if s not in CVC_VAL_SEQUENCES + CVC_BENCH_SEQUENCES]
    train = _cvc(root, set(train_seq))
    for row in _rows(root / "kvasir_seg" / "cases.csv"):
        case = row["case_id"]
        train = train + load_image_pair(
            root / "kvasir_seg" / "images" / f"{case}.jpg", root / "kvasir_seg" / "masks" / f"{case}.png",
            num_classes=1, group=f"kvasir-{case}",
        )
    val = _cvc(root, set(CVC_VAL_SEQUENCES))
    bench = _cvc(root, set(CVC_BENCH_SEQUENCES))
    anchors = _small_rgb_anchors(train.subset([0, 9, 18, 27]))
    info = {
        "data": [
            {"dataset": "CVC-ClinicDB (shared subset: 60 frames, 3 per sequence, 20 sequences; masks > 127)",
             "use": f"train: sequences {train_seq} ({3 * len(train_seq)} frames); validation: sequences "
                    f"{list(CVC_VAL_SEQUENCES)}; sequences {list(CVC_BENCH_SEQUENCES)} held out for the "
                    "fine-tuning benchmark", "licence": LICENCES["cvc"]},
            {"dataset": "Kvasir-SEG (3 images)", "use": "train", "licence": LICENCES["kvasir"]},
        ],
        "split": f"by CVC video sequence: validation {list(CVC_VAL_SEQUENCES)}, "
                 f"fine-tuning benchmark {list(CVC_BENCH_SEQUENCES)}, the other {len(train_seq)} train",
        "licence_summary": "NON-COMMERCIAL: trained on CVC-ClinicDB (commercial use forbidden) and Kvasir-SEG "
                           "(research/education; commercial use needs permission); use for research only",
    }
    return train, val, bench, anchors, info


def skin_data(root: Path) -> tuple[SliceSet, SliceSet, SliceSet, dict]:
    ids = sorted(r["case_id"] for r in _rows(root / "isic2016_crops" / "cases.csv"))
    val_ids = set(ids[::5])
    train, val = SliceSet(), SliceSet()
    for case in ids:
        pair = load_image_pair(
            root / "isic2016_crops" / "images" / f"{case}.jpg", root / "isic2016_crops" / "masks" / f"{case}.png",
            num_classes=1, group=case,
        )
        if case in val_ids:
            val = val + pair
        else:
            train = train + pair
    for row in _rows(root / "ham10000" / "cases.csv"):
        case = row["case_id"]
        train = train + load_image_pair(
            root / "ham10000" / "images" / f"{case}.jpg", root / "ham10000" / "masks" / f"{case}.png",
            num_classes=1, group=f"ham-{case}",
        )
    anchors = _small_rgb_anchors(train.subset([0, 50, 100, len(train) - 1]))
    info = {
        "data": [
            {"dataset": "ISIC 2016 Part 1 test images, 512 x 512 centre crops (253 shared; masks > 127)",
             "use": f"train: {len(ids) - len(val_ids)} crops; validation: {len(val_ids)} crops (every 5th id in "
                    "sorted order)", "licence": LICENCES["isic"]},
            {"dataset": "HAM10000 (3 images with lesion masks)", "use": "train", "licence": LICENCES["ham"]},
        ],
        "split": "by image: validation = every 5th ISIC id in sorted order (fixed list in card extra)",
        "validation_ids": sorted(val_ids),
        "licence_summary": "NON-COMMERCIAL: trained partly on HAM10000 (non-commercial licence); use for research only",
    }
    return train, val, anchors, info


def _small_rgb_anchors(slices: SliceSet, longest: int = 256) -> SliceSet:
    """RGB anchors downscaled (anti-aliased) to ``longest`` pixels, so anchors.npz stays small."""
    from skimage.transform import resize

    images, labels = [], []
    for image, label in zip(slices.images, slices.labels, strict=True):
        scale = longest / max(image.shape[:2])
        shape = (round(image.shape[0] * scale), round(image.shape[1] * scale))
        images.append(np.clip(np.rint(resize(image, shape, order=1, anti_aliasing=True, preserve_range=True)), 0, 255)
                      .astype(np.uint8))
        labels.append(resize(label, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int64))
    return SliceSet.from_arrays(images, labels, group="anchors")


# ------------------------------------------------------------------------------------------------


def build(
    name: str, minutes: float, work: Path, seed: int, max_steps: int | None = None, threads: int = 1,
    resume: bool = False,
) -> dict:
    root = data_dir()
    extra_eval: dict[str, SliceSet] = {}
    if name == "ct-abdomen-8":
        preset = get_preset("cpu-ct")
        preprocessing = official_preprocessing("ct")
        train_set, val_set, anchors, info = ct_data(root, preprocessing["view"])
        class_names, colors = list(SYNAPSE8_CLASSES), list(SYNAPSE8_COLORS)
        description = (
            "8 abdominal organs (Synapse order) in axial CT slices; BRAU-Net++ cpu-ct preset (3.6 M parameters) "
            "trained from scratch on ONE subject (TotalSegmentator example CT, silver-standard labels) plus a "
            "3-slice liver case. A demonstration model: expect it to generalise poorly to other scanners and "
            "patients; fine-tune it on your own corrected slices."
        )
    elif name == "polyp":
        preset = get_preset("cpu-rgb")
        preprocessing = official_preprocessing("rgb")
        train_set, val_set, bench_set, anchors, info = polyp_data(root)
        extra_eval["heldout_benchmark_sequences"] = bench_set
        class_names, colors = list(POLYP_CLASSES), list(POLYP_COLORS)
        description = (
            "Polyp segmentation in colonoscopy frames; BRAU-Net++ cpu-rgb preset trained from scratch on 36 "
            "frames (CVC-ClinicDB + Kvasir-SEG). Non-commercial research use only (training data licences)."
        )
    elif name == "skin-lesion":
        preset = get_preset("cpu-rgb")
        preprocessing = official_preprocessing("rgb")
        train_set, val_set, anchors, info = skin_data(root)
        class_names, colors = list(LESION_CLASSES), list(LESION_COLORS)
        description = (
            "Skin lesion segmentation in dermoscopy images; BRAU-Net++ cpu-rgb preset trained from scratch on "
            "ISIC 2016 crops + HAM10000. Non-commercial research use only (HAM10000 licence)."
        )
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")

    flags = [name, "--minutes", f"{minutes:g}", "--seed", str(seed), "--threads", str(threads)]
    if max_steps:
        flags += ["--max-steps", str(max_steps)]
    if resume:
        flags += ["--resume"]
    command = "python scripts/train_bundled.py " + shlex.join(flags)
    card = ModelCard(
        name=name, config=preset, class_names=class_names, class_colors=colors, preprocessing=preprocessing,
        description=description, version=1,
        training={**info, "command": command, "preset": "cpu-ct" if name == "ct-abdomen-8" else "cpu-rgb",
                  "initialisation": "random (no pre-training)"},
    )
    config = TrainConfig(
        epochs=100000, max_time_s=minutes * 60, max_steps=max_steps, batch_size=8, lr=1e-3, weight_decay=1e-4, warmup_steps=50,
        val_every=1 if len(train_set) > 100 else 4, seed=seed, half=True, state_every_s=120.0,
    )
    import torch

    torch.set_num_threads(threads)  # reason: on a shared 2-core machine 2 threads ran 3x slower than 1
    print(f"[{name}] preparing {len(train_set)} training and {len(val_set)} validation slices", flush=True)
    last_print = [0.0]

    def progress(p) -> None:
        if p.val_dice is not None or time.perf_counter() - last_print[0] > 60:
            last_print[0] = time.perf_counter()
            print(f"[{name}] epoch {p.epoch} step {p.step} {p.elapsed_s:.0f}s loss {p.loss:.3f} lr {p.lr:.2e} "
                  f"val {p.val_dice if p.val_dice is None else round(p.val_dice, 4)} best {p.best_dice}", flush=True)

    result = train_on_slices(card, train_set, val_set, work / name, config, progress=progress, device="cpu",
                             resume=resume)
    card = result.card
    card.training["hardware"] = describe_hardware(torch.device("cpu")) + (
        " (a 2-core machine shared with other jobs; wall time includes waiting for the CPU)"
    )
    evaluation = evaluate_slices(result.model, card, val_set)
    card.metrics["validation_native_resolution"] = {**evaluation.to_json_dict(), "per_case": _cases(evaluation)}
    for key, slices in extra_eval.items():
        card.metrics[key] = evaluate_slices(result.model, card, slices).to_json_dict()
    card.metrics["note"] = (
        "validation: checkpoint chosen by this split's Dice at the network resolution (validation.mean_dice); "
        "validation_native_resolution: the same split scored at the images' own resolution (3-D per case for CT, "
        "per image for RGB), HD95 in mm (pixels for photographs)"
    )
    card.extra["anchors"] = "anchors.npz"
    out = REPO / "models" / name
    save_checkpoint(result.model, card, out, half=True)
    save_anchors(out, anchors)
    summary = {
        "model": name, "train_wall_s": round(result.wall_s, 1), "epochs": result.epochs_run, "steps": result.steps,
        "best_epoch": result.best_epoch, "val_dice_net_res": result.best_dice,
        "val_dice_native": evaluation.mean_dice, f"val_hd95_{evaluation.hd95_unit}": evaluation.mean_hd95,
        "size_bytes": sum(p.stat().st_size for p in out.iterdir()),
    }
    print(summary, flush=True)
    return summary


def _cases(evaluation) -> list[dict]:
    return [
        {"case": c["case"], "n_slices": c["n_slices"],
         "dice": {str(k): round(v["dice"], 4) for k, v in c["metrics"].items()}}
        for c in evaluation.cases
    ][:60]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=(*MODELS, "all"))
    parser.add_argument("--minutes", type=float, default=12.0, help="training wall-clock budget per model")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (batch 8) per model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for intermediate checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue from WORK/<model>/train_state.pt (the budgets count the time already spent)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="braunet-bundled-"))
    for name in MODELS if args.model == "all" else (args.model,):
        build(name, args.minutes, work, args.seed, args.max_steps, args.threads, args.resume)


if __name__ == "__main__":
    main()
