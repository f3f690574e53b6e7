"""Layer geometry and routing-window maps: pure NumPy, no viewer needed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nibabel.affines import apply_affine
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from braunet.infer import to_view
from braunet.io import Volume, read_image, to_canonical
from braunet.napari._geometry import (
    geometry_from_layer_state,
    layer_from_source,
    layer_to_source,
    layer_volume,
    view_pixel_mm,
    volume_to_layer,
)
from braunet.napari._routing_map import SliceFrame, routing_frequency


@pytest.fixture(scope="module")
def ct(shared_data) -> Volume:
    return read_image(shared_data / "totalseg_ct/case01sm_ct.nii.gz")


def _reoriented(volume: Volume, codes: str) -> Volume:
    """The same image stored in another voxel order (codes like "LPS", "SIP"), same world points."""
    start = axcodes2ornt("RAS")
    transform = ornt_transform(start, axcodes2ornt(tuple(codes)))
    array = apply_orientation(volume.array, transform)
    affine = volume.affine @ inv_ornt_aff(transform, volume.array.shape)
    return dataclasses.replace(volume, array=np.ascontiguousarray(array), affine=affine, header=None)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "SIP", "PIR"])
def test_layer_world_is_lps_mm_of_every_voxel(ct, codes):
    volume = _reoriented(ct, codes)
    data, geometry = volume_to_layer(volume)
    assert data.shape == (30, 101, 122)  # (K, J, I) of the canonical grid: 30 axial slices
    assert not geometry.oblique
    # Every stored voxel shows up once, at the world position of its own affine (RAS -> LPS, (z, y, x)).
    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, n, 50) for n in volume.array.shape], axis=1)
    ras = apply_affine(volume.affine, ijk)
    expected_world = np.stack([ras[:, 2], -ras[:, 1], -ras[:, 0]], axis=1)
    layer_index = np.round(geometry.world_to_data(expected_world)).astype(int)
    np.testing.assert_allclose(geometry.data_to_world(layer_index), expected_world, atol=1e-4)
    np.testing.assert_array_equal(data[tuple(layer_index.T)], volume.array[tuple(ijk.T)])
    # Back to the file's voxel order, exactly.
    np.testing.assert_array_equal(layer_to_source(data, geometry), volume.array)
    np.testing.assert_array_equal(layer_from_source(volume.array, geometry), data)
    assert layer_volume(data, geometry).affine.tobytes() == volume.affine.tobytes()


def test_layer_slices_are_the_engines_radiological_view(ct):
    data, _ = volume_to_layer(ct)
    canonical, _ = to_canonical(ct)
    np.testing.assert_array_equal(data[7], to_view(canonical, [7], "radiological")[0])
    # Radiological picture: the patient's right (small RAS x) is on the left of the screen (small column).
    world_x_of_columns = volume_to_layer(ct)[1].data_to_world(np.array([[0, 0, 0], [0, 0, 121]]))[:, 2]
    assert world_x_of_columns[0] < world_x_of_columns[1]  # LPS x grows to the patient's left


def test_oblique_volume_is_flagged_and_still_round_trips(ct):
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0], [0, 0, 1, 0],
                         [0, 0, 0, 1]])  # fmt: skip
    volume = dataclasses.replace(ct, affine=rotation @ ct.affine, header=None)
    data, geometry = volume_to_layer(volume)
    assert geometry.oblique
    np.testing.assert_allclose(geometry.scale, (3.0, 3.0, 3.0))
    np.testing.assert_array_equal(layer_to_source(data, geometry), volume.array)
    assert geometry.source_affine.tobytes() == volume.affine.tobytes()


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SIP"])
def test_a_prediction_of_some_slices_converts_those_slices_only(shared_data, codes):
    """What a "current slice" run relies on: converting only the run slices of a label map that is 0
    elsewhere gives the whole conversion; the engine's input may be a view of the layer (no copy)."""
    ct = read_image(shared_data / "totalseg_ct/case01sm_ct.nii.gz")
    labels = read_image(shared_data / "totalseg_ct/case01sm_label_synapse8.nii.gz").array.astype(np.uint8)
    volume = _reoriented(ct, codes)
    data, geometry = volume_to_layer(volume)
    layer_labels = layer_from_source(np.ascontiguousarray(apply_orientation(labels, _transform(codes))), geometry)
    predicted = np.zeros_like(layer_labels)
    predicted[[21, 4]] = layer_labels[[21, 4]]  # as predict returns a run of layer slices 4 and 21
    assert predicted[4].any() and predicted[21].any()
    source = layer_to_source(predicted, geometry)
    only = layer_from_source(source, geometry, slices=[21, 4])
    np.testing.assert_array_equal(only, predicted)
    np.testing.assert_array_equal(layer_from_source(source, geometry), predicted)
    assert only.dtype == predicted.dtype and only.flags.c_contiguous

    view = layer_volume(data, geometry, copy=False)
    assert np.shares_memory(view.array, data)
    np.testing.assert_array_equal(view.array, volume.array)
    assert view.affine.tobytes() == layer_volume(data, geometry).affine.tobytes() == volume.affine.tobytes()
    canonical, _ = to_canonical(view)  # the engine reads its slices from the view as from the file's array
    np.testing.assert_array_equal(canonical, to_canonical(volume)[0])


def _transform(codes: str) -> np.ndarray:
    return ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))


def test_geometry_from_scale_and_translate_for_foreign_layers(ct):
    data, ours = volume_to_layer(ct)
    rebuilt = geometry_from_layer_state(data, ours.scale, ours.translate, metadata=None)
    assert rebuilt.scale == ours.scale and rebuilt.translate == pytest.approx(ours.translate)
    np.testing.assert_allclose(rebuilt.source_affine, ours.reorientation.canonical_affine, atol=1e-9)
    _, again = volume_to_layer(layer_volume(data, rebuilt))
    assert again.translate == pytest.approx(ours.translate) and again.scale == ours.scale
    rgb = geometry_from_layer_state(np.zeros((20, 30, 3), np.uint8), (1.0, 1.0), (0.0, 0.0), None, rgb=True)
    assert rgb.is_2d and rgb.layer_shape == (20, 30)
    assert geometry_from_layer_state(data, (1, 1, 1), (0, 0, 0), {"braunet": ours}) is ours


@pytest.mark.parametrize("resize", ["spline3", "bilinear"])
@pytest.mark.parametrize("view", ["radiological", "ras"])
@pytest.mark.parametrize("shape", [(101, 122), (224, 224), (37, 301)])
def test_window_rectangles_and_window_map_agree(resize, view, shape):
    frame = SliceFrame(shape, view, img_size=224, n_win=7, resize=resize)
    window_map = frame.window_map()
    assert window_map.shape == shape and set(np.unique(window_map)) <= set(range(49))
    rows, cols = np.indices(shape)
    for p in range(49):
        (r0, c0), _, (r1, c1), _ = frame.window_rectangle(p)
        strictly_inside = (rows > r0 + 1e-9) & (rows < r1 - 1e-9) & (cols > c0 + 1e-9) & (cols < c1 - 1e-9)
        assert strictly_inside.any() or min(shape) < 224  # downsampled slices may have empty windows
        np.testing.assert_array_equal(window_map[strictly_inside], p)
        assert frame.window_at(((r0 + r1) / 2, (c0 + c1) / 2)) == p
    np.testing.assert_allclose(frame.model_to_display(frame.display_to_model(np.array([3.3, 17.8]))), [3.3, 17.8])


def test_window_map_follows_the_model_view():
    """ras view: view[a, b] = display[H-1-b, W-1-a], so a display pixel's window is its view position's window."""
    shape = (140, 150)
    ras = SliceFrame(shape, "ras", 224, 7, "spline3").window_map()
    of_view = SliceFrame((150, 140), "radiological", 224, 7, "spline3").window_map()  # same grid as the view
    rows, cols = np.indices(shape)
    np.testing.assert_array_equal(ras, of_view[shape[1] - 1 - cols, shape[0] - 1 - rows])


def test_routing_frequency_counts_each_selection():
    indices = np.array([[0, 1], [1, 2], [1, 3], [0, 1]])
    freq = routing_frequency(indices, 2)
    np.testing.assert_allclose(freq, [2 / 4, 4 / 4, 1 / 4, 1 / 4])


@pytest.mark.parametrize("view", ["radiological", "ras"])
@pytest.mark.parametrize(("shape", "pixel_mm"), [((300, 260), (0.8, 0.7)), ((90, 120), (3.0, 3.0))])
def test_fixed_spacing_frame_follows_the_recipe_resampling(view, shape, pixel_mm):
    """With a ``spacing_mm`` recipe a displayed pixel lands where the preprocessing puts it: one bright
    pixel of the displayed slice peaks at ``display_to_model`` of its position in the network input."""
    from braunet.infer.preprocess import parse_preprocessing, preprocess_slices

    recipe = parse_preprocessing({"kind": "ct", "clip_hu": [-125, 275], "mean": 0.5, "std": 0.5, "spacing_mm": 1.75,
                                  "view": view})  # fmt: skip
    view_mm = view_pixel_mm((3.0, *pixel_mm), view)  # a layer scale (slices, rows, cols) in the model's view
    assert view_mm == (pixel_mm if view == "radiological" else pixel_mm[::-1])  # ras: a transpose
    frame = SliceFrame(shape, view, 224, 7, "bilinear", spacing_mm=1.75, pixel_mm=view_mm)
    for r, c in ((shape[0] // 3, shape[1] // 2), (shape[0] // 2 + 7, shape[1] // 4)):
        display = np.full(shape, -1000.0, np.float32)
        display[r, c] = 1000.0
        x = preprocess_slices(frame.display_slice_to_view(display)[None], recipe, 224, spacing=view_mm)[0, 0].numpy()
        peak = np.unravel_index(int(np.argmax(x)), x.shape)
        np.testing.assert_allclose(frame.display_to_model(np.array([r, c], float)), peak, atol=1.0)
    np.testing.assert_allclose(frame.model_to_display(frame.display_to_model(np.array([3.3, 17.8]))), [3.3, 17.8])
    with pytest.raises(ValueError, match="pixel_mm"):
        SliceFrame(shape, view, 224, 7, "bilinear", spacing_mm=1.75).window_map()
