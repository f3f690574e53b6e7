"""Time per image of the site-variation augmentation policies (``braunet.train.augment``) on this CPU.

    python bench/bench_augment.py              # 200 draws per case
    python bench/bench_augment.py --draws 50

Inputs are real shared data at the network size, in the units the training dataset holds: the
``case01sm`` CT slice 15 zoomed to 224 x 224 in the bundled recipe's units (-1 .. 1), and
CVC-ClinicDB frame 1 resized to 224 x 224 in ImageNet units. For each kind one JSON line per case:
the default policy (``site_augment(kind)``: each step with its own probability), every step drawn
(all probabilities 1: the worst case), each step alone, and the current ``AugmentedSlices``
transform (``random_affine``, always applied) for comparison. ``ms`` is the median of
``time.perf_counter`` over ``--draws`` seeds (one draw per seed), ``p90_ms`` the 90th percentile.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REPO, emit

DATA = Path(os.environ.get("BRAUNET_DATA_DIR", Path(REPO).parent / "shared" / "data"))
SIZE = 224


def _ct() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib
    from scipy import ndimage

    ct = np.asarray(nib.load(DATA / "totalseg_ct" / "case01sm_ct.nii.gz").dataobj)[:, :, 15]
    label = np.asarray(nib.load(DATA / "totalseg_ct" / "case01sm_label_synapse8.nii.gz").dataobj)[:, :, 15]
    factors = (SIZE / ct.shape[0], SIZE / ct.shape[1])
    unit = (np.clip(ct.astype(np.float32), -125, 275) + 125) / 400
    x = ndimage.zoom(unit, factors, order=3).astype(np.float32) * 2 - 1
    return x, ndimage.zoom(label.astype(np.int64), factors, order=0)


def _rgb() -> tuple[np.ndarray, np.ndarray]:
    import tifffile
    from scipy import ndimage

    from braunet.train.augment import SITE_POLICIES

    frame = tifffile.imread(DATA / "cvc_clinicdb" / "images" / "1.tif").astype(np.float32) / 255
    mask = (tifffile.imread(DATA / "cvc_clinicdb" / "masks" / "1.tif") > 127).astype(np.int64)
    factors = (SIZE / frame.shape[0], SIZE / frame.shape[1])
    frame = ndimage.zoom(frame, (*factors, 1), order=1)
    policy = SITE_POLICIES["rgb"]
    x = ((frame - np.array(policy.mean)) / np.array(policy.std)).astype(np.float32)
    return x, ndimage.zoom(mask, factors, order=0)


def _time(augment: Callable, image: np.ndarray, label: np.ndarray, draws: int) -> tuple[float, float]:
    """Median and 90th percentile in ms of ``augment(image, label, rng)``, one draw per seed."""
    augment(image, label, np.random.default_rng(10_000))  # warm-up
    times = []
    for seed in range(draws):
        rng = np.random.default_rng(seed)
        start = time.perf_counter()
        augment(image, label, rng)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3), float(np.percentile(times, 90) * 1e3)


def _only(params, name: str):
    """``params`` with probability 1 for ``name`` and 0 for every other step."""
    return dataclasses.replace(
        params, **{f.name: float(f.name == name) for f in dataclasses.fields(params) if f.name.startswith("p_")}
    )


def _all(params):
    """``params`` with every step's probability 1."""
    return dataclasses.replace(params, **{f.name: 1.0 for f in dataclasses.fields(params) if f.name.startswith("p_")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()

    from braunet.train.augment import random_affine, site_augment

    for kind, (image, label) in (("ct", _ct()), ("rgb", _rgb())):
        policy = site_augment(kind)
        every = dataclasses.replace(policy, geometry=_all(policy.geometry), intensity=_all(policy.intensity))
        if kind == "ct":  # the CT policy never flips
            every = dataclasses.replace(every, geometry=dataclasses.replace(every.geometry, p_flip_lr=0, p_flip_ud=0))
        none_geometry = _only(policy.geometry, "")
        none_intensity = _only(policy.intensity, "")
        cases: dict[str, Callable] = {
            "policy (default probabilities)": policy,
            "policy (every step)": every,
            "current AugmentedSlices random_affine": functools.partial(
                random_affine, shift_limit=0.0625, scale_limit=0.1, rotate_limit=20.0, mode="mirror"),
        }
        for name in ("p_affine", "p_elastic"):
            geometry = _only(policy.geometry, name)
            cases[f"{name[2:]} alone"] = dataclasses.replace(policy, geometry=geometry, intensity=none_intensity)
        for f in dataclasses.fields(policy.intensity):
            if f.name.startswith("p_"):
                intensity = _only(policy.intensity, f.name)
                cases[f"{f.name[2:]} alone"] = dataclasses.replace(policy, geometry=none_geometry, intensity=intensity)
        for case, augment in cases.items():
            ms, p90 = _time(augment, image, label, args.draws)
            emit(bench="augment", kind=kind, case=case, size=SIZE, channels=1 if image.ndim == 2 else image.shape[-1],
                 draws=args.draws, ms=round(ms, 3), p90_ms=round(p90, 3), load_1min=round(os.getloadavg()[0], 2))

if __name__ == "__main__":
    main()
