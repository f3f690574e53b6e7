#!/usr/bin/env python
"""Measure bf16 autocast against float32 for a bundled model on its validation data; record it with --write.

    python scripts/validate_bf16.py ct-abdomen-8|polyp [--data-dir ../shared/data] [--write]

Predicts each case twice through the engine (``precision="fp32"`` and ``"bf16"``, on the CPU) and
prints the label agreement and the per-class Dice change (:func:`braunet.train.bf16.measure_bf16`).
``--precision auto`` uses bf16 for a model only once its card holds a passing record: agreement
>= 0.995 and every |Dice change| <= 0.005; ``--write`` puts the record into the model folder's card.
On a CPU without native bf16 the bf16 pass is emulated (slow, and the figures still hold). Under 2
minutes on 2 CPU threads.

Cases: ct-abdomen-8 scores case01's validation slab (slices 100-111, its card's split) and case03
(3 slices at 512 x 512, synapse8 labels); polyp scores three frames of
each of its four CVC-ClinicDB validation sequences (4, 13, 20, 28).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from braunet.train.bf16 import measure_bf16, write_bf16_record
from braunet.zoo import resolve_model

CVC_VALIDATION_FRAMES = (68, 73, 78, 253, 265, 277, 409, 418, 428, 572, 581, 591)  # sequences 4, 13, 20, 28


def cases(model: str, data: Path) -> tuple[list[tuple], str]:
    """The (image, label[, slices]) pairs for ``model`` and the split's description."""
    if model == "ct-abdomen-8":
        ct = data / "totalseg_ct"
        return [(ct / "case01_ct.nii.gz", ct / "case01_label_synapse8.nii.gz", range(100, 112)),
                (data / "dcmqi_ct" / "case03_ct.nii.gz", data / "dcmqi_ct" / "case03_label_synapse8.nii.gz")], (
            "case01 slices 100-111 (the card's validation slab) + case03 (3 slices)")  # fmt: skip
    if model == "polyp":
        cvc = data / "cvc_clinicdb"
        frames = [(cvc / "images" / f"{f}.tif", cvc / "masks" / f"{f}.tif") for f in CVC_VALIDATION_FRAMES]
        return frames, "CVC-ClinicDB validation sequences 4, 13, 20, 28: 3 frames each"  # type: ignore[return-value]
    raise SystemExit(f"no validation cases defined for {model!r}; choose ct-abdomen-8 or polyp")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="bundled model name")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BRAUNET_DATA_DIR", "../shared/data")))
    parser.add_argument("--write", action="store_true", help="record the result in the model folder's card.json")
    args = parser.parse_args()
    source = resolve_model(args.model)
    pairs, split = cases(source.name, args.data_dir)
    model, card = source.load("cpu")
    record = measure_bf16(model, card, pairs, split=split)
    print(json.dumps(record, indent=2))
    if args.write:
        print(f"written to {write_bf16_record(source.folder, record)}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
