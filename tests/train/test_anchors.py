"""Anchor sets (``anchors.npz``): the bundled ones load; damaged files fail in one line naming the file."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from braunet.errors import CheckpointError
from braunet.train.anchors import load_anchors, save_anchors
from braunet.zoo import bundled_dir


@pytest.fixture()
def anchors_file(tmp_path):
    """A copy of the bundled ``ct-abdomen-8`` anchor set (real CT slices)."""
    path = tmp_path / "anchors.npz"
    path.write_bytes((bundled_dir() / "ct-abdomen-8" / "anchors.npz").read_bytes())
    return path


def test_bundled_anchor_set_round_trips(anchors_file, tmp_path):
    slices = load_anchors(anchors_file)
    assert len(slices) >= 4 and all(label.dtype == np.int64 for label in slices.labels)
    again = load_anchors(save_anchors(tmp_path, slices))  # a folder holding anchors.npz
    for a, b in zip(slices.images, again.images, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("keep", [0, 22, 1000, 0.5, 0.99])
def test_truncated_anchor_set_is_refused_naming_the_file(anchors_file, keep):
    """A truncated zip raised zipfile.BadZipFile through ``braunet finetune`` (issue 12, item 9)."""
    data = anchors_file.read_bytes()
    anchors_file.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError) as error:
        load_anchors(anchors_file)
    assert str(error.value).startswith(f"{anchors_file}: unreadable anchor set (") and "\n" not in str(error.value)


def test_corrupt_compressed_member_is_refused(anchors_file):
    data = bytearray(anchors_file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # inside the deflated data of one member
    anchors_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="unreadable anchor set"):
        load_anchors(anchors_file)


def _npz(path, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "no image_<i> arrays"),
        ({"image_0": np.zeros((8, 8), np.int16)}, "label_0"),
        ({"image_0": np.zeros((8, 8), np.int16), "label_0": np.zeros((4, 8), np.uint8)}, "does not match"),
        ({"image_0": np.zeros((8, 8), np.int16), "label_0": np.zeros((8, 8), np.float32)}, "integer class ids"),
        ({"image_0": np.zeros((2, 8, 8, 3), np.uint8), "label_0": np.zeros((8, 8), np.uint8)}, "must be (H, W)"),
    ],
)
def test_anchor_set_with_wrong_arrays_is_refused(tmp_path, arrays, message):
    path = tmp_path / "anchors.npz"
    _npz(path, **arrays)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: unreadable anchor set")) as error:
        load_anchors(path)
    assert message in str(error.value)


def test_pickled_object_array_is_refused_without_running_code(tmp_path):
    path = tmp_path / "anchors.npz"
    _npz(path, image_0=np.array([object()], dtype=object), label_0=np.zeros((8, 8), np.uint8))
    with pytest.raises(CheckpointError, match="unreadable anchor set"):
        load_anchors(path)


def test_missing_file_and_non_zip(tmp_path):
    with pytest.raises(CheckpointError, match="no such anchor set"):
        load_anchors(tmp_path / "nope.npz")
    (tmp_path / "anchors.npz").write_text("not a zip")
    with pytest.raises(CheckpointError, match="unreadable anchor set"):
        load_anchors(tmp_path)
