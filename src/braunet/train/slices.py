"""Labelled 2-D slices at their native resolution, read from volume/label and image/mask files.

:class:`SliceSet` holds CT in HU (H, W) or RGB (H, W, 3) uint8 slices with their label maps, pixel
spacing and group (case or video sequence, so splits never put one patient or sequence on both
sides). It is built by :func:`load_volume_pair`, :func:`load_image_pair` and :func:`load_pairs`
from files, or directly from arrays (fine-tuning); :func:`split_validation` splits it by group.
:func:`braunet.train.datasets.prepare` turns it into tensors at the network's size.

Volumes are read with :func:`braunet.io.read_image`, brought to the closest RAS+ orientation with
:func:`braunet.io.to_canonical`, sliced along axis 2 (axial) and laid out with
:func:`braunet.infer.views.to_view`, exactly as the inference engine does, so the network sees
training slices in the orientation it will see at inference. Masks and label maps become class
ids through :func:`braunet.train.masks.mask_to_labels` (its module docstring gives the rules).

**8-bit windowed CT slices** (PNG/JPEG exports without HU, spacing or affine, such as the shared
``curvas_ct_slices`` and ``msd_spleen_slices_jpg``) are read by :func:`load_windowed_pairs` with a
:class:`WindowedCT` declaration: the HU window the 8-bit values stand for (mapped back linearly, so
the model's own recipe window applies on top), the pixel spacing assumed for them, the classes the
set annotates (the others are unannotated, not absent: see ``SliceSet.known``) and how a file name
names its subject. The images must be in the radiological display (anterior up, the patient's right
on the picture's left); a side check refuses label maps that look mirrored. The two shared sets:

* :data:`CURVAS_SLICES`: value = HU clipped to [0, 255] (the window is not documented; this one is
  measured: organ medians over annotator 1's slices are liver 104, kidneys 167-169, pancreas 77,
  which are portal-venous HU, and 84 % of the pixels are 0, i.e. air, lung and fat all at or below 0
  HU, as "fat black, bone white" describes). Spacing 0.8 mm assumed: the soft tissue spans a median
  459 px across, against 336-378 mm (median 363 mm) on the three shared HU subjects: 0.79 mm.
  Annotated: kidneys (split by side in ``labels_synapse8``, by the README's spine rule), liver,
  pancreas. Subject = the file name's prefix (``10001_458.png``: 10001), the same for all three
  annotators, so a split never separates one CT's annotations.
* :data:`MSD_SPLEEN_SLICES`: the same source repository's conversion; value = HU clipped to [0, 255]
  assumed likewise (spleen median 114.5, a portal-venous spleen; 70 % of pixels near 0). Spacing 0.8
  mm assumed (466 px soft-tissue width; MSD spleen_8, the one case with a header, has 0.785 mm).
  Only the spleen is annotated. Use the mirrored ``images/`` and ``masks_synapse8/`` (the repository
  JPEGs carry MSD's left-right flip); subject = ``spleen_N`` from the name, the same group as the
  ``spleen_8`` HU volume, which is probably the same patient.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braunet.errors import InputError
from braunet.io import file_stem, read_image, to_canonical
from braunet.train.masks import mask_to_labels
from braunet.train.pairs import is_volume_path, label_on_image_grid

__all__ = [
    "CURVAS_SLICES",
    "MSD_SPLEEN_SLICES",
    "SliceSet",
    "WindowedCT",
    "check_sides",
    "load_image_pair",
    "load_pairs",
    "load_volume_pair",
    "load_windowed_pairs",
    "split_validation",
]


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
        cls,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        group: str = "slices",
        spacing: tuple[float, float] | Sequence[tuple[float, float]] = (1.0, 1.0),
    ) -> SliceSet:
        """Slices given in memory (e.g. by the napari widget); checks that each label fits its image.

        ``spacing``: pixel size (rows, cols) in mm, one for all slices or one per slice (a
        ``spacing_mm`` recipe resamples by it).
        """
        images, labels = [np.asarray(a) for a in images], [np.asarray(a) for a in labels]
        if len(images) != len(labels):
            raise InputError(f"{len(images)} image slices but {len(labels)} label slices")
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            _check_slice(image, label, f"slice {i}")
        images = [a[..., :3] if a.ndim == 3 else a for a in images]  # reason: RGBA alpha is not image content
        n = len(images)
        return cls(
            images=images,
            labels=[label.astype(np.int64) for label in labels],
            groups=[group] * n,
            names=[f"{group}[{i}]" for i in range(n)],
            spacing=_per_slice_spacing(spacing, n),
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


def _per_slice_spacing(spacing: tuple[float, float] | Sequence[tuple[float, float]], n: int) -> list[tuple[float, float]]:
    values = np.asarray(spacing, dtype=np.float64)
    if n == 0:
        return []
    if values.shape == (2,):
        return [(float(values[0]), float(values[1]))] * n
    if values.shape != (n, 2) or not np.all(values > 0):
        raise InputError(f"spacing must be (rows, cols) in mm or one such pair per slice ({n}), got shape {values.shape}")
    return [(float(r), float(c)) for r, c in values]


def _check_slice(image: np.ndarray, label: np.ndarray, where: str) -> None:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"{where}: image must be (H, W) or (H, W, 3), got shape {image.shape}")
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise InputError(f"{where}: label shape {label.shape} does not match image shape {image.shape[:2]}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise InputError(f"{where}: labels must be integer class ids, got dtype {label.dtype}")
    if label.size and label.min() < 0:
        raise InputError(f"{where}: labels must be >= 0, got {label.min()}")


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

    Both are read with :func:`braunet.io.read_image`, the labels taken on the image's voxel grid
    (:func:`braunet.train.pairs.label_on_image_grid`: another axis order or direction is undone
    exactly, another grid refused), and turned to the closest RAS+ orientation
    (:func:`braunet.io.to_canonical`); slice ``k`` is ``canonical[:, :, k]`` (axis 2 = inferior to
    superior), laid out in the model's ``view`` (:mod:`braunet.infer.views`: ``"radiological"`` as
    the official Synapse slices, or ``"ras"``).

    Args:
        slices: canonical axial indices to keep (default all).
        known_classes: the classes annotated in this label file when it is partial (see
            :class:`SliceSet`); None means every class of the model was annotated.
        group: split group (default: the image file's stem).
    """
    from braunet.infer.engine import check_ct_modality
    from braunet.infer.views import to_view, view_spacing

    image_path, label_path = Path(image_path), Path(label_path)
    image, label = read_image(image_path), read_image(label_path)
    if image.is_2d or image.array.ndim != 3:
        raise InputError(f"{image_path}: expected a 3-D volume, got shape {image.array.shape}")
    check_ct_modality(image, "the volume models train and fine-tune on")
    on_grid = label_on_image_grid(image, label, image_path, label_path)  # exactly, or refused
    image_ras, reorientation = to_canonical(image)
    label_ras = reorientation.apply(on_grid)
    labels = mask_to_labels(label_ras, num_classes, str(label_path), kind="label_map")
    affine = np.asarray(reorientation.canonical_affine)
    spacing = view_spacing(affine, view)  # (rows, cols) of the view
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


def load_image_pair(
    image_path: str | os.PathLike, mask_path: str | os.PathLike, *, num_classes: int, group: str | None = None
) -> SliceSet:
    """One 2-D image (grey or RGB) and its mask file."""
    image_path, mask_path = Path(image_path), Path(mask_path)
    image, mask = read_image(image_path), read_image(mask_path)
    array = np.asarray(image.array)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # reason: PNG alpha carries no image content
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError(f"{image_path}: expected a 2-D grey or RGB image, got shape {array.shape}")
    labels = mask_to_labels(mask.array, num_classes, str(mask_path), kind="image")
    if labels.shape != array.shape[:2]:
        raise InputError(f"{mask_path}: mask shape {labels.shape} differs from the image's {array.shape[:2]}")
    spacing = tuple(float(s) for s in image.spacing[:2]) if getattr(image, "spacing", None) is not None else (1.0, 1.0)
    return SliceSet(
        images=[array], labels=[labels], groups=[group or file_stem(image_path)], names=[image_path.name],
        spacing=[spacing], known=[None], depth_mm=[None],
    )


def load_pairs(
    pairs: Sequence[tuple[Path, Path]], *, num_classes: int, view: str = "radiological"
) -> SliceSet:
    """Read every pair (volumes as axial slices, 2-D images as one slice each) into one SliceSet."""
    out = SliceSet()
    for image_path, label_path in pairs:
        if is_volume_path(image_path):
            out = out + load_volume_pair(image_path, label_path, num_classes=num_classes, view=view)
        else:
            out = out + load_image_pair(image_path, label_path, num_classes=num_classes)
    if not len(out):
        raise InputError("no labelled slices found")
    return out


@dataclass(frozen=True)
class WindowedCT:
    """An 8-bit windowed CT slice source: how its values map to HU and what it annotates.

    Attributes:
        name: short name, prefixed to the groups (``"curvas-10001"``).
        window_hu: (low, high): value 0 stands for ``low`` HU and 255 for ``high`` (linear).
        spacing_mm: the in-plane pixel size assumed for the slices (they carry none).
        known: the synapse8 class ids the set annotates (the others are unannotated).
        subject_pattern: regular expression whose first group, searched in the file stem, is the subject.
    """

    name: str
    window_hu: tuple[float, float]
    spacing_mm: float
    known: tuple[int, ...]
    subject_pattern: str

    def to_hu(self, values: np.ndarray) -> np.ndarray:
        """8-bit values (H, W) -> float32 HU (H, W)."""
        low, high = self.window_hu
        return (low + np.asarray(values, dtype=np.float32) * ((high - low) / 255.0)).astype(np.float32)

    def subject(self, path: Path) -> str:
        match = re.search(self.subject_pattern, file_stem(path))
        if match is None:
            raise InputError(f"{path}: the file name does not name a {self.name} subject ({self.subject_pattern})")
        return f"{self.name}-{match.group(1)}"


CURVAS_SLICES = WindowedCT("curvas", (0.0, 255.0), 0.8, (3, 4, 5, 6), r"^(\d+)_")
MSD_SPLEEN_SLICES = WindowedCT("msd", (0.0, 255.0), 0.8, (7,), r"(spleen_\d+)$")


def check_sides(label: np.ndarray, where: str) -> None:
    """Refuse a synapse8 label map (H, W) in the radiological view that looks mirrored left-right.

    The patient's right is on the picture's left: the liver's centroid lies left of the middle, the
    spleen's right of it, and the right kidney (4) left of the left kidney (3).
    """
    width = label.shape[1]

    def column(c: int) -> float | None:
        cols = np.nonzero(label == c)[1]
        return float(cols.mean()) if cols.size else None

    liver, spleen, left, right = column(5), column(7), column(3), column(4)
    mirrored = (
        (liver is not None and liver > width / 2)
        or (spleen is not None and spleen < width / 2)
        or (left is not None and right is not None and right > left)
    )
    if mirrored:
        raise InputError(f"{where}: the labels look mirrored left-right (liver, spleen or kidney on the wrong side "
                         "of the picture); give slices in the radiological view")  # fmt: skip


def load_windowed_pairs(
    pairs: Sequence[tuple[Path, Path]], source: WindowedCT, *, view: str = "radiological"
) -> SliceSet:
    """8-bit windowed CT slices (grey or equal-channel RGB PNG/JPEG, radiological display) and their
    synapse8 label maps -> HU slices with the source's assumed spacing and annotated classes.

    Raises:
        InputError: a label map that is not synapse8 ids, on another grid, with classes the source
            does not annotate, or mirrored (:func:`check_sides`).
    """
    from braunet.infer.views import convert_view

    out = SliceSet()
    for image_path, label_path in pairs:
        image_path, label_path = Path(image_path), Path(label_path)
        values = np.asarray(read_image(image_path).array)
        if values.ndim == 3:
            values = values[..., 0]  # reason: the exports are grey stored as identical RGB channels
        label = mask_to_labels(np.asarray(read_image(label_path).array), 9, str(label_path), kind="label_map")
        if label.ndim == 3:
            label = label[..., 0]
        _check_slice(values, label, str(label_path))
        extra = sorted(set(np.unique(label).tolist()) - {0, *source.known})
        if extra:
            raise InputError(f"{label_path}: classes {extra} are not annotated in {source.name} ({source.known})")
        check_sides(label, str(label_path))
        hu = convert_view(source.to_hu(values)[None], "radiological", view)[0]
        label = convert_view(label[None], "radiological", view)[0]
        out = out + SliceSet(
            images=[np.ascontiguousarray(hu)], labels=[np.ascontiguousarray(label)],
            groups=[source.subject(image_path)], names=[f"{source.name}:{image_path.parent.parent.name}/{image_path.name}"],
            spacing=[(source.spacing_mm, source.spacing_mm)], known=[source.known], depth_mm=[None],
        )  # fmt: skip
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
