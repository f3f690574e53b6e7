"""Augmentation: label safety, shapes, determinism, invertibility, the same transform everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from braunet.train.augment import (
    official_synapse_augment,
    random_affine,
    random_flip,
    random_rot90_flip,
    random_rotate,
)


def _labels_subset(out: np.ndarray, original: np.ndarray) -> bool:
    """True if ``out`` holds only values of ``original`` plus the background fill 0."""
    return set(np.unique(out)) <= set(np.unique(original)) | {0}


def _random_pair(rng: np.random.Generator, shape=(13, 17), channels: int | None = None):
    image_shape = shape if channels is None else (*shape, channels)
    return rng.random(image_shape).astype(np.float32), rng.integers(0, 9, shape)


# --- rot90 + flip --------------------------------------------------------------------------------


def test_rot90_flip_is_an_invertible_reflection_of_image_channels_and_label() -> None:
    base = np.arange(13 * 17, dtype=np.float64).reshape(13, 17)  # unique values: identifiable
    image = np.stack([base, 2 * base, 3 * base], axis=-1)
    label = base.astype(np.int64)
    seen = set()
    for seed in range(24):
        out_image, out_label = random_rot90_flip(image, label, np.random.default_rng(seed))
        matches = [
            (k, axis)
            for k in range(4)
            for axis in range(2)
            if np.array_equal(np.flip(np.rot90(label, k), axis), out_label)
        ]
        assert matches
        for k, axis in matches:  # invert: undo the flip, then the rotation
            np.testing.assert_array_equal(np.rot90(np.flip(out_label, axis), -k), label)
            np.testing.assert_array_equal(np.rot90(np.flip(out_image, axis), -k), image)
        assert out_image.flags.c_contiguous and out_label.flags.c_contiguous
        seen.add(out_label.tobytes())
    # a flip after a rotation is always a reflection: only 4 of the 8 symmetries of the square
    # occur, never the identity (as in the official random_rot_flip)
    assert len(seen) == 4
    assert label.tobytes() not in seen


def test_rot90_flip_draws_k_then_axis() -> None:
    image, label = _random_pair(np.random.default_rng(1))
    out_image, out_label = random_rot90_flip(image, label, np.random.default_rng(5))
    draws = np.random.default_rng(5)
    k, axis = int(draws.integers(0, 4)), int(draws.integers(0, 2))
    np.testing.assert_array_equal(out_label, np.flip(np.rot90(label, k), axis))


# --- rotation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_order", [0, 1, 3])
def test_rotate_keeps_labels_nearest_and_shape(image_order: int, ct_slice) -> None:
    image, label = ct_slice
    for seed in range(4):
        rng = np.random.default_rng(seed)
        out_image, out_label = random_rotate(image, label, rng, image_order=image_order)
        assert out_image.shape == image.shape and out_label.shape == label.shape
        assert out_image.dtype == image.dtype and out_label.dtype == label.dtype
        assert _labels_subset(out_label, label)


def test_rotate_order0_moves_image_and_label_together() -> None:
    rng = np.random.default_rng(2)
    label = rng.integers(1, 9, (31, 27))
    image = np.stack([label * 10.0, label * 20.0], axis=-1)  # each channel a function of the label
    out_image, out_label = random_rotate(image, label, np.random.default_rng(3), max_angle=40)
    assert (out_label == 0).any()  # the rotation really happened: zeros came in at the corners
    np.testing.assert_array_equal(out_image[..., 0], out_label * 10.0)
    np.testing.assert_array_equal(out_image[..., 1], out_label * 20.0)


def test_rotate_bilinear_treats_channels_alike() -> None:
    rng = np.random.default_rng(4)
    base = rng.random((20, 24)).astype(np.float32)
    image = np.stack([base, 3 * base], axis=-1)
    out_image, _ = random_rotate(image, np.zeros((20, 24), np.int64), rng, image_order=1)
    np.testing.assert_allclose(out_image[..., 1], 3 * out_image[..., 0], rtol=1e-5, atol=1e-6)


# --- official Synapse transform ------------------------------------------------------------------


@pytest.mark.parametrize("out_size", [224, (96, 128)])
def test_official_synapse_augment_on_a_real_ct_slice(out_size, ct_slice) -> None:
    image, label = ct_slice  # (122, 101), not square
    expected = (out_size, out_size) if isinstance(out_size, int) else out_size
    for seed in range(6):
        rng = np.random.default_rng(seed)
        out_image, out_label = official_synapse_augment(image, label, rng, out_size)
        assert out_image.shape == expected and out_label.shape == expected
        assert out_image.dtype == np.float32 and out_label.dtype == label.dtype
        assert _labels_subset(out_label, label)
        assert out_image.flags.c_contiguous and out_label.flags.c_contiguous


def test_official_synapse_augment_is_deterministic_for_a_seed(ct_slice) -> None:
    image, label = ct_slice
    first = official_synapse_augment(image, label, np.random.default_rng(7), 64)
    again = official_synapse_augment(image, label, np.random.default_rng(7), 64)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    outputs = {
        official_synapse_augment(image, label, np.random.default_rng(s), 64)[1].tobytes()
        for s in range(12)
    }
    assert len(outputs) > 3  # several branches and parameters were drawn


def test_official_synapse_augment_on_rgb() -> None:
    image, label = _random_pair(np.random.default_rng(8), shape=(40, 30), channels=3)
    out_image, out_label = official_synapse_augment(image, label, np.random.default_rng(9), 48)
    assert out_image.shape == (48, 48, 3) and out_label.shape == (48, 48)


# --- flips and affine for RGB frames -------------------------------------------------------------


def test_random_flip_probabilities_one_and_zero(cvc_frame) -> None:
    image, mask = cvc_frame
    out_image, out_mask = random_flip(image, mask, np.random.default_rng(0), 1.0, 1.0)
    np.testing.assert_array_equal(out_image, image[::-1, ::-1])
    np.testing.assert_array_equal(out_mask, mask[::-1, ::-1])
    out_image, out_mask = random_flip(image, mask, np.random.default_rng(0), 0.0, 0.0)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


@pytest.mark.parametrize("mode", ["mirror", "constant"])
def test_random_affine_on_a_real_endoscopy_frame(mode: str, cvc_frame) -> None:
    image, mask = cvc_frame
    rng = np.random.default_rng(1)
    out_image, out_mask = random_affine(image, mask, rng, shift_limit=0.1, mode=mode)
    assert out_image.shape == image.shape and out_image.dtype == np.uint8
    assert out_mask.shape == mask.shape and set(np.unique(out_mask)) <= {0, 1}
    assert not np.array_equal(out_mask, mask)


def test_random_affine_moves_image_and_label_together() -> None:
    rng = np.random.default_rng(5)
    label = rng.integers(0, 5, (33, 41))
    out_image, out_label = random_affine(
        label.astype(np.float64), label, rng, image_order=0, shift_limit=0.2
    )
    np.testing.assert_array_equal(out_image, out_label.astype(np.float64))


def test_random_affine_with_zero_limits_is_the_identity(cvc_frame) -> None:
    image, mask = cvc_frame
    out_image, out_mask = random_affine(
        image, mask, np.random.default_rng(0), shift_limit=0, scale_limit=0, rotate_limit=0
    )
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


# --- validation ----------------------------------------------------------------------------------


def test_input_errors() -> None:
    image, label = _random_pair(np.random.default_rng(0))
    with pytest.raises(ValueError, match="label must be"):
        random_flip(image, label[:, :5], np.random.default_rng(0))
    with pytest.raises(ValueError, match="image must be"):
        random_flip(image[None, None], label, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        random_flip(image, label, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_size"):
        official_synapse_augment(image, label, np.random.default_rng(0), (0, 4))
    with pytest.raises(ValueError, match="scale_limit"):
        random_affine(image, label, np.random.default_rng(0), scale_limit=1.0)
