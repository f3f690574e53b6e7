"""Real sample data: one abdominal CT, one dermoscopy image and one colonoscopy frame, with labels.

The files are fetched on first use from their public sources, each URL pinned to a git commit and
each file to a sha256, and cached by pooch (``pooch.os_cache("napari-braunet")``). Machines without
network (tests, CI, clinics) set ``BRAUNET_DATA_DIR`` to a folder laid out like the project's shared
data folder (``totalseg_ct/``, ``isic2016_crops/``, ``cvc_clinicdb/``); the same hashes are checked
there, so both routes give identical arrays.

Samples (``list_samples()``), each naming the bundled model that segments it (``default_model``):

* ``ct_abdomen`` - TotalSegmentator's example CT (Apache-2.0), 122 x 101 x 112 voxels of 3 mm, with
  the 8 Synapse organs derived from TotalSegmentator v1's 104-class prediction (silver standard);
  ``ct-abdomen-8``.
* ``dermoscopy`` - ISIC 2016 test image ISIC_0000198 (CC-0), 512 x 512 centre crop, lesion mask;
  ``skin-lesion``.
* ``colonoscopy`` - CVC-ClinicDB frame 139 (sequence 7), polyp mask; research and education use only,
  commercial use forbidden by the dataset's licence; ``polyp``.

2-D masks are binarised with :func:`braunet.train.masks.mask_to_labels` (``kind="image"``:
``value > 127``), as the datasets' own binarised copies are.

Example::

    from braunet.samples import load_sample
    sample = load_sample("ct_abdomen")
    sample.image.array.shape, sample.labels.shape   # (122, 101, 112) twice, same voxel grid
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from braunet.classes import (
    LESION_CLASSES,
    LESION_COLORS,
    POLYP_CLASSES,
    POLYP_COLORS,
    SYNAPSE8_CLASSES,
    SYNAPSE8_COLORS,
)
from braunet.errors import InputError

if TYPE_CHECKING:
    from braunet.io import Volume

__all__ = [
    "DATA_DIR_ENV",
    "SAMPLES",
    "LoadedSample",
    "RemoteFile",
    "Sample",
    "fetch",
    "list_samples",
    "load_sample",
    "synapse8_from_totalseg_v1",
    "voxel_digest",
]

DATA_DIR_ENV = "BRAUNET_DATA_DIR"

# TotalSegmentator v1 class values (tests/reference_files/example_seg.nii.gz at commit 5de6e4d) of the
# Synapse organs; see the shared data's labels.json, map "v1_class_map_commit_5de6e4d".
_TOTALSEG_V1_VALUE = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "liver": 5, "stomach": 6, "aorta": 7,
    "pancreas": 10,
}


@dataclass(frozen=True)
class RemoteFile:
    """One pinned file: where it lives upstream and in a local data folder, and how to verify it.

    ``sha256`` pins the file's bytes. ``voxel_sha256`` pins the decoded label voxels instead (see
    :func:`voxel_digest`), for a file whose local copy was re-encoded (different bytes, same voxels).
    """

    url: str
    local: str  # path relative to a BRAUNET_DATA_DIR folder
    sha256: str | None = None
    voxel_sha256: str | None = None


@dataclass(frozen=True)
class Sample:
    """A registered sample: its files, classes, licence, how to cite it, and the bundled model for it.

    ``default_model`` names the bundled model (``braunet.zoo``) trained for this kind of image; the
    default-model rule reads it rather than keeping its own map.
    """

    key: str
    display_name: str
    kind: str  # "ct" (3-D NIfTI) or "rgb" (2-D image)
    image: RemoteFile
    labels: RemoteFile
    class_names: list[str]
    class_colors: list[str]
    default_model: str
    licence: str
    description: str
    citation: str = ""
    extra: dict = field(default_factory=dict)


_TS = "https://raw.githubusercontent.com/wasserth/TotalSegmentator"
_ISIC = (
    "https://raw.githubusercontent.com/gangchen53/unet_pytorch/987dc2bd8179c99481fd4332e8355ea33b77e464/"
    "results/U-Net/cross_entropy_loss/visualization/testset"
)
_CVC = (
    "https://raw.githubusercontent.com/binhnam2907/Polyp-segmentation/8c27d81e64009afc418366700134b073e8776191/"
    "dataset"
)

SAMPLES: dict[str, Sample] = {
    "ct_abdomen": Sample(
        key="ct_abdomen",
        display_name="Abdominal CT with 8 organ labels (TotalSegmentator example, Apache-2.0)",
        kind="ct",
        image=RemoteFile(
            url=f"{_TS}/0e65a448d557382b1e925276212b3bec7f5aff83/tests/reference_files/example_ct.nii.gz",
            local="totalseg_ct/case01_ct.nii.gz",
            sha256="dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
        ),
        labels=RemoteFile(
            url=f"{_TS}/5de6e4dcf702d525e0b2813683575b2c9e998aee/tests/reference_files/example_seg.nii.gz",
            local="totalseg_ct/case01_seg_totalseg_v1.nii.gz",
            voxel_sha256="733736f1d5ce7c7fb7c209179bb93b0c46faf57b0cae2719b467ed9c961ff7b9",
        ),
        class_names=SYNAPSE8_CLASSES,
        class_colors=SYNAPSE8_COLORS,
        default_model="ct-abdomen-8",
        licence="Apache-2.0 (wasserth/TotalSegmentator repository)",
        description=(
            "Contrast-enhanced abdominal CT, 122 x 101 x 112 voxels of 3 mm (pelvis to upper abdomen). Labels: the 8 "
            "Synapse organs picked from TotalSegmentator v1's prediction (model output, a silver standard)."
        ),
        citation="Wasserthal et al., TotalSegmentator, Radiology: AI 2023",
    ),
    "dermoscopy": Sample(
        key="dermoscopy",
        display_name="Dermoscopy image with lesion mask (ISIC 2016, CC-0)",
        kind="rgb",
        image=RemoteFile(
            url=f"{_ISIC}/52_image.jpg",
            local="isic2016_crops/images/ISIC_0000198.jpg",
            sha256="f80e52747c98640e29d3f820e63b95b0252b09d06c4b332f696c6e0ca51d3c6f",
        ),
        labels=RemoteFile(
            url=f"{_ISIC}/52_label.jpg",
            local="isic2016_crops/masks_original_jpg/ISIC_0000198.jpg",
            sha256="f6a385f179ef67da9c18213386036dc839bcdafb712cd8990d255ac949940cc2",
        ),
        class_names=LESION_CLASSES,
        class_colors=LESION_COLORS,
        default_model="skin-lesion",
        licence="CC-0 (ISIC 2016 challenge data)",
        description="ISIC 2016 test image ISIC_0000198, 512 x 512 centre crop; ground-truth lesion mask (JPEG, >127).",
        citation="Gutman et al. 2016, arXiv:1605.01397",
    ),
    "colonoscopy": Sample(
        key="colonoscopy",
        display_name="Colonoscopy frame with polyp mask (CVC-ClinicDB; non-commercial research/education use only)",
        kind="rgb",
        image=RemoteFile(
            url=f"{_CVC}/images/139.tif",
            local="cvc_clinicdb/images/139.tif",
            sha256="4d703296448968fc2950c2457f29dbcd4945eab574638a8ef85aecc88b98eee4",
        ),
        labels=RemoteFile(
            url=f"{_CVC}/masks/139.tif",
            local="cvc_clinicdb/masks/139.tif",
            sha256="63c26e6e40180e6adfc38f82709a0ad9e0820518bc30c63bd1b5dad5dbbe36b6",
        ),
        class_names=POLYP_CLASSES,
        class_colors=POLYP_COLORS,
        default_model="polyp",
        licence=(
            "CVC-ClinicDB: research and educational use only, commercial use forbidden; images (c) Hospital Clinic "
            "Barcelona, ground truth (c) Computer Vision Center Barcelona"
        ),
        description="CVC-ClinicDB frame 139 (video sequence 7), 384 x 288, with its ground-truth polyp mask (>127).",
        citation="Bernal et al. 2015, Computerized Medical Imaging and Graphics 43:99-111",
    ),
}


@dataclass(frozen=True)
class LoadedSample:
    """A sample read into memory.

    Attributes:
        image: the image as read by :func:`braunet.io.read_image` (3-D (I, J, K) HU with its affine, or
            2-D (H, W, 3) RGB).
        labels: uint8 label map on the image's grid: (I, J, K) or (H, W); values index ``sample.class_names``.
    """

    sample: Sample
    image: Volume
    labels: np.ndarray


def list_samples() -> list[str]:
    return list(SAMPLES)


def _sample(key: str) -> Sample:
    try:
        return SAMPLES[key]
    except KeyError:
        raise InputError(f"unknown sample {key!r}; known samples: {', '.join(SAMPLES)}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def voxel_digest(array: np.ndarray) -> str:
    """sha256 of an integer label map's content: ``b"uint8" + repr(shape) + C-order uint8 bytes``.

    Independent of the file's encoding (the float64 upstream file and a uint8 re-save agree).

    Raises:
        InputError: values that are not integers in 0..255.
    """
    values = np.asarray(array)
    as_uint8 = values.astype(np.uint8)
    if not np.array_equal(as_uint8, values):
        raise InputError("label map has values that are not integers in 0..255")
    digest = hashlib.sha256(b"uint8" + repr(tuple(values.shape)).encode())
    digest.update(np.ascontiguousarray(as_uint8).tobytes())
    return digest.hexdigest()


def _data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise InputError(f"{DATA_DIR_ENV}={value}: not a folder")
    return folder


def _fetch_file(remote: RemoteFile) -> Path:
    """Local path of one pinned file: from BRAUNET_DATA_DIR if set, else downloaded/cached by pooch."""
    folder = _data_dir()
    if folder is not None:
        path = folder / remote.local
        if not path.is_file():
            raise InputError(f"{path}: sample file missing in {DATA_DIR_ENV} folder {folder}")
        if remote.sha256 and _sha256(path) != remote.sha256:
            raise InputError(f"{path}: sha256 differs from the pinned {remote.sha256[:12]}... (modified copy?)")
        return path
    import pooch

    cache = pooch.os_cache("napari-braunet")
    fname = "_".join(remote.url.split("/")[3:5] + [remote.url.split("/")[5][:8]] + [Path(remote.local).name])
    known = f"sha256:{remote.sha256}" if remote.sha256 else None
    try:
        return Path(pooch.retrieve(remote.url, known_hash=known, fname=fname, path=cache, progressbar=False))
    except ValueError as error:  # pooch: hash mismatch
        raise InputError(f"{remote.url}: downloaded file failed verification ({error})") from None
    except OSError as error:  # requests' errors derive from OSError
        raise InputError(
            f"{remote.url}: download failed ({error}); offline machines can set {DATA_DIR_ENV} to a local copy"
        ) from None


def fetch(key: str) -> dict[str, Path]:
    """Paths of a sample's image and label files (downloaded and verified on first use)."""
    sample = _sample(key)
    return {"image": _fetch_file(sample.image), "labels": _fetch_file(sample.labels)}


def synapse8_from_totalseg_v1(seg: np.ndarray) -> np.ndarray:
    """Map a TotalSegmentator v1 (104-class) label map to the Synapse-8 order; other structures become 0.

    seg: integer label map of any shape -> uint8 map of the same shape.
    """
    seg = np.asarray(seg)
    out = np.zeros(seg.shape, np.uint8)
    for value, name in enumerate(SYNAPSE8_CLASSES):
        if value:
            out[seg == _TOTALSEG_V1_VALUE[name]] = value
    return out


def load_sample(key: str) -> LoadedSample:
    """Fetch (if needed), verify and read a sample; labels are on the image's voxel grid."""
    import nibabel as nib

    from braunet.io import read_image
    from braunet.train.masks import mask_to_labels

    sample = _sample(key)
    paths = fetch(key)
    image = read_image(paths["image"])
    if sample.kind == "ct":
        seg_image = nib.load(paths["labels"])
        seg = np.asarray(seg_image.dataobj)
        digest = voxel_digest(seg)
        if digest != sample.labels.voxel_sha256:
            if _data_dir() is None:  # reason: a bad download must not stay in the cache
                paths["labels"].unlink(missing_ok=True)
            raise InputError(
                f"{paths['labels']}: label voxels differ from the pinned content digest "
                f"{sample.labels.voxel_sha256[:12]}... (got {digest[:12]}...)"
            )
        if seg.shape != image.array.shape or not np.allclose(seg_image.affine, image.affine, atol=1e-4):
            raise InputError(f"{paths['labels']}: label grid differs from the CT's {image.array.shape}")
        labels = synapse8_from_totalseg_v1(seg)
    else:
        mask = read_image(paths["labels"]).array
        labels = mask_to_labels(mask, 1, str(paths["labels"]), kind="image").astype(np.uint8)
        if labels.shape != image.array.shape[:2]:
            raise InputError(f"{paths['labels']}: mask shape {labels.shape} differs from the image's")
    return LoadedSample(sample=sample, image=image, labels=labels)
