#!/usr/bin/env python
"""Effect of ``braunet.cleanup.clean_labels`` on Dice and HD95: one CT, the bundled ``ct-abdomen-8``.

    python scripts/measure_cleanup.py [--data-dir ../shared/data]

Segments ``totalseg_ct/case01_ct.nii.gz`` (122 x 101 x 112, 3 mm) slice by slice, then scores the
raw labels and each clean-up variant against ``case01_label_synapse8.nii.gz`` (TotalSegmentator
labels, a silver standard) with :func:`braunet.train.metrics.per_class_metrics`. About 10 s on a CPU.

Caveat: ``ct-abdomen-8`` was trained on slices 0-96 of this very volume (its card says so), so the
figures show what the clean-up does to slice-wise labels, not accuracy on new patients. The one
other labelled volume, ``msd_spleen_ct/spleen_8``, is no help: the bundled model finds no spleen
there (Dice 0 with or without clean-up).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from braunet.cleanup import clean_labels
from braunet.infer import predict
from braunet.io import read_image
from braunet.train.metrics import per_class_metrics, summarize
from braunet.zoo import SYNAPSE8_CLASSES, load_model

VARIANTS = {
    "raw": None,
    "default (min_fraction 0.1, fill holes)": {},
    "largest component only, fill holes": {"min_fraction": 1.0},
    "fill holes only": {"min_fraction": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BRAUNET_DATA_DIR", "../shared/data")))
    data = parser.parse_args().data_dir
    model, card = load_model("ct-abdomen-8", "cpu")
    cases = [("totalseg_ct/case01_ct.nii.gz", "totalseg_ct/case01_label_synapse8.nii.gz", range(1, 9))]
    for image_file, label_file, classes in cases:
        ct = read_image(data / image_file)
        reference = read_image(data / label_file).array
        raw = predict(model, card, ct).labels
        print(f"{image_file} (Dice / HD95 mm per class)")
        for name, options in VARIANTS.items():
            labels = raw if options is None else clean_labels(raw, **options)
            scores = per_class_metrics(labels, reference, classes, ct.spacing)
            total = summarize(scores)
            print(f"  {name}: mean Dice {total['mean_dice']:.4f}, mean HD95 {total['mean_hd95_mm']:.2f} mm")
            print("    " + ", ".join(f"{SYNAPSE8_CLASSES[c]} {s['dice']:.3f}/{s['hd95_mm']:.1f}" for c, s in scores.items()))


if __name__ == "__main__":
    main()
