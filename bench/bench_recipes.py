"""Time per epoch of the paper recipes on this machine, extrapolated from a few measured iterations.

    python bench/bench_recipes.py                     # synapse, synapse-nosccsa, isic; batch 4, 3 iterations
    python bench/bench_recipes.py --recipes synapse --batch 24 --iters 2

For each recipe: the full-size preset (62.6 M parameters, 224 or 256 px) trains ``--iters`` measured
iterations (after one warm-up) of the recipe's optimizer and loss at ``--batch`` images on real
data (the shared CT slices, the shared ISIC crops), and the recipe's augmentation is timed per
image at the official data's size (Synapse slices are 512 x 512: the real CT slice is zoomed to
that size first). An epoch is then extrapolated linearly in images (CPU training cost is linear in
the batch size to first order): ``images_per_epoch * (step_s / batch + augment_s)`` with one
data-loading process. Images per epoch: Synapse 2211 training slices (TransUNet split); ISIC-2018
and CVC-ClinicDB: the official 90 % training share, minus validation fold 0 (2594 -> 1868,
612 -> 441 images).

Each JSON line also gives the ratio to the ``cpu-ct`` preset's step time measured in the same
process, so runs on a loaded machine stay comparable.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REPO, emit  # noqa: E402

DATA = Path(REPO).parent / "shared" / "data"
IMAGES_PER_EPOCH = {"synapse": 2211, "synapse-nosccsa": 2211, "isic": 1868, "cvc": 441}


def _ct_slices(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Real CT slices in [0, 1] and labels, zoomed to ``size`` (TransUNet scaling)."""
    import nibabel as nib
    from scipy.ndimage import zoom

    from braunet.repro.transunet import ct_to_unit

    ct = np.asarray(nib.load(DATA / "totalseg_ct" / "case01sm_ct.nii.gz").dataobj)
    lab = np.asarray(nib.load(DATA / "totalseg_ct" / "case01sm_label_synapse8.nii.gz").dataobj)
    ks = np.linspace(0, ct.shape[2] - 1, count).astype(int)
    images = [zoom(ct_to_unit(ct[:, :, k].T), (size / ct.shape[1], size / ct.shape[0]), order=3) for k in ks]
    labels = [zoom(lab[:, :, k].T.astype(np.int64), (size / ct.shape[1], size / ct.shape[0]), order=0) for k in ks]
    return np.stack(images).astype(np.float32), np.stack(labels)


def _isic(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage.io import imread
    from skimage.transform import resize

    names = sorted((DATA / "isic2016_crops" / "images").glob("*.jpg"))[:count]
    images = [resize(imread(p), (size, size), order=1, anti_aliasing=False).astype(np.float32) for p in names]
    masks = [(resize(imread(DATA / "isic2016_crops" / "masks" / f"{p.stem}.png"), (size, size), order=0) > 0.5)
             for p in names]
    return np.stack(images), np.stack(masks).astype(np.int64)


def _step_time(recipe, batch: int, iters: int, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    from braunet.model import BRAUNet
    from braunet.repro.runner import _optimizer, make_recipe_loss

    torch.manual_seed(0)
    model = BRAUNet(recipe.model_config())
    for p in model.stages[3].parameters():
        p.requires_grad_(False)
    optimizer = _optimizer(recipe, [p for p in model.parameters() if p.requires_grad])
    criterion = make_recipe_loss(recipe)
    times = []
    for i in range(iters + 1):  # the first is a warm-up
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x[:batch]), y[:batch])
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["synapse", "synapse-nosccsa", "isic"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from braunet.repro.augment import albumentations_isic_augment, missformer_augment
    from braunet.repro.recipes import load_recipe

    with open("/proc/cpuinfo") as f:
        hardware = f.read().split("model name")[1].split("\n")[0].strip(": \t")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    baseline_recipe = load_recipe("synapse").with_overrides({"model.preset": "cpu-ct"})
    ct_x, ct_y = _ct_slices(224, max(args.batch, 8))
    x_ct = (torch.from_numpy(ct_x)[:, None] - 0.5) / 0.5
    baseline, _ = _step_time(baseline_recipe, args.batch, args.iters, x_ct, torch.from_numpy(ct_y))
    emit(bench="recipe_step", recipe="cpu-ct baseline", batch=args.batch, step_s=round(baseline, 3),
         cpu=hardware, threads=args.threads, loadavg_at_start=float(load))
    for name in args.recipes:
        recipe = load_recipe(name)
        if recipe["data.kind"] == "transunet":
            x, y = x_ct, torch.from_numpy(ct_y)
            big, big_lab = _ct_slices(512, 8)
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for i in range(40):
                missformer_augment(big[i % 8], big_lab[i % 8], rng)
            augment_s = (time.perf_counter() - start) / 40
        else:
            images, masks = _isic(256, max(args.batch, 8))
            mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
            x = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
            y = torch.from_numpy(masks)
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for i in range(40):
                albumentations_isic_augment(images[i % 8], masks[i % 8], rng, recipe["augmentation"], fill=0.0)
            augment_s = (time.perf_counter() - start) / 40
        step_s, loss = _step_time(recipe, args.batch, args.iters, x, y)
        per_image = step_s / args.batch + augment_s
        images = IMAGES_PER_EPOCH[name]
        emit(bench="recipe_epoch", recipe=name, preset=recipe["model.preset"], measured_batch=args.batch,
             measured_iters=args.iters, step_s=round(step_s, 3), augment_s_per_image=round(augment_s, 4),
             ratio_to_cpu_ct_step=round(step_s / baseline, 2), images_per_epoch=images,
             epoch_s_extrapolated=round(images * per_image), epochs=recipe["epochs"],
             run_days_extrapolated=round(images * per_image * recipe["epochs"] / 86400, 1), loss=round(loss, 4))


if __name__ == "__main__":
    main()
