"""Labelled training data: NIfTI/DICOM volume-label pairs as axial slices, and image/mask folders.

Two layers, so that the training loop, fine-tuning and evaluation share one path from files to tensors:

* :class:`SliceSet` - labelled 2-D slices at their native resolution (CT in HU (H, W), RGB (H, W, 3)
  uint8) with their label maps, pixel spacing and group (case or video sequence, so splits never put
  one patient or sequence on both sides). Built by :func:`load_volume_pair`, :func:`load_image_pair`
  and :func:`load_pairs` from files, or directly from arrays (fine-tuning).
* :class:`PreparedSlices` - the same slices preprocessed with the model card's recipe
  (:func:`braunet.infer.preprocess.preprocess_slices`, the one place that recipe lives) and the
  labels resized to the network's size with nearest neighbour. :class:`AugmentedSlices` wraps it as
  a ``torch.utils.data.Dataset`` with deterministic per-(epoch, index) augmentation, so every DDP
  rank and every resumed run draws the same transforms.

Volumes are read with :func:`braunet.io.read_image`, brought to the closest RAS+ orientation with
:func:`braunet.io.to_canonical`, sliced along axis 2 (axial) and laid out with
:func:`braunet.infer.views.to_view`, exactly as the inference engine does, so the network sees
training slices in the orientation it will see at inference.

Binary masks: stored as 0/1 or 0/255 (any non-zero value is foreground for those). Masks with other
grey values are 8-bit anti-aliased masks (CVC-ClinicDB frames have edge values 2..254, e.g. frame 1
has 7209 pixels between 1 and 254, and "non-zero" would grow its polyp by 42 %), so a mask whose
maximum is above 1 is thresholded at the middle of the 8-bit range, ``value > 127``, as the
datasets' own binarised masks are. A 0/255 or 0/1 mask gives the same result under both rules.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braunet.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "AugmentedSlices",
    "PreparedSlices",
    "SliceSet",
    "collect_pairs",
    "file_stem",
    "load_image_pair",
    "load_pairs",
    "load_volume_pair",
    "mask_to_labels",
    "prepare",
    "split_validation",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".dcm")


@dataclass
class SliceSet:
    """Labelled 2-D slices at native resolution.

    Attributes:
        images: per slice, CT HU (H, W) or RGB (H, W, 3); sizes may differ between slices.
        labels: per slice, int64 class ids (H, W) on the image's grid.
        groups: per slice, the case or sequence it comes from (splits keep a group together).
        names: per slice, a readable origin such as ``"case01_ct.nii.gz[z=57]"`` (for messages).
        spacing: per slice, pixel size (rows, cols) in mm (1.0 when the file does not say).
        known: per slice, the class ids that were annotated, or None when all were. A partially
            annotated slice (e.g. only the liver) must not teach "every other organ is background";
            the trainer merges the unannotated classes with background for those slices.
        depth_mm: per slice, the distance between neighbouring slices of its volume (None for 2-D
            images), so slices of one case stack back into a volume for 3-D metrics.
    """

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    spacing: list[tuple[float, float]] = field(default_factory=list)
    known: list[tuple[int, ...] | None] = field(default_factory=list)
    depth_mm: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not self.depth_mm:
            self.depth_mm = [None] * n
        for name in ("labels", "groups", "names", "spacing", "known", "depth_mm"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"SliceSet.{name} has {len(getattr(self, name))} entries for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_arrays(
        cls, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], group: str = "slices"
    ) -> SliceSet:
        """Slices given in memory (e.g. by the napari widget); checks that each label fits its image."""
        images, labels = [np.asarray(a) for a in images], [np.asarray(a) for a in labels]
        if len(images) != len(labels):
            raise InputError(f"{len(images)} image slices but {len(labels)} label slices")
        for i, (image, label) in enumerate(zip(images, labels)):
            _check_slice(image, label, f"slice {i}")
        images = [a[..., :3] if a.ndim == 3 else a for a in images]  # reason: RGBA alpha is not image content
        n = len(images)
        return cls(
            images=images,
            labels=[label.astype(np.int64) for label in labels],
            groups=[group] * n,
            names=[f"{group}[{i}]" for i in range(n)],
            spacing=[(1.0, 1.0)] * n,
            known=[None] * n,
        )

    def subset(self, indices: Sequence[int]) -> SliceSet:
        return SliceSet(**{f.name: [getattr(self, f.name)[i] for i in indices] for f in dataclasses.fields(self)})

    def __add__(self, other: SliceSet) -> SliceSet:
        return SliceSet(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def class_ids(self) -> list[int]:
        """Class ids present in any label map, sorted."""
        present: set[int] = set()
        for label in self.labels:
            present.update(int(v) for v in np.unique(label))
        return sorted(present)


def _check_slice(image: np.ndarray, label: np.ndarray, where: str) -> None:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"{where}: image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise InputError(f"{where}: label shape {label.shape} does not match image shape {image.shape[:2]}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise InputError(f"{where}: labels must be integer class ids, got dtype {label.dtype}")
    if label.size and label.min() < 0:
        raise InputError(f"{where}: labels must be >= 0, got {label.min()}")


def file_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``, ``frame.png`` -> ``frame``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES + VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def mask_to_labels(mask: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """A mask or label image as read from a file -> int64 class ids (H, W).

    ``num_classes == 1`` (binary model): 0/1 masks use ``> 0``; masks with larger values are 8-bit
    masks and use ``> 127`` (see the module docstring). RGB(A) masks (JPEG masks) are averaged first.
    ``num_classes >= 2``: the values are class ids and must be below ``num_classes``.

    Raises:
        InputError: naming ``source``, for values that are not class ids of the model.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., :3].mean(axis=-1)
    if mask.ndim != 2:
        raise InputError(f"{source}: a mask must be 2-D (H, W), got shape {mask.shape}")
    if num_classes == 1:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise InputError(f"{source}: binary mask values must be in 0..255, got {mask.min()}..{mask.max()}")
        threshold = 0 if mask.max() <= 1 else 127
        return (mask > threshold).astype(np.int64)
    if not np.all(np.mod(mask, 1) == 0):
        raise InputError(f"{source}: label values must be integers")
    labels = mask.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{source}: label values {labels.min()}..{labels.max()} are not class ids of a model with "
            f"{num_classes} classes (0..{num_classes - 1})"
        )
    return labels


def _read(path: Path):  # -> braunet.io.Volume
    from braunet.io import read_image

    return read_image(path)


def load_volume_pair(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    *,
    num_classes: int,
    slices: Sequence[int] | None = None,
    known_classes: Sequence[int] | None = None,
    group: str | None = None,
    view: str = "radiological",
) -> SliceSet:
    """Axial slices of a 3-D image and its label volume (same voxel grid).

    Both are read with :func:`braunet.io.read_image`, checked to share shape and affine, and turned
    to the closest RAS+ orientation (:func:`braunet.io.to_canonical`); slice ``k`` is
    ``canonical[:, :, k]`` (axis 2 = inferior to superior), laid out in the model's ``view``
    (:mod:`braunet.infer.views`: ``"radiological"`` as the official Synapse slices, or ``"ras"``).

    Args:
        slices: canonical axial indices to keep (default all).
        known_classes: the classes annotated in this label file when it is partial (see
            :class:`SliceSet`); None means every class of the model was annotated.
        group: split group (default: the image file's stem).
    """
    from braunet.infer.views import to_view
    from braunet.io import to_canonical

    image_path, label_path = Path(image_path), Path(label_path)
    image, label = _read(image_path), _read(label_path)
    if image.array.ndim != 3:
        raise InputError(f"{image_path}: expected a 3-D volume, got shape {image.array.shape}")
    if label.array.shape[:3] != image.array.shape or label.array.ndim != 3:
        raise InputError(
            f"{label_path}: label volume shape {label.array.shape} differs from the image's {image.array.shape}"
        )
    if not np.allclose(label.affine, image.affine, atol=1e-3, rtol=1e-4):
        raise InputError(f"{label_path}: label affine differs from the image's ({image_path}); resample it first")
    image_ras, reorientation = to_canonical(image)
    label_ras, _ = to_canonical(label)  # same affine as the image, so the same reorientation
    labels = mask_to_labels_volume(label_ras, num_classes, str(label_path))
    affine = np.asarray(reorientation.canonical_affine)
    sizes = (float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1])))
    spacing = (sizes[1], sizes[0]) if view == "radiological" else sizes  # (rows, cols) of the view
    depth = image_ras.shape[2]
    indices = list(range(depth)) if slices is None else [int(k) for k in slices]
    bad = [k for k in indices if not 0 <= k < depth]
    if bad:
        raise InputError(f"{image_path}: slice indices {bad[:5]} outside 0..{depth - 1}")
    group = group or file_stem(image_path)
    known = tuple(int(c) for c in known_classes) if known_classes is not None else None
    image_stack, label_stack = to_view(image_ras, indices, view), to_view(labels, indices, view)
    return SliceSet(
        images=list(image_stack),
        labels=list(label_stack),
        groups=[group] * len(indices),
        names=[f"{image_path.name}[z={k}]" for k in indices],
        spacing=[spacing] * len(indices),
        known=[known] * len(indices),
        depth_mm=[float(np.linalg.norm(affine[:3, 2]))] * len(indices),
    )


def mask_to_labels_volume(array: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Label volume -> int64 class ids; binary models accept 0/1 or 0/255 volumes (any non-zero)."""
    array = np.asarray(array)
    if not np.all(np.mod(array, 1) == 0):
        raise InputError(f"{source}: label values must be integers")
    if num_classes == 1:
        return (array > 0).astype(np.int64)
    labels = array.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{source}: label values {labels.min()}..{labels.max()} are not class ids of a model with "
            f"{num_classes} classes (0..{num_classes - 1})"
        )
    return labels


def load_image_pair(
    image_path: str | os.PathLike, mask_path: str | os.PathLike, *, num_classes: int, group: str | None = None
) -> SliceSet:
    """One 2-D image (grey or RGB) and its mask file."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, mask = _read(image_path), _read(mask_path)
    array = np.asarray(image.array)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # reason: PNG alpha carries no image content
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError(f"{image_path}: expected a 2-D grey or RGB image, got shape {array.shape}")
    labels = mask_to_labels(mask.array, num_classes, str(mask_path))
    if labels.shape != array.shape[:2]:
        raise InputError(f"{mask_path}: mask shape {labels.shape} differs from the image's {array.shape[:2]}")
    spacing = tuple(float(s) for s in image.spacing[:2]) if getattr(image, "spacing", None) is not None else (1.0, 1.0)
    return SliceSet(
        images=[array], labels=[labels], groups=[group or file_stem(image_path)], names=[image_path.name],
        spacing=[spacing], known=[None], depth_mm=[None],
    )


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    if path.is_dir():
        return True  # a DICOM series folder
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _list_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    usable = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES + VOLUME_SUFFIXES)]
    if not usable:
        raise InputError(f"{folder}: no image files (expected {', '.join(IMAGE_SUFFIXES + VOLUME_SUFFIXES)})")
    return usable


def _is_dicom_series(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    return bool(files) and all(p.suffix.lower() in (".dcm", "") for p in files if not p.name.startswith("."))


def collect_pairs(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Pair image and label paths as the CLI receives them.

    * One folder of images and one folder of labels: matched by file stem (``frame.tif`` with
      ``frame.png``); every image needs a label, extra labels are ignored. A folder of ``.dcm``
      files is one DICOM series, not a folder of images.
    * Otherwise two equally long lists of files (or DICOM folders), paired in order.

    Raises:
        InputError: missing paths, unequal counts or images without a label (named).
    """
    image_paths, label_paths = [Path(p).expanduser() for p in images], [Path(p).expanduser() for p in labels]
    for path in image_paths + label_paths:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    if not image_paths or not label_paths:
        raise InputError("give at least one image and one label path")
    if (
        len(image_paths) == len(label_paths) == 1
        and image_paths[0].is_dir()
        and label_paths[0].is_dir()
        and not _is_dicom_series(image_paths[0])
    ):
        by_stem: dict[str, Path] = {}
        for path in _list_files(label_paths[0]):
            by_stem.setdefault(file_stem(path), path)
        pairs, missing = [], []
        for path in _list_files(image_paths[0]):
            if file_stem(path) in by_stem:
                pairs.append((path, by_stem[file_stem(path)]))
            else:
                missing.append(path.name)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"{label_paths[0]}: no label for {len(missing)} image(s) of {image_paths[0]}: {shown} "
                "(labels are matched by file name without suffix)"
            )
        return pairs
    if len(image_paths) != len(label_paths):
        raise InputError(f"{len(image_paths)} image paths but {len(label_paths)} label paths (paired in order)")
    return list(zip(image_paths, label_paths))


def load_pairs(
    pairs: Sequence[tuple[Path, Path]], *, num_classes: int, view: str = "radiological"
) -> SliceSet:
    """Read every pair (volumes as axial slices, 2-D images as one slice each) into one SliceSet."""
    out = SliceSet()
    for image_path, label_path in pairs:
        if _is_volume(image_path):
            out = out + load_volume_pair(image_path, label_path, num_classes=num_classes, view=view)
        else:
            out = out + load_image_pair(image_path, label_path, num_classes=num_classes)
    if not len(out):
        raise InputError("no labelled slices found")
    return out


def split_validation(slices: SliceSet, fraction: float = 0.2, gap: int = 2) -> tuple[list[int], list[int], str]:
    """Indices ``(train, validation, description)`` that never split a case across the two sides.

    With at least 5 groups (cases, videos, images), whole groups go to validation: every
    ``round(1 / fraction)``-th group in sorted order, at least one. With fewer (one or a few
    volumes), each volume is split by slab: its top ``fraction`` of slices (contiguous) go to
    validation and ``gap`` slices below them to neither side, because neighbouring slices of one
    volume are nearly identical and would make validation a test on training data.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    groups = sorted(set(slices.groups))
    if len(groups) >= 5:
        step = max(1, round(1 / fraction))
        held = set(groups[::step])
        val = [i for i, g in enumerate(slices.groups) if g in held]
        train = [i for i, g in enumerate(slices.groups) if g not in held]
        return train, val, f"by group: {len(held)} of {len(groups)} held out ({', '.join(sorted(held)[:10])})"
    train, val = [], []
    for group in groups:
        members = [i for i, g in enumerate(slices.groups) if g == group]
        n_val = max(1, round(fraction * len(members)))
        if len(members) - n_val - gap < 1:
            raise InputError(
                f"{group}: {len(members)} slices are too few to hold out a validation slab of {n_val} with a "
                f"gap of {gap}; give validation data explicitly"
            )
        val += members[-n_val:]
        train += members[: len(members) - n_val - gap]
    return train, val, f"by slab: the top {fraction:.0%} of the slices of each volume, {gap}-slice gap"


# ----------------------------------------------------------------------------------------------
# Tensors at the network's size


@dataclass
class PreparedSlices:
    """Slices preprocessed for one model.

    Attributes:
        x: (N, C, S, S) float32 network input (C = 1 for CT, 3 for RGB).
        y: (N, S, S) int64 class ids (0/1 for a binary model).
        known: (N, K) bool, which of the K = max(num_classes, 2) classes each slice annotates.
        groups, names: as in :class:`SliceSet`.
    """

    x: torch.Tensor
    y: torch.Tensor
    known: torch.Tensor
    groups: list[str]
    names: list[str]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: Sequence[int]) -> PreparedSlices:
        import torch

        index = torch.as_tensor(list(indices), dtype=torch.long)
        return PreparedSlices(
            self.x[index], self.y[index], self.known[index],
            [self.groups[i] for i in indices], [self.names[i] for i in indices],
        )

    @property
    def partial(self) -> bool:
        return not bool(self.known.all())


def prepare(slices: SliceSet, preprocessing: dict[str, Any], img_size: int, num_classes: int) -> PreparedSlices:
    """Preprocess ``slices`` with the card's recipe and resize their labels to ``img_size``.

    Images go through :func:`braunet.infer.preprocess.preprocess_slices` and labels through its
    ``resize_labels`` (nearest neighbour with the recipe's pixel-centre convention): the one
    implementation of the recipe, shared with inference.
    """
    import torch

    from braunet.infer.preprocess import preprocess_slices, resize_labels

    if not len(slices):
        raise InputError("no slices to prepare")
    classes = max(num_classes, 2)
    xs = [preprocess_slices(np.asarray(image)[None], preprocessing, img_size) for image in slices.images]
    ys = []
    for label, name in zip(slices.labels, slices.names):
        label = np.asarray(label)
        if label.size and label.max() >= classes:
            raise InputError(f"{name}: label value {label.max()} is not a class of a {classes}-class model")
        ys.append(resize_labels(label[None], (img_size, img_size), preprocessing)[0].astype(np.int64))
    known = torch.ones(len(slices), classes, dtype=torch.bool)
    for i, annotated in enumerate(slices.known):
        if annotated is not None:
            known[i] = False
            known[i, 0] = True
            known[i, list(annotated)] = True
    return PreparedSlices(
        x=torch.cat(xs).float().contiguous(),
        y=torch.from_numpy(np.stack(ys)),
        known=known,
        groups=list(slices.groups),
        names=list(slices.names),
    )


AUGMENTATIONS = ("none", "ct", "rgb")


class AugmentedSlices:
    """``torch.utils.data.Dataset`` over :class:`PreparedSlices` with paired augmentation.

    Item ``i`` of epoch ``e`` is transformed with ``np.random.default_rng((seed, e, i))``: the same on
    every DDP rank, in every DataLoader worker and after a resume. Call :meth:`set_epoch` each epoch.

    Kinds:
        ``"ct"``: with probability 0.5 a small shift/scale/rotation (+-20 degrees, +-10 % scale,
            mirror border). No flips or 90 degree turns: they swap the patient's left and right, and
            left and right kidney are separate classes that a model trained on few subjects would then
            have to tell apart from context alone.
        ``"rgb"``: with probability 0.5 a rot90 + flip (endoscopy and dermoscopy have no handedness),
            then with probability 0.5 a shift/scale/rotation.
        ``"none"``: items as prepared.
    Returns ``(x (C, S, S) float32, y (S, S) int64, known (K,) bool)``.
    """

    def __init__(self, data: PreparedSlices, kind: str = "none", seed: int = 0) -> None:
        if kind not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {kind!r}")
        self.data, self.kind, self.seed, self.epoch = data, kind, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        import torch

        from braunet.train.augment import random_affine, random_rot90_flip

        x, y, known = self.data.x[index], self.data.y[index], self.data.known[index]
        if self.kind == "none":
            return x, y, known
        rng = np.random.default_rng((self.seed, self.epoch, index))
        image = x.numpy().transpose(1, 2, 0)  # (S, S, C): the augment functions are channel-last
        label = y.numpy()
        if self.kind == "rgb" and rng.random() < 0.5:
            image, label = random_rot90_flip(image, label, rng)
        if rng.random() < 0.5:
            image, label = random_affine(
                image, label, rng, shift_limit=0.0625, scale_limit=0.1, rotate_limit=20.0, mode="mirror"
            )
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return x, torch.from_numpy(np.ascontiguousarray(label)), known

