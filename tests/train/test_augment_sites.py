"""Site-variation policies: label safety, identity, determinism, intensity apart from labels, colour, smoothness."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import color

from braunet.train.augment import (
    SITE_POLICIES,
    CTIntensityParams,
    GeometryParams,
    RGBColourParams,
    ct_intensity,
    random_warp,
    rgb_colour,
    site_augment,
)

NO_GEOMETRY = GeometryParams(p_affine=0.0, p_elastic=0.0)
NO_CT_INTENSITY = CTIntensityParams(p_window=0, p_gamma=0, p_blur=0, p_lowres=0, p_noise=0)
NO_COLOUR = RGBColourParams(p_colour=0, p_gamma=0, p_blur=0, p_noise=0)
IDENTITY_AFFINE = {"scale": (1.0, 1.0), "aspect": (1.0, 1.0), "rotate_deg": (0.0, 0.0), "shear": (0.0, 0.0),
                   "shift": (0.0, 0.0)}


def _labels_subset(out: np.ndarray, original: np.ndarray) -> bool:
    """True if ``out`` holds only values of ``original`` plus the background fill 0."""
    return set(np.unique(out)) <= set(np.unique(original)) | {0}


def _always(params, **ranges):
    """``params`` with every probability set to 1 and the given ranges."""
    probabilities = {f.name: 1.0 for f in dataclasses.fields(params) if f.name.startswith("p_")}
    return dataclasses.replace(params, **{**probabilities, **ranges})


def _components(label: np.ndarray) -> int:
    return sum(ndimage.label(label == c)[1] for c in np.unique(label) if c)


@pytest.fixture(scope="module")
def ct_net(ct_slice) -> tuple[np.ndarray, np.ndarray]:
    """The real CT slice as the dataset holds it: 224 x 224, the bundled recipe's units (-1 air .. 1 bone)."""
    image, label = ct_slice
    factors = (224 / image.shape[0], 224 / image.shape[1])
    x = ndimage.zoom(image, factors, order=3).astype(np.float32) * 2 - 1
    return x, ndimage.zoom(label, factors, order=0)


@pytest.fixture(scope="module")
def kvasir_frame(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real Kvasir-SEG image (529, 622, 3) uint8 and its 0/1 polyp mask."""
    folder = shared_data / "kvasir_seg"
    image = np.asarray(Image.open(folder / "images" / "cju0qkwl35piu0993l0dewei2.jpg").convert("RGB"))
    mask = np.asarray(Image.open(folder / "masks" / "cju0qkwl35piu0993l0dewei2.png"))
    return image, (mask > 127).astype(np.int64)


def _imagenet(frame: np.ndarray) -> np.ndarray:
    mean, std = np.array(SITE_POLICIES["rgb"].mean), np.array(SITE_POLICIES["rgb"].std)
    return ((frame / 255.0 - mean) / std).astype(np.float32)


# --- geometry --------------------------------------------------------------------------------------

SINGLE_WARPS = {
    "zoom in": {"scale": (1.4, 1.4)},
    "zoom out": {"scale": (0.7, 0.7)},
    "aspect": {"aspect": (0.8, 0.8)},
    "rotate": {"rotate_deg": (33.0, 33.0)},
    "shear": {"shear": (0.2, 0.2)},
    "shift": {"shift": (0.07, 0.07)},
}


@pytest.mark.parametrize("border", ["constant", "mirror", "nearest"])
@pytest.mark.parametrize("name", [*SINGLE_WARPS, "elastic", "flips"])
def test_every_warp_keeps_labels_shapes_and_dtypes(name: str, border: str, ct_slice) -> None:
    image, label = ct_slice
    if name == "elastic":
        params = GeometryParams(p_affine=0, p_elastic=1, elastic_rms=(0.02, 0.02), border=border)
    elif name == "flips":
        params = GeometryParams(p_flip_lr=1, p_flip_ud=1, p_affine=0, p_elastic=0, border=border)
    else:
        params = GeometryParams(p_affine=1, p_elastic=0, border=border, **{**IDENTITY_AFFINE, **SINGLE_WARPS[name]})
    out_image, out_label = random_warp(image, label, np.random.default_rng(3), params, fill=0.0)
    assert out_image.shape == image.shape and out_label.shape == label.shape
    assert out_image.dtype == image.dtype and out_label.dtype == label.dtype
    assert out_image.flags.c_contiguous and out_label.flags.c_contiguous
    assert _labels_subset(out_label, label)
    assert not np.array_equal(out_label, label)
    assert out_image.min() >= image.min() - 1e-6 and out_image.max() <= image.max() + 1e-6  # bilinear: no overshoot


def test_zoom_out_shrinks_every_organ_by_the_square_of_the_scale(ct_net) -> None:
    image, label = ct_net
    params = GeometryParams(p_affine=1, p_elastic=0, **{**IDENTITY_AFFINE, "scale": (0.8, 0.8)})
    _, out = random_warp(image, label, np.random.default_rng(0), params)
    for organ in (5, 7):  # liver, spleen: large enough for a 5 % area tolerance
        assert (out == organ).sum() / (label == organ).sum() == pytest.approx(0.64, rel=0.05)


def test_shift_moves_by_whole_pixels_exactly_and_fills_air_and_background() -> None:
    rng = np.random.default_rng(0)
    image, label = rng.random((100, 80)).astype(np.float32), rng.integers(1, 9, (100, 80))
    params = GeometryParams(p_affine=1, p_elastic=0, **{**IDENTITY_AFFINE, "shift": (0.1, 0.1)})
    out_image, out_label = random_warp(image, label, rng, params, fill=-1.0)
    np.testing.assert_allclose(out_image[10:, 8:], image[:-10, :-8], atol=1e-6)  # 0.1 x 100 rows, 0.1 x 80 cols
    np.testing.assert_array_equal(out_label[10:, 8:], label[:-10, :-8])
    assert np.all(out_image[:10] == -1.0) and np.all(out_label[:10] == 0)


def test_warp_treats_channels_alike_and_keeps_integer_images(cvc_frame) -> None:
    frame, mask = cvc_frame
    grey = np.repeat(frame[..., :1], 3, axis=-1)  # three identical channels stay identical
    params = dataclasses.replace(SITE_POLICIES["rgb"].geometry, p_affine=1.0, p_elastic=1.0)
    out, out_mask = random_warp(grey, mask, np.random.default_rng(2), params)
    assert out.dtype == np.uint8 and out_mask.dtype == mask.dtype
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert _labels_subset(out_mask, mask)


def test_elastic_field_is_smooth_on_a_real_organ_mask(ct_net) -> None:
    """Nearest-neighbour labels under the strongest allowed default field: organs stay in one piece
    (at most a thin part splits off), while a rough field of the same size shatters them."""
    image, label = ct_net
    before = _components(label)
    params = GeometryParams(p_affine=0, p_elastic=1, elastic_rms=(0.02, 0.02))  # the default at strength 2
    counts = [_components(random_warp(image, label, np.random.default_rng(s), params)[1]) for s in range(10)]
    assert max(counts) <= before + 4 and np.mean(counts) <= before + 1.5
    rough = np.indices(label.shape) + np.random.default_rng(0).normal(0, 0.02 * 224, (2, *label.shape))
    assert _components(ndimage.map_coordinates(label, rough, order=0)) > 10 * before  # what "explode" means


def test_elastic_field_that_could_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="fold"):
        GeometryParams(elastic_rms=(0.0, 0.05), elastic_sigma=0.08)
    with pytest.raises(ValueError, match="fold"):
        site_augment("ct", strength=3.0)
    site_augment("ct", strength=2.0)  # the documented limit of the defaults


# --- CT intensity ------------------------------------------------------------------------------------


def test_ct_window_and_gamma_follow_their_formulas(ct_net) -> None:
    image, _ = ct_net
    unit = (image + 1) / 2
    params = dataclasses.replace(NO_CT_INTENSITY, p_window=1.0, level=(0.1, 0.1), width=(1.25, 1.25))
    out = ct_intensity(image, np.random.default_rng(0), params)
    np.testing.assert_allclose((out + 1) / 2, np.clip((unit - 0.6) / 1.25 + 0.5, 0, 1), atol=1e-6)
    params = dataclasses.replace(NO_CT_INTENSITY, p_gamma=1.0, gamma=(1.5, 1.5))
    out = ct_intensity(image, np.random.default_rng(0), params)
    np.testing.assert_allclose((out + 1) / 2, np.clip(unit, 0, 1) ** 1.5, atol=1e-6)


def test_ct_noise_blur_and_low_resolution(ct_net) -> None:
    image, _ = ct_net

    def detail(x: np.ndarray) -> float:  # high-frequency energy: mean squared Laplacian
        return float(np.mean(ndimage.laplace(x.astype(np.float64)) ** 2))

    noisy = ct_intensity(image, np.random.default_rng(0), dataclasses.replace(
        NO_CT_INTENSITY, p_noise=1.0, noise_sigma=(0.04, 0.04)))
    inside = (image > -0.9) & (image < 0.9)  # away from the window's clipped ends
    assert np.std(((noisy - image) / 2)[inside]) == pytest.approx(0.04, rel=0.1)
    for step in ({"p_blur": 1.0, "blur_sigma": (1.0, 1.0)}, {"p_lowres": 1.0, "lowres": (0.5, 0.5)}):
        out = ct_intensity(image, np.random.default_rng(0), dataclasses.replace(NO_CT_INTENSITY, **step))
        assert out.shape == image.shape and out.dtype == image.dtype
        assert detail(out) < 0.5 * detail(image)
        assert abs(float(out.mean() - image.mean())) < 0.01  # blurred, not darkened


def test_ct_intensity_stays_in_the_window_and_treats_2p5d_channels_alike(ct_net) -> None:
    image, _ = ct_net
    params = _always(CTIntensityParams(), noise_sigma=(0.0, 0.0))  # noise is drawn per channel
    stack = np.stack([image] * 3, axis=-1)
    for seed in range(5):
        out = ct_intensity(stack, np.random.default_rng(seed), params)
        assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
        np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_ct_policy_on_hounsfield_units_keeps_int16() -> None:
    """Raw HU in, raw HU out: units chosen by mean = -low / span, std = 1 / span (module docstring)."""
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, (64, 64)).astype(np.int16)
    label = (hu > 0).astype(np.int64)
    policy = site_augment("ct", 1.0, mean=125 / 400, std=1 / 400)
    out, out_label = policy(hu, label, np.random.default_rng(4))
    assert out.dtype == np.int16 and out_label.dtype == np.int64
    assert out.min() >= -125 and out.max() <= 275  # the window: unit clipped to [0, 1]


# --- RGB colour --------------------------------------------------------------------------------------


@pytest.mark.parametrize("turns", [0.05, -0.05])
@pytest.mark.parametrize("frame", ["cvc_frame", "kvasir_frame"])
def test_hue_shift_keeps_luma_and_turns_hue(frame: str, turns: float, request) -> None:
    image, _ = request.getfixturevalue(frame)
    unit = image.astype(np.float32) / 255
    params = dataclasses.replace(
        NO_COLOUR, p_colour=1.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(turns, turns)
    )
    out = rgb_colour(unit, np.random.default_rng(0), params, mean=0.0, std=1.0)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(out @ luma - unit @ luma).mean() < 0.005  # exact but for the clipped pixels
    hsv_in, hsv_out = color.rgb2hsv(unit), color.rgb2hsv(out)
    weight = hsv_in[..., 1] * hsv_in[..., 2]  # hue is defined only where there is colour
    turned = np.exp(2j * np.pi * (hsv_out[..., 0] - hsv_in[..., 0]))
    measured = np.angle(np.sum(weight * turned)) / (2 * np.pi)
    assert np.sign(measured) == np.sign(turns) and abs(measured - turns) < 0.025  # YIQ and HSV hue differ a little


def test_saturation_and_contrast_zero_give_grey_and_flat_images(cvc_frame) -> None:
    image, _ = cvc_frame
    unit = image.astype(np.float32) / 255
    base = dataclasses.replace(NO_COLOUR, p_colour=1.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), hue=(0.0, 0.0))
    grey = rgb_colour(unit, np.random.default_rng(0), dataclasses.replace(base, saturation=(1e-9, 1e-9)), 0.0, 1.0)
    np.testing.assert_allclose(grey[..., 0], unit @ np.array([0.299, 0.587, 0.114]), atol=1e-4)
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)
    flat = rgb_colour(unit, np.random.default_rng(0), dataclasses.replace(base, contrast=(1e-9, 1e-9)), 0.0, 1.0)
    assert flat.std() < 1e-4 and flat.mean() == pytest.approx(float(np.mean(unit @ [0.299, 0.587, 0.114])), abs=1e-4)


def test_rgb_policy_on_uint8_and_on_imagenet_units(cvc_frame) -> None:
    frame, mask = cvc_frame
    policy8 = site_augment("rgb", mean=0.0, std=1 / 255)
    out, out_mask = policy8(frame, mask, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == frame.shape and _labels_subset(out_mask, mask)
    x = _imagenet(frame)
    out, _ = site_augment("rgb")(x, mask, np.random.default_rng(1))
    unit = out * np.array(SITE_POLICIES["rgb"].std) + np.array(SITE_POLICIES["rgb"].mean)
    assert out.dtype == np.float32 and unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5


# --- the composed policies ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ct", "rgb"])
def test_policy_keeps_labels_shapes_and_dtypes_for_many_seeds(kind: str, ct_net, cvc_frame) -> None:
    image, label = ct_net if kind == "ct" else (_imagenet(cvc_frame[0]), cvc_frame[1])
    policy = site_augment(kind, 1.5)
    changed = 0
    for seed in range(30):
        out_image, out_label = policy(image, label, np.random.default_rng(seed))
        assert out_image.shape == image.shape and out_image.dtype == image.dtype
        assert out_label.shape == label.shape and out_label.dtype == label.dtype
        assert out_image.flags.c_contiguous and out_label.flags.c_contiguous
        assert np.isfinite(out_image).all() and _labels_subset(out_label, label)
        changed += not np.array_equal(out_image, image)
    assert changed >= 25


@pytest.mark.parametrize("kind", ["ct", "rgb"])
def test_strength_zero_is_the_identity_and_draws_nothing(kind: str, ct_net, cvc_frame) -> None:
    image, label = ct_net if kind == "ct" else (_imagenet(cvc_frame[0]), cvc_frame[1])
    policy = site_augment(kind, 0.0)
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    out_image, out_label = policy(image, label, rng)
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_label, label)
    assert rng.bit_generator.state == state


@pytest.mark.parametrize("kind", ["ct", "rgb"])
def test_policy_is_deterministic_for_a_seed(kind: str, ct_net, cvc_frame) -> None:
    image, label = ct_net if kind == "ct" else (_imagenet(cvc_frame[0]), cvc_frame[1])
    policy = site_augment(kind)
    for seed in range(5):
        a = policy(image, label, np.random.default_rng((1, 2, seed)))
        b = pickle.loads(pickle.dumps(policy))(image, label, np.random.default_rng((1, 2, seed)))  # a worker's copy
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    outputs = {policy(image, label, np.random.default_rng(s))[0].tobytes() for s in range(8)}
    assert len(outputs) >= 7


@pytest.mark.parametrize("kind", ["ct", "rgb"])
def test_intensity_never_touches_labels(kind: str, ct_net, cvc_frame) -> None:
    image, label = ct_net if kind == "ct" else (_imagenet(cvc_frame[0]), cvc_frame[1])
    policy = site_augment(kind)
    no_intensity = dataclasses.replace(policy, intensity=NO_CT_INTENSITY if kind == "ct" else NO_COLOUR)
    intensity_only = dataclasses.replace(policy, geometry=NO_GEOMETRY, intensity=_always(policy.intensity))
    for seed in range(10):
        _, full_label = policy(image, label, np.random.default_rng(seed))
        _, warp_label = no_intensity(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(full_label, warp_label)  # geometry draws first, intensity after
        out_image, out_label = intensity_only(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_label, label)
        assert not np.array_equal(out_image, image)


def test_ct_policy_fills_with_air_and_never_flips(ct_net) -> None:
    image, label = ct_net
    policy = site_augment("ct")
    assert policy.geometry.p_flip_lr == 0 and policy.geometry.p_flip_ud == 0  # left and right kidney are classes
    zoom_out = dataclasses.replace(policy, geometry=GeometryParams(
        p_affine=1, p_elastic=0, **{**IDENTITY_AFFINE, "scale": (0.7, 0.7)}), intensity=NO_CT_INTENSITY)
    out, out_label = zoom_out(image, label, np.random.default_rng(0))
    assert np.all(out[:5] == -1.0) and np.all(out_label[:5] == 0)  # unit 0 = air in the bundled recipe


def test_rgb_policy_fills_with_black_in_imagenet_units(cvc_frame) -> None:
    frame, mask = cvc_frame
    policy = site_augment("rgb")
    zoom_out = dataclasses.replace(policy, geometry=dataclasses.replace(
        policy.geometry, p_flip_lr=0, p_flip_ud=0, p_affine=1, p_elastic=0, **{**IDENTITY_AFFINE, "scale": (0.7, 0.7)}),
        intensity=NO_COLOUR)
    out, out_mask = zoom_out(_imagenet(frame), mask, np.random.default_rng(0))
    black = -np.array(policy.mean) / np.array(policy.std)
    np.testing.assert_allclose(out[:5], np.broadcast_to(black, out[:5].shape), atol=1e-6)
    assert np.all(out_mask[:5] == 0)


def test_strength_scales_ranges_and_keeps_probabilities() -> None:
    base, half = site_augment("ct"), site_augment("ct", 0.5)
    assert half.geometry.scale == pytest.approx((0.7**0.5, 1.4**0.5))
    assert half.geometry.rotate_deg == pytest.approx((-7.5, 7.5))
    assert half.intensity.width == pytest.approx((0.8**0.5, 1.25**0.5))
    assert half.geometry.p_affine == base.geometry.p_affine and half.intensity.p_noise == base.intensity.p_noise
    assert site_augment("ct", 1.0) == SITE_POLICIES["ct"]


def test_policy_parameters_are_frozen_and_recordable() -> None:
    policy = site_augment("rgb")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.geometry.p_affine = 1.0  # type: ignore[misc]
    record = json.loads(json.dumps(dataclasses.asdict(policy)))
    assert record["kind"] == "rgb" and record["geometry"]["border"] == "constant"
    assert record["intensity"]["hue"] == [-0.05, 0.05]


def test_bad_arguments_are_refused(ct_net) -> None:
    image, label = ct_net
    with pytest.raises(ValueError, match="unknown augmentation kind"):
        site_augment("mri")
    with pytest.raises(ValueError, match="strength"):
        site_augment("ct", -0.5)
    with pytest.raises(ValueError, match="probability"):
        GeometryParams(p_affine=1.5)
    with pytest.raises(ValueError, match="positive"):
        CTIntensityParams(gamma=(0.0, 1.0))
    with pytest.raises(ValueError, match=">= 0"):
        RGBColourParams(noise_sigma=(-0.1, 0.1))
    with pytest.raises(ValueError, match="border"):
        GeometryParams(border="wrap")
    with pytest.raises(ValueError, match="mean needs 1 or 3"):
        site_augment("rgb", mean=(0.1, 0.2))(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), int),
                                             np.random.default_rng(0))
    with pytest.raises(ValueError, match="label must be"):
        site_augment("ct")(image, label[:-1], np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        site_augment("ct")(image, label, 0)  # type: ignore[arg-type]
