"""How far the official Synapse protocol and our millimetre metrics disagree, on the shared real CT.

    python bench/bench_official_vs_mm.py                       # the bundled ct-abdomen-8 model
    python bench/bench_official_vs_mm.py --model runs/synapse  # any CT model folder

One prediction per volume (the inference engine, as ``braunet predict``), scored twice:
``braunet.repro.official_eval`` (per-case 3-D Dice and HD95 in voxels with the official empty-mask
shortcuts) and ``braunet.train.metrics`` (HD95 in mm, undefined HD95 skipped). Cases: the whole
``totalseg_ct/case01`` volume (112 slices of 3 mm; every organ present) and its top slab, slices
100-111 (no gallbladder or right kidney: the empty-mask conventions matter there). Prints one JSON
line per case with both means, their differences and the per-organ values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REPO, emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ct-abdomen-8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from braunet.infer import predict_volume
    from braunet.io import read_image, to_canonical
    from braunet.repro.official_eval import OfficialReport, score_case
    from braunet.zoo import load_model

    data = Path(REPO).parent / "shared" / "data" / "totalseg_ct"
    model, card = load_model(args.model, "cpu")
    volume = read_image(data / "case01_ct.nii.gz")
    label_canonical, reorientation = to_canonical(read_image(data / "case01_label_synapse8.nii.gz"))
    prediction = reorientation.apply(predict_volume(model, card, volume).labels)
    spacing = tuple(float(np.linalg.norm(reorientation.canonical_affine[:3, i])) for i in range(3))
    names = {c: card.class_names[c] for c in range(1, len(card.class_names))}
    for case, k in (("case01 whole volume", slice(None)), ("case01 slices 100-111", slice(100, 112))):
        report = OfficialReport(names)
        truth = label_canonical[:, :, k].astype(np.int64)
        report.cases.append(score_case(case, prediction[:, :, k], truth, list(names), spacing))
        ours = report.ours()
        absent = [names[c] for c in names if not (truth == c).any()]
        emit(
            bench="official_vs_mm", model=card.name, model_created=card.created, case=case, spacing_mm=spacing,
            organs_absent=absent,
            official_dice=round(report.official_mean_dice, 4), official_hd95_voxels=round(report.official_mean_hd95, 2),
            ours_dice=round(ours["mean_dice"], 4),
            ours_hd95_mm=None if np.isnan(ours["mean_hd95_mm"]) else round(ours["mean_hd95_mm"], 2),
            dice_difference=round(report.official_mean_dice - ours["mean_dice"], 4),
            n_hd95_undefined=ours["n_hd95_undefined"],
            per_organ={
                n: {"official": [round(v["dice"], 3), round(v["hd95"], 2)],
                    "ours": [round(ours["per_class"][n]["dice"], 3),
                             None if np.isnan(ours["per_class"][n]["hd95_mm"]) else round(ours["per_class"][n]["hd95_mm"], 2)]}
                for n, v in report.official_per_class().items()
            },
        )


if __name__ == "__main__":
    main()
