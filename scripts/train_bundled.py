"""Retrain the bundled models in ``models/`` from all the shared real data.

    python scripts/train_bundled.py ct-abdomen-8 --minutes 60 --device cuda
    python scripts/train_bundled.py polyp --minutes 60 --device cuda
    python scripts/train_bundled.py skin-lesion --minutes 60 --device cuda
    python scripts/train_bundled.py all --minutes 60          # one after the other
    python scripts/train_bundled.py polyp --minutes 60 --resume   # continue an interrupted run

Data: ``../shared/data`` next to the repository, or ``BRAUNET_DATA_DIR`` (see its README for sources,
licences and caveats). The held-out cases of the README are not in that folder and are never asked
for. Each model trains for a wall-clock budget (``--minutes``, counted across resumes) or a step
budget; the state is saved every ``--state-minutes`` (``WORK/<model>/train_state.pt``) and
``--resume`` continues where it stopped. The checkpoint with the best validation Dice is kept (float16
weights), scored again at the images' own resolution per validation source, and written to
``--out/<model>/`` (default ``models/``) with a card that records the data, licences, the split, the
subjects / sequences / images seen, the exact command, steps, steps/s, wall time, load average and
hardware, and a small anchor set for fine-tuning replay.

Validation is by subject, video sequence or image, never by frame or slice:

* ct-abdomen-8 (recipe: the official HU window, **resampled to 1.75 mm pixels**, centre crop/pad to
  224): training on TotalSegmentator case01 (all 8 organs; slices 0-96, empty pelvis slices 1 in 4),
  dcmqi case03 (liver only), MSD spleen_8 (HU volume, ``_LRfixed`` header, spleen only), CURVAS 8-bit
  slices (liver, kidneys, pancreas; all 3 annotators) and MSD 8-bit spleen slices; each set trains only
  the classes it annotates. Validation: CURVAS subjects ``sorted[1::4]`` (10002, 10006, 10013), MSD
  cases ``sorted[::3]`` other than spleen_8 (spleen_14, spleen_28), and case01's top slab (slices
  100-111, 3-slice gap: the only labels for stomach, aorta and gallbladder are that one subject).
* polyp: all 416 shared CVC-ClinicDB frames (20 sequences) + Kvasir-SEG (3 originals + 795 of the
  352 px set). Validation: CVC sequences 4, 13, 20, 28 (all their frames) and the 100 images of the
  352 px set's ``validation`` split. CVC sequences 2, 8, 16, 23, 29 stay out of training:
  bench/bench_finetune.py fine-tunes on them; they are scored as a further held-out figure.
* skin-lesion: ISIC 2016 crops (253) + PH2 full images (160) + HAM10000 (3). Validation: every 5th
  ISIC id and every 5th PH2 id in sorted order (crops and full images are reported apart).

Why 1.75 mm for CT (measured on the shared CT, organ boxes about the image centre): the labelled
organs of case01, case03, spleen_8 and CURVAS (at its assumed 0.8 mm) reach -132..+96 mm (rows) and
-144..+168 mm (columns) from the slice centre, so the network's field of view must span about
2 x 170 mm plus a margin: 224 x 1.75 = 392 mm (+-196 mm). It is also the Synapse pixel size the
official model sees (512 px at about 0.76 mm zoomed to 224 px = 1.74 mm), and it keeps the kidney
(55-66 mm across) at 31-38 network pixels. A 3 mm scan (case01, 366 mm) is padded, a 0.8 mm one (402-415
mm) loses 5-12 mm of air at each side, a 500 mm field of view with the arms loses the arms.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from braunet.errors import CheckpointError  # noqa: E402
from braunet.infer.preprocess import TTA_FLIPS, official_preprocessing  # noqa: E402
from braunet.model import ModelCard, get_preset, load_checkpoint, save_checkpoint  # noqa: E402
from braunet.model.checkpoint import write_card  # noqa: E402
from braunet.train.anchors import save_anchors  # noqa: E402
from braunet.train.evaluate import evaluate_slices  # noqa: E402
from braunet.train.loop import describe_hardware  # noqa: E402
from braunet.train.pairs import collect_pairs  # noqa: E402
from braunet.train.run import train_on_slices  # noqa: E402
from braunet.train.slices import (  # noqa: E402
    CURVAS_SLICES,
    MSD_SPLEEN_SLICES,
    SliceSet,
    load_image_pair,
    load_volume_pair,
    load_windowed_pairs,
)
from braunet.train.trainer import TrainConfig  # noqa: E402

MODELS = ("ct-abdomen-8", "polyp", "skin-lesion")
CT_SPACING_MM = 1.75  # see the module docstring
CT_RECIPE = {**official_preprocessing("ct"), "resize": "bilinear", "spacing_mm": CT_SPACING_MM}

CVC_VAL_SEQUENCES = (4, 13, 20, 28)
CVC_BENCH_SEQUENCES = (2, 8, 16, 23, 29)  # bench/bench_finetune.py fine-tunes and scores on these
FEW = 5  # fewer training subjects / sequences than this: the card and `braunet models` say so

LICENCES = {
    "totalseg": "Apache-2.0 (wasserth/TotalSegmentator repository; labels are TotalSegmentator v1 predictions, "
    "a silver standard)",
    "dcmqi": "BSD-3-Clause (QIICR/dcmqi repository; test segmentation of unknown accuracy)",
    "msd": "CC BY-SA 4.0 (Medical Segmentation Decathlon, Task09 spleen; Antonelli et al. 2022)",
    "curvas": "CC BY-NC 4.0, non-commercial (CURVAS challenge, MICCAI 2024; University Hospital Erlangen)",
    "cvc": "CVC-ClinicDB: research and educational use only, commercial use forbidden (Bernal et al. 2015)",
    "kvasir": "Kvasir-SEG: research and educational use; commercial use needs prior written permission from "
    "Simula (Jha et al. 2020)",
    "isic": "ISIC 2016 challenge data: CC-0 (Gutman et al. 2016)",
    "ph2": "PH2 (Mendonca et al. 2013): research and benchmarking use only",
    "ham": "HAM10000: non-commercial (CC BY-NC; Tschandl et al. 2018)",
}


def data_dir() -> Path:
    env = os.environ.get("BRAUNET_DATA_DIR")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Bundle:
    """One model's data: the training slices, the validation slices per source, anchors, card notes."""

    train: SliceSet
    val: dict[str, SliceSet]
    anchors: SliceSet
    info: dict[str, Any]
    extra_eval: dict[str, SliceSet] = field(default_factory=dict)  # held out, scored, never trained on
    units: dict[str, str] = field(default_factory=dict)  # group prefix -> what a group is ("CT subject")


def _limited(slices: SliceSet, limit: int | None) -> SliceSet:
    """The first ``limit`` slices (a smoke run)."""
    if limit is None or len(slices) <= limit:
        return slices
    return slices.subset(range(limit))


def _concat(parts: list[SliceSet]) -> SliceSet:
    return SliceSet(**{f.name: [v for p in parts for v in getattr(p, f.name)] for f in dataclasses.fields(SliceSet)})


# ------------------------------------------------------------------------------------------------
# Datasets and splits


def ct_data(root: Path, limit: int | None = None) -> Bundle:
    view = CT_RECIPE["view"]
    image, label = root / "totalseg_ct" / "case01_ct.nii.gz", root / "totalseg_ct" / "case01_label_synapse8.nii.gz"
    case01_train = [k for k in range(97) if k >= 62 or k % 4 == 0]
    case01 = load_volume_pair(image, label, num_classes=9, slices=case01_train, group="case01", view=view)
    case01_val = load_volume_pair(image, label, num_classes=9, slices=list(range(100, 112)), group="case01-top",
                                  view=view)  # fmt: skip
    liver = load_volume_pair(root / "dcmqi_ct" / "case03_ct.nii.gz", root / "dcmqi_ct" / "case03_label_synapse8.nii.gz",
                             num_classes=9, known_classes=(5,), group="dcmqi-case03", view=view)  # fmt: skip
    msd = root / "msd_spleen_ct"
    spleen_slices = [k for k in range(32) if 6 <= k <= 29 or k % 3 == 0]
    spleen = load_volume_pair(msd / "spleen_8_ct_LRfixed.nii.gz", msd / "spleen_8_label_synapse8_LRfixed.nii.gz",
                              num_classes=9, slices=spleen_slices, known_classes=(7,), group="msd-spleen_8",
                              view=view)  # fmt: skip

    folder = root / "curvas_ct_slices"
    curvas_pairs = [pair for n in (1, 2, 3) for pair in collect_pairs(
        [folder / f"annotator{n}" / "images"], [folder / f"annotator{n}" / "labels_synapse8"])]  # fmt: skip
    curvas = load_windowed_pairs(curvas_pairs, CURVAS_SLICES, view=view)
    curvas_subjects = sorted(set(curvas.groups))
    curvas_val = set(curvas_subjects[1::4])
    folder = root / "msd_spleen_slices_jpg"
    msd_slices = load_windowed_pairs(collect_pairs([folder / "images"], [folder / "masks_synapse8"]), MSD_SPLEEN_SLICES,
                                     view=view)  # fmt: skip
    msd_cases = sorted(set(msd_slices.groups) - {"msd-spleen_8"})  # spleen_8 is also the HU volume: train
    msd_val = set(msd_cases[::3])

    def pick(slices: SliceSet, held: set[str], into_val: bool) -> SliceSet:
        return slices.subset([i for i, g in enumerate(slices.groups) if (g in held) == into_val])

    train = _concat([_limited(s, limit) for s in (case01, liver, spleen, pick(curvas, curvas_val, False),
                                                   pick(msd_slices, msd_val, False))])  # fmt: skip
    val = {
        "curvas_heldout_subjects": _limited(pick(curvas, curvas_val, True), limit),
        "msd_heldout_cases": _limited(pick(msd_slices, msd_val, True), limit),
        "case01_top_slab": _limited(case01_val, limit),
    }
    anchor_rows = [i for i, n in enumerate(case01.names) if any(n.endswith(f"[z={k}]") for k in (66, 72, 78, 84, 90, 96))]
    anchors = case01.subset(anchor_rows or [0])
    info = {
        "data": [
            {"dataset": "totalseg_ct case01 (case01_ct.nii.gz + case01_label_synapse8.nii.gz), 3 mm",
             "use": f"train: {len(case01_train)} axial slices (0-96; empty slices 0-61 subsampled 1 in 4); "
                    "validation: slices 100-111; slices 97-99 unused (gap)", "licence": LICENCES["totalseg"]},
            {"dataset": "dcmqi_ct case03, 0.81 mm", "use": "train: 3 slices, liver only (partial labels)",
             "licence": LICENCES["dcmqi"]},
            {"dataset": "msd_spleen_ct spleen_8 (_LRfixed files: the MSD header is mirrored), 0.785 mm",
             "use": f"train: {len(spleen_slices)} slices, spleen only (partial labels)", "licence": LICENCES["msd"]},
            {"dataset": "curvas_ct_slices (3 annotators; 8-bit = HU clipped to [0, 255], 0.8 mm assumed; kidneys "
                        "split by side as in labels_synapse8)",
             "use": f"train: subjects {sorted(set(curvas_subjects) - curvas_val)}; validation: {sorted(curvas_val)}; "
                    "liver, kidneys and pancreas only (partial labels)", "licence": LICENCES["curvas"]},
            {"dataset": "msd_spleen_slices_jpg (mirrored images/ and masks_synapse8/; 8-bit = HU clipped to "
                        "[0, 255], 0.8 mm assumed)",
             "use": f"train: cases {sorted(set(msd_slices.groups) - msd_val)}; validation: {sorted(msd_val)}; "
                    "spleen only (partial labels)", "licence": LICENCES["msd"]},
        ],
        "split": "by subject: CURVAS subjects sorted[1::4] and MSD cases sorted[::3] (without spleen_8) held out; "
                 "case01 (the one subject with all 8 organs) by slab: top 12 slices, 3-slice gap",
        "licence_summary": "NON-COMMERCIAL: trained partly on CURVAS (CC BY-NC 4.0); MSD data is CC BY-SA 4.0",
        "recipe_note": "slices resampled to 1.75 mm pixels and centre-cropped/padded to 224 (spacing_mm); "
                       "why 1.75 mm: scripts/train_bundled.py",
    }
    units = {"case01": "CT subject", "dcmqi": "CT subject", "msd": "CT subject", "curvas": "CT subject"}
    return Bundle(train, val, anchors, info, units=units)


def _cvc(root: Path, sequences: set[int]) -> SliceSet:
    """All shared frames of these CVC-ClinicDB sequences (the 60 original TIFFs and the 356 PNGs)."""
    parts = []
    for folder, image_suffix in (("cvc_clinicdb", ".tif"), ("cvc_clinicdb_more", ".png")):
        mask_folder = "masks_binary" if folder == "cvc_clinicdb" else "masks"
        for row in _rows(root / folder / "cases.csv"):
            if int(row["sequence"]) in sequences:
                frame = row["frame"]
                parts.append(load_image_pair(root / folder / "images" / f"{frame}{image_suffix}",
                                             root / folder / mask_folder / f"{frame}.png", num_classes=1,
                                             group=f"cvc-seq{row['sequence']}"))  # fmt: skip
    return _concat(parts)


def polyp_data(root: Path, limit: int | None = None) -> Bundle:
    sequences = sorted({int(r["sequence"]) for r in _rows(root / "cvc_clinicdb" / "cases.csv")})
    train_seq = [s for s in sequences if s not in CVC_VAL_SEQUENCES + CVC_BENCH_SEQUENCES]
    cvc_train = _limited(_cvc(root, set(train_seq)), limit)
    kvasir = root / "kvasir_seg"
    originals = _concat([load_image_pair(kvasir / "images" / f"{r['case_id']}.jpg", kvasir / "masks" / f"{r['case_id']}.png",
                                         num_classes=1, group=f"kvasir-{r['case_id']}")
                         for r in _rows(kvasir / "cases.csv")])  # fmt: skip
    k352 = root / "kvasir_seg_effisegnet352"
    rows = _rows(k352 / "cases.csv")

    def kvasir352(split: str) -> SliceSet:
        chosen = [r["case"] for r in rows if r["effisegnet_split"] == split][: limit or None]
        return _concat([load_image_pair(k352 / "images" / f"{c}.jpg", k352 / "masks" / f"{c}.png", num_classes=1,
                                        group=f"kvasir352-{c}") for c in chosen])  # fmt: skip

    kvasir_train = kvasir352("train")
    train = _concat([cvc_train, originals, kvasir_train])
    val = {"cvc_heldout_sequences": _limited(_cvc(root, set(CVC_VAL_SEQUENCES)), limit),
           "kvasir_heldout_images": kvasir352("validation")}  # fmt: skip
    anchors = _small_rgb_anchors(cvc_train.subset(sorted({0, len(cvc_train) // 3, 2 * len(cvc_train) // 3}))
                                 + kvasir_train.subset([0]))  # fmt: skip
    info = {
        "data": [
            {"dataset": "CVC-ClinicDB (all 416 shared frames of the 20 shared sequences; masks > 127)",
             "use": f"train: sequences {train_seq}; validation: sequences {list(CVC_VAL_SEQUENCES)} (all frames); "
                    f"sequences {list(CVC_BENCH_SEQUENCES)} held out for the fine-tuning benchmark",
             "licence": LICENCES["cvc"]},
            {"dataset": "Kvasir-SEG (3 original images + the 352 x 352 set of effisegnet: 795 train, 100 validation)",
             "use": "train: 3 + 795; validation: the 352 px set's validation split (100 images)",
             "licence": LICENCES["kvasir"]},
        ],
        "split": f"by CVC video sequence (validation {list(CVC_VAL_SEQUENCES)}, fine-tuning benchmark "
                 f"{list(CVC_BENCH_SEQUENCES)}) and by Kvasir image (the source repository's validation split)",
        "licence_summary": "NON-COMMERCIAL: trained on CVC-ClinicDB (commercial use forbidden) and Kvasir-SEG "
                           "(research/education; commercial use needs permission); use for research only",
    }
    bench = {"heldout_benchmark_sequences": _limited(_cvc(root, set(CVC_BENCH_SEQUENCES)), limit)}
    units = {"cvc": "video sequence", "kvasir": "image", "kvasir352": "image"}
    return Bundle(train, val, anchors, info, extra_eval=bench, units=units)


def skin_data(root: Path, limit: int | None = None) -> Bundle:
    isic = root / "isic2016_crops"
    ids = sorted(r["case_id"] for r in _rows(isic / "cases.csv"))[: limit and 5 * limit]
    ph2 = root / "ph2"
    ph2_ids = sorted(r["id"] for r in _rows(ph2 / "cases.csv"))[: limit and 5 * limit]
    isic_val, ph2_val = set(ids[::5]), set(ph2_ids[::5])

    def load(folder: Path, case: str, suffix: str, prefix: str) -> SliceSet:
        return load_image_pair(folder / "images" / f"{case}{suffix}", folder / "masks" / f"{case}.png", num_classes=1,
                               group=f"{prefix}{case}")  # fmt: skip

    ham = root / "ham10000"
    train = _concat([load(isic, c, ".jpg", "isic-") for c in ids if c not in isic_val]
                    + [load(ph2, c, ".jpg", "ph2-") for c in ph2_ids if c not in ph2_val]
                    + [load(ham, r["case_id"], ".jpg", "ham-") for r in _rows(ham / "cases.csv")])  # fmt: skip
    val = {"isic_heldout_crops": _concat([load(isic, c, ".jpg", "isic-") for c in sorted(isic_val)]),
           "ph2_heldout_full_images": _concat([load(ph2, c, ".jpg", "ph2-") for c in sorted(ph2_val)])}  # fmt: skip
    isic_count = len(ids) - len(isic_val)
    anchors = _small_rgb_anchors(train.subset(sorted({0, isic_count // 2, isic_count, len(train) - 1})))
    info = {
        "data": [
            {"dataset": "ISIC 2016 Part 1 test images, 512 x 512 centre crops (253 shared; masks > 127)",
             "use": f"train: {isic_count} crops; validation: {len(isic_val)} (every 5th id in sorted order)",
             "licence": LICENCES["isic"]},
            {"dataset": "PH2 full dermoscopy images (160 shared, long side 512 px)",
             "use": f"train: {len(ph2_ids) - len(ph2_val)}; validation: {len(ph2_val)} (every 5th id in sorted order)",
             "licence": LICENCES["ph2"]},
            {"dataset": "HAM10000 (3 images with lesion masks)", "use": "train", "licence": LICENCES["ham"]},
        ],
        "split": "by image: every 5th ISIC id and every 5th PH2 id in sorted order",
        "validation_ids": sorted(isic_val | ph2_val),
        "licence_summary": "NON-COMMERCIAL: trained partly on HAM10000 (non-commercial) and PH2 (research only)",
    }
    return Bundle(train, val, anchors, info, units={"isic": "image", "ph2": "image", "ham": "image"})


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


def seen_summary(slices: SliceSet, units: dict[str, str]) -> list[dict[str, Any]]:
    """What a set holds, per source: ``[{"source", "unit", "count" (distinct groups), "slices"}]``.

    The group's prefix before the first "-" names the source (``cvc-seq4``: cvc); ``units`` says
    what one group is there (a CT subject, a video sequence, an image)."""
    by_source: dict[str, dict[str, Any]] = {}
    for group in slices.groups:
        source = group.split("-", 1)[0]
        entry = by_source.setdefault(source, {"source": source, "unit": units.get(source, "case"), "groups": set(),
                                              "slices": 0})  # fmt: skip
        entry["groups"].add(group)
        entry["slices"] += 1
    return [{"source": e["source"], "unit": e["unit"], "count": len(e["groups"]), "slices": e["slices"]}
            for e in by_source.values()]  # fmt: skip


def subjects_per_class(slices: SliceSet, class_names: list[str]) -> dict[str, int]:
    """Per foreground class, how many distinct groups (subjects, sequences, images) annotate it.

    A partially labelled set (``SliceSet.known``) counts only for the classes it annotates, so a
    class learnt from one subject says so even when the model saw many subjects in all.
    """
    ids = range(1, len(class_names)) if len(class_names) > 2 else [1]
    return {class_names[c]: len({g for g, known in zip(slices.groups, slices.known, strict=True)
                                 if known is None or c in known})
            for c in ids}  # fmt: skip


# ------------------------------------------------------------------------------------------------


BUILDERS: dict[str, Callable[[Path, int | None], Bundle]] = {
    "ct-abdomen-8": ct_data, "polyp": polyp_data, "skin-lesion": skin_data,
}


def score_held_out(model: Any, card: ModelCard, bundle: Bundle) -> None:
    """Write each held-out source's Dice (and HD95) into ``card.metrics``, as the model predicts with this card.

    The one place the cards' held-out figures come from: after training, and after a change to how
    the model predicts (``--rescore``, e.g. test-time flips), so a card always reports what its own
    recipe gives.
    """
    scored = {**{f"validation_{k}": v for k, v in bundle.val.items()}, **bundle.extra_eval}
    for key, slices in scored.items():
        if len(slices):
            card.metrics[key] = evaluate_slices(model, card, slices).to_json_dict()
    flips = f" with the test-time flips {', '.join(card.recipe.tta)}" if card.recipe.tta else ""
    card.metrics["note"] = (
        "validation: the checkpoint chosen by the pooled validation Dice at the network resolution (plain pass), per "
        "class over the slices that annotate it; validation_<source>: each held-out source scored at the images' own "
        f"resolution (3-D per case for CT volumes, per slice or image otherwise){flips}, HD95 in mm (pixels for "
        "photographs)"
    )


def rescore(name: str, folder: Path, tta: Sequence[str] | None = None, limit: int | None = None,
            command: str = "") -> dict[str, Any]:  # fmt: skip
    """Re-score the model in ``folder`` on its held-out sources and rewrite its card (weights untouched).

    ``tta``: the test-time flips its card records from now on (None keeps the card's); ``limit``:
    the first few slices of every source (a smoke run); ``command``: what ran, recorded in
    ``training["rescored"]`` so the card says how its figures came about.
    """
    model, card = load_checkpoint(folder)
    if tta is not None:
        preprocessing = {k: v for k, v in card.preprocessing.items() if k != "tta"}
        card = dataclasses.replace(card, preprocessing={**preprocessing, "tta": list(tta)} if tta else preprocessing)
        card.recipe  # noqa: B018 - parsed now, so a recipe that refuses the flips (CT) stops before any scoring
    score_held_out(model, card, BUILDERS[name](data_dir(), limit))
    card.training["rescored"] = {"command": command, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    write_card(card, folder)
    summary = {"model": name, "folder": str(folder), "tta": list(card.recipe.tta),
               **{k: v.get("mean_dice") for k, v in card.metrics.items() if isinstance(v, dict) and "mean_dice" in v}}
    print(summary, flush=True)
    return summary


def build(
    name: str, minutes: float, work: Path, seed: int, max_steps: int | None = None, threads: int = 0,
    resume: bool = False, *, out: Path | None = None, device: str = "auto", preset: str | None = None,
    batch_size: int = 8, augment: str = "site", augment_strength: float = 1.0, state_minutes: float = 3.0,
    limit: int | None = None, val_every: int | None = None, tta: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one bundled model and write it to ``out/<name>`` (default ``models/``); see the module docstring.

    ``augment`` is :class:`braunet.train.trainer.TrainConfig`'s: "site" (the site-variation policy of
    :func:`braunet.train.augment.site_augment` at ``augment_strength``), "auto", "ct", "rgb" or "none".
    ``limit`` keeps the first few slices of every source (a smoke run). ``tta``: test-time flips the
    card records (its held-out figures are scored with them).
    """
    import torch

    if name not in BUILDERS:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    root = data_dir()
    load_start = time.perf_counter()
    bundle = BUILDERS[name](root, limit)
    if name == "ct-abdomen-8":
        preset = preset or "cpu-ct"
        preprocessing, class_names, colors = dict(CT_RECIPE), list(SYNAPSE8_CLASSES), list(SYNAPSE8_COLORS)
        topic = "8 abdominal organs (Synapse order) in axial CT slices"
    else:
        preset = preset or "cpu-rgb"
        preprocessing = official_preprocessing("rgb")
        class_names, colors = ((list(POLYP_CLASSES), list(POLYP_COLORS)) if name == "polyp"
                               else (list(LESION_CLASSES), list(LESION_COLORS)))  # fmt: skip
        topic = "polyps in colonoscopy frames" if name == "polyp" else "skin lesions in dermoscopy images"
    if tta:  # reason: only how it predicts; training and its validation run the plain pass
        preprocessing = {**preprocessing, "tta": list(tta)}
    architecture = get_preset(preset, num_classes=len(class_names) if name == "ct-abdomen-8" else 1)
    seen = seen_summary(bundle.train, bundle.units)
    val_all = _concat(list(bundle.val.values()))
    seen_text = ", ".join(f"{s['count']} {s['source']} {s['unit']}{'s' * (s['count'] != 1)}" for s in seen)
    description = f"{topic}; BRAU-Net++ {preset} preset trained from scratch on {seen_text}."

    flags = [name, "--minutes", f"{minutes:g}", "--seed", str(seed), "--device", device, "--augment", augment]
    for flag, value, default in (("--max-steps", max_steps, None), ("--threads", threads, 0),
                                 ("--preset", preset, None), ("--batch-size", batch_size, 8),
                                 ("--augment-strength", augment_strength, 1.0), ("--limit", limit, None),
                                 ("--val-every", val_every, None)):  # fmt: skip
        if value is not None and value != default:
            flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if tta:
        flags += ["--tta", *tta]
    if resume:
        flags.append("--resume")
    command = "python scripts/train_bundled.py " + shlex.join(flags)
    card = ModelCard(
        name=name, config=architecture, class_names=class_names, class_colors=colors, preprocessing=preprocessing,
        description=description, version=1,
        training={**bundle.info, "command": command, "preset": preset, "initialisation": "random (no pre-training)",
                  "seen": seen, "validation_seen": seen_summary(val_all, bundle.units),
                  "groups_per_class": subjects_per_class(bundle.train, class_names)},
    )
    config = TrainConfig(
        epochs=100000, max_time_s=minutes * 60, max_steps=max_steps, batch_size=batch_size, lr=1e-3,
        weight_decay=1e-4, warmup_steps=50, augment=augment, augment_strength=augment_strength,
        val_every=val_every or (1 if len(bundle.train) > 100 else 4), seed=seed, half=True,
        state_every_s=state_minutes * 60,
    )
    if threads:
        torch.set_num_threads(threads)
    print(f"[{name}] {len(bundle.train)} training slices ({seen_text}), {len(val_all)} validation slices, "
          f"loaded in {time.perf_counter() - load_start:.0f} s", flush=True)  # fmt: skip
    loads = [os.getloadavg()[0]]
    last_print = [time.perf_counter()]

    def progress(p: Any) -> None:
        if p.val_dice is not None or time.perf_counter() - last_print[0] > 60:
            last_print[0] = time.perf_counter()
            loads.append(os.getloadavg()[0])
            print(f"[{name}] epoch {p.epoch} step {p.step} {p.elapsed_s:.0f}s loss {p.loss:.3f} lr {p.lr:.2e} "
                  f"val {p.val_dice if p.val_dice is None else round(p.val_dice, 4)} best {p.best_dice} "
                  f"load {loads[-1]:.2f}", flush=True)  # fmt: skip

    result = train_on_slices(card, bundle.train, val_all, work / name, config, progress=progress, device=device,
                             resume=resume)  # fmt: skip
    loads.append(os.getloadavg()[0])
    card = result.card
    card.training["hardware"] = describe_hardware(next(result.model.parameters()).device)
    card.training["steps_per_s"] = round(result.steps / result.wall_s, 3) if result.wall_s else None
    card.training["load_average_1min"] = {"start": round(loads[0], 2), "mean": round(float(np.mean(loads)), 2),
                                          "max": round(max(loads), 2), "samples": len(loads)}  # fmt: skip
    card.training["cpu_count"] = os.cpu_count()
    result.model.cpu()
    score_held_out(result.model, card, bundle)
    card.extra["anchors"] = "anchors.npz"
    folder = (out or REPO / "models") / name
    save_checkpoint(result.model, card, folder, half=True)
    save_anchors(folder, bundle.anchors)
    summary = {
        "model": name, "out": str(folder), "train_wall_s": round(result.wall_s, 1), "steps": result.steps,
        "steps_per_s": card.training["steps_per_s"], "epochs": result.epochs_run, "best_epoch": result.best_epoch,
        "val_dice_net_res": result.best_dice, "seen": seen, "load_average": card.training["load_average_1min"],
        **{k: v.get("mean_dice") for k, v in card.metrics.items() if isinstance(v, dict) and "mean_dice" in v},
    }
    print(summary, flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=(*MODELS, "all"))
    parser.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget per model")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps per model")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N, mps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--preset", default=None, help="architecture preset (default cpu-ct / cpu-rgb)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--augment", default="site", choices=("site", "auto", "ct", "rgb", "none"))
    parser.add_argument("--augment-strength", type=float, default=1.0)
    parser.add_argument("--val-every", type=int, default=None, help="validate every N epochs (default 1, or 4 "
                        "for fewer than 100 training slices)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "braunet-bundled",
                        help="checkpoints and train_state.pt (default: TMPDIR/braunet-bundled)")  # fmt: skip
    parser.add_argument("--state-minutes", type=float, default=3.0, help="save the resume state this often")
    parser.add_argument("--resume", action="store_true",
                        help="continue from WORK/<model>/train_state.pt (the budgets count the time already spent)")
    parser.add_argument("--out", type=Path, default=None, help="where the model folders go (default: models/)")
    parser.add_argument("--limit", type=int, default=None, help="smoke run: the first N slices of each source")
    parser.add_argument("--tta", nargs="*", default=None, choices=sorted(TTA_FLIPS), metavar="FLIP",
                        help="test-time flips the card records (hflip, vflip; bench/bench_tta.py measures them; "
                             "RGB models only); with --rescore and no FLIP: none. Give it after the model name")
    parser.add_argument("--rescore", action="store_true",
                        help="no training: re-score the model in OUT/<model> (default models/) on its held-out "
                             "sources and rewrite its card")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rescore and args.limit and args.out is None:
        parser.error("--rescore --limit would write smoke figures into models/: give --out")
    if args.rescore and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in MODELS if args.model == "all" else (args.model,):
        try:
            if args.rescore:
                rescore(name, (args.out or REPO / "models") / name, args.tta, args.limit,
                        command="python scripts/train_bundled.py " + shlex.join(argv if argv is not None else sys.argv[1:]))
                continue
            build(name, args.minutes, args.work, args.seed, args.max_steps, args.threads, args.resume, out=args.out,
                  device=args.device, preset=args.preset, batch_size=args.batch_size, augment=args.augment,
                  augment_strength=args.augment_strength, state_minutes=args.state_minutes, limit=args.limit,
                  val_every=args.val_every, tta=args.tta or ())  # fmt: skip
        except CheckpointError as error:  # e.g. --tta for the CT model: one line, no traceback
            raise SystemExit(f"{name}: {error}") from None


if __name__ == "__main__":
    main()
