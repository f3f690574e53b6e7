"""3-D clean-up on real label maps: the bundled CT model's slice-wise prediction and the shared reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from braunet.cleanup import clean_labels
from braunet.io import read_image

_FULL = ndimage.generate_binary_structure(3, 3)


def _pieces(mask: np.ndarray) -> list[int]:
    labelled, _ = ndimage.label(mask, structure=_FULL)
    return sorted(np.bincount(labelled.ravel())[1:].tolist(), reverse=True)


def _largest(mask: np.ndarray) -> np.ndarray:
    labelled, _ = ndimage.label(mask, structure=_FULL)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == sizes.argmax()


@pytest.fixture(scope="module")
def case01(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled ct-abdomen-8's labels on the shared 30-slice CT, and the reference labels."""
    from braunet.infer import predict
    from braunet.zoo import load_model

    folder = shared_data / "totalseg_ct"
    model, card = load_model("ct-abdomen-8", "cpu")
    prediction = predict(model, card, read_image(folder / "case01sm_ct.nii.gz"), batch_size=8)
    return prediction.labels, read_image(folder / "case01sm_label_synapse8.nii.gz").array


def test_largest_only_leaves_one_piece_per_organ_without_holes(case01) -> None:
    predicted, _ = case01
    before = predicted.copy()
    cleaned = clean_labels(predicted, min_fraction=1.0)
    np.testing.assert_array_equal(predicted, before)  # the input is not modified
    assert cleaned.dtype == predicted.dtype and cleaned.shape == predicted.shape
    assert any(len(_pieces(predicted == c)) > 1 for c in range(1, 9))  # the slice-wise prediction has islands
    for c in range(1, 9):
        mask = cleaned == c
        assert len(_pieces(mask)) == 1
        assert np.all(mask[_largest(predicted == c)])  # the largest piece is kept whole
        assert not (ndimage.binary_fill_holes(mask) & ~mask).any()
        # what an organ gains was background or a removed island of another organ
        gained = mask & (predicted != c) & (predicted != 0)
        assert not any(np.any(gained & _largest(predicted == other)) for other in range(1, 9) if other != c)


def test_default_keeps_large_pieces(shared_data: Path) -> None:
    """The reference pancreas of the shared 3 mm CT is two large pieces and two specks."""
    reference = read_image(shared_data / "totalseg_ct" / "case01_label_synapse8.nii.gz").array
    pieces = _pieces(reference == 6)
    assert len(pieces) == 4 and pieces[1] > 0.5 * pieces[0]
    assert _pieces(clean_labels(reference) == 6) == pieces[:2]
    assert _pieces(clean_labels(reference, min_fraction=1.0) == 6) == pieces[:1]
    assert np.array_equal(clean_labels(reference, min_fraction=0, fill_holes=False), reference)


def test_classes_and_holes(case01) -> None:
    _, reference = case01
    holed = reference.copy()
    liver = np.argwhere(reference == 5)
    centre = tuple(liver[len(liver) // 2])
    assert all(reference[tuple(np.add(centre, d))] == 5 for d in np.argwhere(_FULL) - 1)
    holed[centre] = 0  # a background voxel enclosed by liver
    np.testing.assert_array_equal(clean_labels(holed, min_fraction=0), clean_labels(reference, min_fraction=0))
    assert clean_labels(holed, classes=[5])[centre] == 5
    assert clean_labels(holed, classes=[1, 2])[centre] == 0  # the liver was not asked for


def test_refusals() -> None:
    with pytest.raises(ValueError, match="integer"):
        clean_labels(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ValueError, match="min_fraction"):
        clean_labels(np.zeros((4, 4, 4), np.uint8), min_fraction=2)
