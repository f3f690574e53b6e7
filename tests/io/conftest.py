"""Fixtures for the IO tests: real volumes from the shared data, and a no-side-effect checker."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest

from braunet.errors import BraunetError
from braunet.io import Volume, read_image


@pytest.fixture(scope="session")
def ct_path(shared_data: Path) -> Path:
    """Real abdominal CT, 122x101x30, 3 mm, RAS, int16 HU, qform and sform code 1."""
    return shared_data / "totalseg_ct" / "case01sm_ct.nii.gz"


@pytest.fixture(scope="session")
def ct(ct_path: Path) -> Volume:
    return read_image(ct_path)


@pytest.fixture(scope="session")
def ct_labels(shared_data: Path) -> np.ndarray:
    """The Synapse-8 label map of ``ct`` (uint8, values 0..8)."""
    return read_image(shared_data / "totalseg_ct" / "case01sm_label_synapse8.nii.gz").array


@pytest.fixture(scope="session")
def dicom_dir(shared_data: Path) -> Path:
    """Three contiguous axial CT slices (GE, 512x512, 1 mm apart, SliceThickness 1.25 mm)."""
    return shared_data / "dcmqi_ct" / "ct_dicom"


def file_state(paths: Iterable[Path]) -> dict[str, str]:
    """``{file path: sha256}`` of every file at or below ``paths``: compare before and after a call."""
    state = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture
def refuses(tmp_path: Path) -> Callable[..., BraunetError]:
    """``refuses(call, error_type, match, *watched, names=path)``: run ``call()``, expect a one-line
    ``"PATH: problem"`` error (starting with ``names`` when given), and check that nothing under
    ``tmp_path`` or ``watched`` was written or changed."""

    def check(
        call: Callable[[], object],
        error_type: type[BraunetError],
        match: str,
        *watched: Path,
        names: Path | None = None,
    ) -> BraunetError:
        roots = [tmp_path, *(p for p in watched if p.exists())]
        before = file_state(roots)
        with pytest.raises(error_type, match=match) as info:
            call()
        message = str(info.value)
        assert "\n" not in message, message
        assert ": " in message, message
        if names is not None:
            assert message.startswith(f"{names}: "), message
        assert file_state(roots) == before, "a failed call wrote or changed files"
        return info.value

    return check
