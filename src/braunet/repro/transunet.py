"""Synapse data in the TransUNet format, as researchers have it: reader, training dataset and writer.

Layout (what TransUNet's preprocessing produced and every Synapse paper since reads)::

    ROOT/train_npz/<case>_slice<k>.npz     arrays "image" (H, W) and "label" (H, W)
    ROOT/test_vol_h5/<case>.npy.h5         datasets "image" (D, H, W) and "label" (D, H, W)
    ROOT/lists_Synapse/train.txt           one slice name per line (<case>_slice<k>)
    ROOT/lists_Synapse/test_vol.txt        one case name per line

``image`` is CT clipped to [-125, 275] HU and scaled to [0, 1] (float32); ``label`` holds the
Synapse class ids 0..8 (stored as float32 by TransUNet; any numeric dtype with integer values is
accepted). The lists may also sit in ``ROOT/lists/lists_Synapse`` (the official repository's place)
or anywhere given by ``list_dir``.

TransUNet volumes carry no voxel spacing, so the official metrics are in voxels. Folders written by
:func:`write_transunet_case` add an HDF5 attribute ``spacing_mm`` (D, H, W) to each volume, which
official readers ignore and :mod:`braunet.repro.official_eval` uses for millimetre metrics.

Command line (convert one CT + Synapse-8 label pair)::

    python -m braunet.repro.transunet CT.nii.gz LABEL.nii.gz ROOT --case case0001 --split both
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braunet._atomic import atomic_path
from braunet.errors import InputError, OutputError

__all__ = [
    "CLIP_HU",
    "SynapseVolume",
    "TransUNetFolder",
    "TransUNetSlices",
    "ct_to_unit",
    "write_transunet_case",
]

CLIP_HU = (-125.0, 275.0)  # TransUNet's abdomen window
_LIST_DIRS = ("lists_Synapse", "lists/lists_Synapse")


def ct_to_unit(hu: np.ndarray) -> np.ndarray:
    """TransUNet's CT preprocessing: clip to [-125, 275] HU, scale to [0, 1]; float32, same shape."""
    low, high = CLIP_HU
    return ((np.clip(np.asarray(hu, dtype=np.float32), low, high) - low) / (high - low)).astype(np.float32)


@dataclass(frozen=True)
class SynapseVolume:
    """One test volume: ``image`` (D, H, W) float32 in [0, 1], ``label`` (D, H, W) int64 class ids,
    ``spacing`` (D, H, W) in mm or None (real TransUNet files have none)."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float] | None = None


def _labels(array: np.ndarray, source: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.mod(array, 1) == 0):
        raise InputError(f"{source}: 'label' must hold integer class ids")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise InputError(f"{source}: 'label' has negative values")
    return labels


def _read_list(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


class TransUNetFolder:
    """A TransUNet-format Synapse folder (see the module docstring).

    Args:
        root: the folder holding ``train_npz/`` and/or ``test_vol_h5/``.
        list_dir: folder of ``train.txt`` / ``test_vol.txt`` (default: searched under ``root``).
    Raises:
        InputError: no such folder, no lists, or lists naming files that do not exist.
    """

    def __init__(self, root: str | os.PathLike, list_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise InputError(f"{self.root}: TransUNet data folder not found")
        if list_dir is None:
            found = [self.root / d for d in _LIST_DIRS if (self.root / d).is_dir()]
            if not found:
                raise InputError(f"{self.root}: no lists_Synapse/ folder (with train.txt and test_vol.txt) found")
            list_dir = found[0]
        self.list_dir = Path(list_dir).expanduser()
        train_list, test_list = self.list_dir / "train.txt", self.list_dir / "test_vol.txt"
        if not train_list.is_file() and not test_list.is_file():
            raise InputError(f"{self.list_dir}: neither train.txt nor test_vol.txt found")
        self.train_names = _read_list(train_list) if train_list.is_file() else []
        self.test_names = _read_list(test_list) if test_list.is_file() else []
        missing = [n for n in self.train_names if not self.slice_path(n).is_file()]
        missing += [n for n in self.test_names if not self.volume_path(n).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise InputError(f"{self.root}: {len(missing)} listed file(s) missing ({shown})")

    def slice_path(self, name: str) -> Path:
        return self.root / "train_npz" / f"{name}.npz"

    def volume_path(self, name: str) -> Path:
        return self.root / "test_vol_h5" / f"{name}.npy.h5"

    def read_slice(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """One training slice: image (H, W) float32 in [0, 1], label (H, W) int64."""
        path = self.slice_path(name)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("image", "label") if k not in data.files]
                if missing:
                    raise InputError(f"{path}: no array {missing[0]!r} (expected 'image' and 'label')")
                image, label = np.asarray(data["image"], dtype=np.float32), data["label"]
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable .npz file ({error})") from None
        label = _labels(label, str(path))
        if image.ndim != 2 or label.shape != image.shape:
            raise InputError(f"{path}: image {image.shape} and label {label.shape} must be equal 2-D shapes")
        return image, label

    def read_volume(self, name: str) -> SynapseVolume:
        """One test volume (see :class:`SynapseVolume`)."""
        import h5py

        path = self.volume_path(name)
        try:
            with h5py.File(path, "r") as data:
                image = np.asarray(data["image"][:], dtype=np.float32)
                label = data["label"][:]
                spacing = data.attrs.get("spacing_mm")
        except KeyError as error:
            raise InputError(f"{path}: no dataset {error} (expected 'image' and 'label')") from None
        except OSError as error:
            raise InputError(f"{path}: not a readable HDF5 file ({error})") from None
        label = _labels(label, str(path))
        if image.ndim != 3 or label.shape != image.shape:
            raise InputError(f"{path}: image {image.shape} and label {label.shape} must be equal 3-D shapes")
        spacing_t = tuple(float(s) for s in spacing) if spacing is not None and len(spacing) == 3 else None
        return SynapseVolume(name, image, label, spacing_t)

    def volumes(self, names: Sequence[str] | None = None) -> Iterator[SynapseVolume]:
        """The test volumes of ``test_vol.txt`` (or ``names``), read one at a time."""
        for name in self.test_names if names is None else names:
            yield self.read_volume(name)


class TransUNetSlices:
    """``torch.utils.data.Dataset`` of the training slices of ``train.txt``, as the official trainer feeds them.

    Item ``i`` of epoch ``e``: read the slice, augment it at its own size with
    ``augment(image, label, rng)`` and ``rng = np.random.default_rng((seed, e, i))``, zoom to
    ``img_size`` (image cubic spline, label nearest, both ``scipy.ndimage.zoom`` as the official
    code), normalise ``(x - mean) / std``. Returns ``x`` (1, S, S) float32 and ``y`` (S, S) int64.
    Call :meth:`set_epoch` every epoch (deterministic on every DDP rank and after a resume).
    """

    def __init__(
        self,
        folder: TransUNetFolder,
        img_size: int,
        augment: Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
        *,
        mean: float = 0.5,
        std: float = 0.5,
        seed: int = 0,
        names: Sequence[str] | None = None,
    ) -> None:
        self.folder, self.img_size, self.augment = folder, img_size, augment
        self.mean, self.std, self.seed, self.epoch = mean, std, seed, 0
        self.names = list(folder.train_names if names is None else names)
        if not self.names:
            raise InputError(f"{folder.list_dir}: train.txt lists no slices")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        import torch
        from scipy.ndimage import zoom

        image, label = self.folder.read_slice(self.names[index])
        if self.augment is not None:
            image, label = self.augment(image, label, np.random.default_rng((self.seed, self.epoch, index)))
        height, width = label.shape
        if (height, width) != (self.img_size, self.img_size):
            factors = (self.img_size / height, self.img_size / width)
            image = zoom(image, factors, order=3)
            label = zoom(label, factors, order=0)
        x = (torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None] - self.mean) / self.std
        return x, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


def _append_unique(path: Path, names: Sequence[str]) -> None:
    existing = _read_list(path) if path.is_file() else []
    merged = existing + [n for n in names if n not in existing]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in merged))


def write_transunet_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    root: str | os.PathLike,
    case: str,
    *,
    split: str = "both",
    slices: Sequence[int] | None = None,
) -> dict[str, object]:
    """Add one CT volume and its Synapse-8 label volume to a TransUNet folder.

    The CT is read with :func:`braunet.io.read_image`, turned to the closest RAS+ orientation and
    cut into axial slices laid out as the official Synapse slices (the ``radiological`` view of
    :mod:`braunet.infer.views`: rows anterior to posterior, columns patient right to left), then
    clipped to [-125, 275] HU and scaled to [0, 1] (:func:`ct_to_unit`). Labels keep their values
    (stored as float32, as TransUNet's files). Every file is written atomically; the lists are
    appended without duplicates. The source files are only read.

    Args:
        image_path, label_path: CT in HU and its label map (Synapse class ids 0..8) on the same grid.
        root: the TransUNet folder (created if missing; its parent must exist).
        case: case name, e.g. ``"case0001"``; slices are named ``<case>_slice<k:03d>``.
        split: ``"train"`` (npz slices), ``"test"`` (one h5 volume) or ``"both"``.
        slices: canonical axial indices to write as training slices (default all).
    Returns:
        ``{"case", "train_slices": [names], "test_volume": path or None, "shape": (D, H, W),
        "spacing_mm": (D, H, W)}``.
    Raises:
        InputError: unreadable files, different grids, non-integer or out-of-range labels.
        OutputError: ``root``'s parent missing or not writable.
    """
    import h5py

    from braunet.infer.views import to_view
    from braunet.io import read_image, to_canonical

    if split not in ("train", "test", "both"):
        raise ValueError(f"split must be 'train', 'test' or 'both', got {split!r}")
    root = Path(root).expanduser()
    if not root.parent.is_dir() or not os.access(root.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{root}: parent folder {root.parent} is missing or not writable")
    image_path, label_path = Path(image_path), Path(label_path)
    image, label = read_image(image_path), read_image(label_path)
    if np.asarray(image.array).ndim != 3 or image.array.shape != label.array.shape:
        raise InputError(f"{label_path}: shape {label.array.shape} differs from the CT's {image.array.shape} "
                         "(need two 3-D volumes on one grid)")
    if not np.allclose(image.affine, label.affine, atol=1e-3, rtol=1e-4):
        raise InputError(f"{label_path}: affine differs from the CT's ({image_path}); resample the labels first")
    labels = _labels(label.array, str(label_path))
    if labels.max() > 8:
        raise InputError(f"{label_path}: label values up to {labels.max()}; Synapse-8 labels are 0..8")
    ct_ras, reorientation = to_canonical(image)
    lab_ras = reorientation.apply(labels)
    depth = ct_ras.shape[2]
    every = list(range(depth))
    ct_stack = ct_to_unit(to_view(ct_ras, every, "radiological"))  # (D, H, W)
    lab_stack = to_view(lab_ras, every, "radiological").astype(np.float32)
    affine = np.asarray(reorientation.canonical_affine)
    voxel = [float(np.linalg.norm(affine[:3, i])) for i in range(3)]
    spacing = (voxel[2], voxel[1], voxel[0])  # (D, H, W): slice, rows (canonical J), columns (canonical I)

    result: dict[str, object] = {"case": case, "train_slices": [], "test_volume": None,
                                 "shape": tuple(ct_stack.shape), "spacing_mm": spacing}
    lists = root / "lists_Synapse"
    for folder in (root, lists):
        folder.mkdir(exist_ok=True)
    if split in ("train", "both"):
        out = root / "train_npz"
        out.mkdir(exist_ok=True)
        chosen = every if slices is None else [int(k) for k in slices]
        bad = [k for k in chosen if not 0 <= k < depth]
        if bad:
            raise InputError(f"{image_path}: slice indices {bad[:5]} outside 0..{depth - 1}")
        names = []
        for k in chosen:
            name = f"{case}_slice{k:03d}"
            with atomic_path(out / f"{name}.npz", suffix=".npz") as tmp, tmp.open("wb") as stream:
                np.savez(stream, image=ct_stack[k], label=lab_stack[k])
            names.append(name)
        _append_unique(lists / "train.txt", names)
        result["train_slices"] = names
    if split in ("test", "both"):
        out = root / "test_vol_h5"
        out.mkdir(exist_ok=True)
        target = out / f"{case}.npy.h5"
        with atomic_path(target, suffix=".h5") as tmp, h5py.File(tmp, "w") as data:
            data.create_dataset("image", data=ct_stack, compression="gzip")
            data.create_dataset("label", data=lab_stack, compression="gzip")
            data.attrs["spacing_mm"] = np.asarray(spacing)
            data.attrs["source_image"] = image_path.name
            data.attrs["source_label"] = label_path.name
        _append_unique(lists / "test_vol.txt", [case])
        result["test_volume"] = str(target)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m braunet.repro.transunet",
        description="Add a CT volume and its Synapse-8 label volume to a TransUNet-format folder.",
    )
    parser.add_argument("image", help="CT in HU (NIfTI or DICOM folder)")
    parser.add_argument("label", help="label volume on the same grid, Synapse ids 0..8")
    parser.add_argument("root", help="TransUNet folder (created if missing)")
    parser.add_argument("--case", required=True, help="case name, e.g. case0001")
    parser.add_argument("--split", choices=("train", "test", "both"), default="both")
    args = parser.parse_args(argv)
    try:
        result = write_transunet_case(args.image, args.label, args.root, args.case, split=args.split)
    except (InputError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.case}: {len(result['train_slices'])} training slices, test volume "
          f"{result['test_volume'] or '-'}, shape {result['shape']}, spacing {result['spacing_mm']} mm")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
