"""Fixtures for the training-primitive tests: real arrays from ``shared_data`` (tests/conftest.py), read-only."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile


@pytest.fixture(scope="session")
def ct_synapse8(shared_data: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Real CT label map (122, 101, 30), Synapse order 0..8, and its spacing (3, 3, 3) mm."""
    img = nib.load(shared_data / "totalseg_ct" / "case01sm_label_synapse8.nii.gz")
    labels = np.asarray(img.dataobj).astype(np.int64)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return labels, spacing


@pytest.fixture(scope="session")
def ct_slice(shared_data: Path, ct_synapse8) -> tuple[np.ndarray, np.ndarray]:
    """One real axial slice: CT windowed to [-125, 275] HU and scaled to [0, 1] as TransUNet does
    (float32, (122, 101)), and its Synapse label slice (int64)."""
    ct = np.asarray(nib.load(shared_data / "totalseg_ct" / "case01sm_ct.nii.gz").dataobj)
    labels, _ = ct_synapse8
    image = ((np.clip(ct[:, :, 15], -125, 275) + 125) / 400).astype(np.float32)
    return image, labels[:, :, 15]


@pytest.fixture(scope="session")
def cvc_frame(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real CVC-ClinicDB frame: RGB uint8 (288, 384, 3) and its polyp mask as 0/1 uint8."""
    image = tifffile.imread(shared_data / "cvc_clinicdb" / "images" / "1.tif")
    mask = tifffile.imread(shared_data / "cvc_clinicdb" / "masks" / "1.tif")
    return image, (mask > 127).astype(np.uint8)
