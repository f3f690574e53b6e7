"""The preprocessing recipe: official numbers, scipy-exact spline zoom, views and windows."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from braunet.errors import CheckpointError, InputError
from braunet.infer import (
    ISIC_RGB,
    SYNAPSE_CT,
    apply_window,
    convert_view,
    convert_view_points,
    from_view,
    get_window,
    parse_preprocessing,
    preprocess_slices,
    resize_labels,
    to_view,
)
from braunet.infer.resize import nearest_indices


@pytest.fixture(scope="module")
def ct(data_dir) -> np.ndarray:
    return np.asarray(nib.load(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz").dataobj)  # (122, 101, 30) int16


def official_ct_slice(hu: np.ndarray, size: int) -> np.ndarray:
    """The official Synapse test path, written out: clip, scale, zoom(order=3), (x - 0.5) / 0.5."""
    x = (np.clip(hu.astype(np.float32), -125, 275) + 125) / 400
    x = ndimage.zoom(x, (size / x.shape[0], size / x.shape[1]), order=3)
    return (x - 0.5) / 0.5


@pytest.mark.parametrize("size", [224, 128, 64])
def test_ct_recipe_equals_official_zoom_on_real_ct(ct, size):
    raw = to_view(ct, [0, 13, 29], "radiological")
    before = raw.copy()
    x = preprocess_slices(raw, SYNAPSE_CT, size)
    assert np.array_equal(raw, before)  # the caller's slices are not modified in place
    assert x.shape == (3, 1, size, size) and x.dtype == torch.float32
    expected = np.stack([official_ct_slice(s, size) for s in raw])
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=2e-6)


def test_ct_recipe_equals_official_zoom_on_512_slices_including_scipys_zero_edge(data_dir):
    """512 -> 224: scipy's zoom maps the last output row/column just past the input and returns 0
    there (so -1 after normalisation); the official pipeline has that quirk and so do we."""
    dicom = np.asarray(nib.load(data_dir / "dcmqi_ct" / "case03_ct.nii.gz").dataobj)  # (512, 512, 3)
    raw = to_view(dicom, [0, 2], "radiological")
    x = preprocess_slices(raw, SYNAPSE_CT, 224)
    expected = np.stack([official_ct_slice(s, 224) for s in raw])
    assert np.all(expected[:, -1, :] == -1) and np.all(expected[:, :, -1] == -1)
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=2e-6)


def test_ct_recipe_skips_zoom_at_model_size_and_clips_hu():
    raw = np.full((2, 32, 32), 1000, dtype=np.int16)
    raw[1] = -1000
    x = preprocess_slices(raw, SYNAPSE_CT, 32)
    assert torch.all(x[0] == 1.0) and torch.all(x[1] == -1.0)  # 275 HU -> 1 -> +1; -125 HU -> 0 -> -1


def test_named_window_equals_its_hu_range():
    raw = np.random.default_rng(0).integers(-1000, 1500, size=(2, 40, 50)).astype(np.int16)
    by_name = preprocess_slices(raw, {"kind": "ct", "window": "liver", "mean": 0.5, "std": 0.5}, 64)
    by_range = preprocess_slices(raw, {"kind": "ct", "clip_hu": [-45, 105], "mean": 0.5, "std": 0.5}, 64)
    torch.testing.assert_close(by_name, by_range, rtol=0, atol=0)


def test_rgb_recipe_normalises_per_channel_and_resizes_bilinear(data_dir):
    import tifffile

    image = tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")  # (288, 384, 3) uint8
    x = preprocess_slices(image[None], ISIC_RGB, 256)
    assert x.shape == (1, 3, 256, 256)
    flat = np.full((1, 20, 30, 3), (10, 128, 250), dtype=np.uint8)
    y = preprocess_slices(flat, ISIC_RGB, 64)
    expected = (np.array([10, 128, 250]) / 255 - np.array(ISIC_RGB["mean"])) / np.array(ISIC_RGB["std"])
    np.testing.assert_allclose(y[0].mean(dim=(1, 2)).numpy(), expected, atol=1e-5)
    assert float(y.std(dim=(2, 3)).max()) < 1e-5
    # bilinear half-pixel, no anti-aliasing (cv2.INTER_LINEAR): a 2x downscale averages 2x2 blocks
    ramp = np.repeat(np.arange(64, dtype=np.uint8)[None, :, None], 64, axis=0)[None].repeat(3, axis=-1)
    z = preprocess_slices(ramp, {"kind": "rgb", "mean": 0, "std": 1}, 32)
    np.testing.assert_allclose(z[0, 0, 0].numpy() * 255, np.arange(32) * 2 + 0.5, atol=1e-4)


def test_grey_image_is_repeated_to_rgb():
    grey = np.arange(16 * 16, dtype=np.uint8).reshape(1, 16, 16)
    x = preprocess_slices(grey, ISIC_RGB, 32)
    channels = x * torch.tensor(ISIC_RGB["std"]).view(1, 3, 1, 1) + torch.tensor(ISIC_RGB["mean"]).view(1, 3, 1, 1)
    torch.testing.assert_close(channels[:, 0], channels[:, 2])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "mri"}, "kind"),
        ({"kind": "ct", "mean": 0.5, "std": 0.5}, "clip_hu"),
        ({"kind": "ct", "clip_hu": [300, 100]}, "upper"),
        ({"kind": "ct", "window": "knee"}, "knee"),
        ({"kind": "rgb", "std": [1, 0, 1]}, "std"),
        ({"kind": "ct", "clip_hu": [0, 1], "view": "sideways"}, "view"),
        ({"kind": "ct", "clip_hu": [0, 1], "resize": "lanczos"}, "resize"),
    ],
)
def test_bad_recipes_are_refused_with_the_field(spec, message):
    with pytest.raises(CheckpointError, match=message):
        parse_preprocessing(spec, "card.json")


def test_wrong_slice_shapes_are_refused():
    with pytest.raises(InputError, match=r"\(B, H, W\)"):
        preprocess_slices(np.zeros((2, 8, 8, 3)), SYNAPSE_CT, 32)
    with pytest.raises(InputError, match=r"\(B, H, W, 3\)"):
        preprocess_slices(np.zeros((2, 8, 8, 4), np.uint8), ISIC_RGB, 32)


def test_radiological_view_puts_anterior_up_and_patient_right_left(ct):
    """In the canonical (RAS) array i grows to the Right and j Anteriorly; the view is (J, I)."""
    marker = np.zeros((5, 4, 2), np.int16)  # I=5 (x), J=4 (y), K=2
    marker[4, 3, 1] = 1  # most Right, most Anterior voxel
    view = to_view(marker, [1], "radiological")
    assert view.shape == (1, 4, 5)
    assert view[0, 0, 0] == 1  # top row (anterior), left column (patient right)
    for view_name in ("radiological", "ras"):
        stack = to_view(ct, range(ct.shape[2]), view_name)
        assert np.array_equal(from_view(stack, view_name), ct)


def test_one_flip_converts_between_views_slices_and_points(ct):
    """A radiological slice (what napari shows) -> the "ras" slice a model may want, and back."""
    indices = [2, 11]
    radiological, ras = to_view(ct, indices, "radiological"), to_view(ct, indices, "ras")
    assert np.array_equal(convert_view(radiological, "radiological", "ras"), ras)
    assert np.array_equal(convert_view(ras, "ras", "radiological"), radiological)
    assert convert_view(ras, "ras", "ras") is ras
    rgb = np.random.default_rng(0).integers(0, 255, (1, 5, 7, 3), dtype=np.uint8)  # channels ride along
    assert np.array_equal(convert_view(convert_view(rgb, "radiological", "ras"), "ras", "radiological"), rgb)
    # every pixel centre lands where its value went
    rows, cols = np.meshgrid(np.arange(ct.shape[1]), np.arange(ct.shape[0]), indexing="ij")
    points = np.stack([rows, cols], axis=-1).reshape(-1, 2)  # (r, c) on the (J, I) radiological slice
    moved = convert_view_points(points, radiological.shape[1:], "radiological", "ras").astype(int)
    assert np.array_equal(ras[0][moved[:, 0], moved[:, 1]], radiological[0][points[:, 0], points[:, 1]])
    back = convert_view_points(moved, ras.shape[1:], "ras", "radiological")
    assert np.array_equal(back, points)
    with pytest.raises(ValueError, match="sideways"):
        convert_view(ras, "ras", "sideways")


def test_label_resize_is_the_official_order_0_zoom():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 9, size=(2, 224, 224)).astype(np.uint8)
    for shape in [(101, 122), (512, 512), (7, 300)]:
        ours = resize_labels(labels, shape, SYNAPSE_CT)
        official = np.stack([ndimage.zoom(s, (shape[0] / 224, shape[1] / 224), order=0) for s in labels])
        assert ours.shape == (2, *shape)
        assert np.mean(ours == official) > 0.999  # scipy breaks exact .5 ties by float rounding
    assert list(nearest_indices(4, 2, align_corners=False)) == [0, 0, 1, 1]


def test_windows():
    assert get_window("abdomen").limits == (-150.0, 250.0)
    assert get_window("Soft Tissue").name == "soft_tissue"
    assert get_window("synapse").limits == (-125.0, 275.0)
    for name in ("liver", "lung", "bone", "brain"):
        assert get_window(name).width > 0
    out = apply_window(np.array([-2000, -150, 50, 250, 3000]), "abdomen")
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="knee"):
        get_window("knee")
