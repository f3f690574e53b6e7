"""The fixed-spacing CT recipe (``spacing_mm``): resample + centre crop/pad, and the exact way back.

On the shared real CT: labels taken to the network grid and mapped back through the slice runner
land on the input grid (shape and affine identical) with Dice > 0.98 per organ; one slice seen at
other pixel sizes or in a wider field of view covers the same number of network pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from braunet.classes import SYNAPSE8_CLASSES
from braunet.errors import CheckpointError, InputError
from braunet.infer import (
    SliceRunner,
    parse_preprocessing,
    predict_volume,
    preprocess_slices,
    resize_labels,
    to_view,
    view_spacing,
)
from braunet.io import read_image, to_canonical, write_labels
from braunet.model import ModelCard, get_preset
from braunet.train.metrics import dice

SPACED = {"kind": "ct", "clip_hu": [-125.0, 275.0], "mean": 0.5, "std": 0.5, "spacing_mm": 1.75}
SIZE = 224


class GroundTruthNetwork:
    """A "network" that answers each batch with the one-hot of the ground truth at the network grid,
    in the order the runner asks (as a perfect model trained at that resolution would)."""

    def __init__(self, labels_net: np.ndarray, batch_size: int) -> None:
        self.batches = [labels_net[k : k + batch_size] for k in range(0, len(labels_net), batch_size)]
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        labels = torch.from_numpy(self.batches[self.calls]).long()
        self.calls += 1
        assert x.shape == (len(labels), 1, SIZE, SIZE)
        return torch.nn.functional.one_hot(labels, 9).permute(0, 3, 1, 2).float() * 8.0


def _card() -> ModelCard:
    return ModelCard(name="spaced", config=get_preset("cpu-ct"), class_names=list(SYNAPSE8_CLASSES),
                     preprocessing=dict(SPACED))  # fmt: skip


@pytest.mark.parametrize(
    ("image", "label"),
    [
        ("totalseg_ct/case01sm_ct.nii.gz", "totalseg_ct/case01sm_label_synapse8.nii.gz"),  # 3 mm, 366 mm FOV
        ("msd_spleen_ct/spleen_8_ct_LRfixed.nii.gz", "msd_spleen_ct/spleen_8_label_synapse8_LRfixed.nii.gz"),  # 0.785 mm
    ],
)
def test_ground_truth_at_network_resolution_maps_back_onto_the_input_grid(data_dir, tmp_path, image, label):
    volume, truth_volume = read_image(data_dir / image), read_image(data_dir / label)
    recipe = parse_preprocessing(SPACED)
    canonical, reorientation = to_canonical(truth_volume)
    spacing = view_spacing(reorientation.canonical_affine, recipe.view)
    truth_view = to_view(np.asarray(canonical).astype(np.int64), range(canonical.shape[2]), recipe.view)
    labels_net = resize_labels(truth_view, (SIZE, SIZE), recipe, spacing)
    assert labels_net.shape == (len(truth_view), SIZE, SIZE)

    prediction = predict_volume(GroundTruthNetwork(labels_net, 8), _card(), volume, batch_size=8)
    truth = np.asarray(truth_volume.array)
    assert prediction.labels.shape == truth.shape == volume.array.shape
    written = read_image(write_labels(prediction.labels, volume, tmp_path / "labels.nii.gz"))
    np.testing.assert_array_equal(written.affine, volume.affine)
    np.testing.assert_array_equal(np.asarray(written.array), prediction.labels)
    organs = [c for c in range(1, 9) if (truth == c).any()]
    scores = {c: dice(prediction.labels == c, truth == c) for c in organs}
    assert organs and all(score > 0.98 for score in scores.values()), scores


def test_logits_are_resampled_and_outside_the_field_of_view_is_background(data_dir):
    """A 512 px slice at 0.785 mm spans 402 mm, wider than the network's 224 x 1.75 = 392 mm: its
    outermost columns are outside the network's view and come back as background, confidence 1."""
    volume = read_image(data_dir / "msd_spleen_ct" / "spleen_8_ct_LRfixed.nii.gz")
    canonical, reorientation = to_canonical(volume)
    raw = to_view(canonical, [15], "radiological")
    spacing = view_spacing(reorientation.canonical_affine, "radiological")

    def everywhere_stomach(x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 9, SIZE, SIZE)
        logits[:, 8] = 2.0
        return logits

    runner = SliceRunner(everywhere_stomach, parse_preprocessing(SPACED), SIZE, 9, confidence=True)
    labels, conf = runner(raw, spacing=spacing)
    assert labels.shape == conf.shape == raw.shape
    assert np.all(labels[0, :, :4] == 0) and np.all(conf[0, :, :4] == 1.0)  # 5 mm at each side is unseen
    assert np.all(labels[0, :4] == 0) and np.all(labels[0, -4:] == 0)
    assert np.all(labels[0, 8:-8, 8:-8] == 8)
    expected = float(torch.softmax(torch.tensor([0.0] * 8 + [2.0]), 0)[8])
    np.testing.assert_allclose(conf[0, 8:-8, 8:-8], expected, rtol=1e-5)
    with pytest.raises(InputError, match="pixel spacing"):
        runner(raw)


def test_organ_size_in_network_pixels_does_not_depend_on_pixel_size_or_field_of_view(data_dir):
    """One real slice seen three ways: native (0.785 mm, 402 mm FOV), resampled to 1.5 mm, and padded
    with air to a 1.4x wider field of view (as a scan with the arms in). The spleen covers the same
    number of network pixels (within 2 %); the official resize-to-224 recipe differs by up to 1.9x."""
    volume = read_image(data_dir / "msd_spleen_ct" / "spleen_8_ct_LRfixed.nii.gz")
    labels = read_image(data_dir / "msd_spleen_ct" / "spleen_8_label_synapse8_LRfixed.nii.gz")
    canonical, reorientation = to_canonical(volume)
    label_canonical, _ = to_canonical(labels)
    hu = to_view(canonical, [18], "radiological")[0].astype(np.float32)
    truth = to_view(np.asarray(label_canonical).astype(np.int64), [18], "radiological")[0]
    native = view_spacing(reorientation.canonical_affine, "radiological")
    factor = native[0] / 1.5
    coarse_hu = ndimage.zoom(hu, factor, order=1)
    coarse_truth = ndimage.zoom(truth, factor, order=0)
    coarse = (native[0] * hu.shape[0] / coarse_hu.shape[0], native[1] * hu.shape[1] / coarse_hu.shape[1])
    pad = 102  # 512 + 2 x 102 = 716 px: a 562 mm field of view
    wide_hu = np.pad(hu, pad, constant_values=-1024)
    wide_truth = np.pad(truth, pad)
    views = [(hu, truth, native), (coarse_hu, coarse_truth, coarse), (wide_hu, wide_truth, native)]

    recipe = parse_preprocessing(SPACED)
    areas = [int((resize_labels(t[None], (SIZE, SIZE), recipe, s) == 7).sum()) for _, t, s in views]
    assert areas[0] > 1000
    assert max(areas) / min(areas) < 1.02, areas
    official = [int((resize_labels(t[None], (SIZE, SIZE), {"kind": "ct", "clip_hu": [-125, 275]}) == 7).sum())
                for _, t, _ in views]  # fmt: skip
    assert max(official) / min(official) > 1.8, official

    # the image follows the labels: mean network intensity inside the spleen agrees too
    means = []
    for (image, truth_k, spacing), area in zip(views, areas, strict=True):
        x = preprocess_slices(image[None], recipe, SIZE, spacing=spacing)[0, 0].numpy()
        mask = resize_labels(truth_k[None], (SIZE, SIZE), recipe, spacing)[0] == 7
        assert mask.sum() == area
        means.append(float(x[ndimage.binary_erosion(mask, iterations=2)].mean()))
    assert max(means) - min(means) < 0.02, means


def test_the_pad_is_air_and_the_window_still_applies():
    hu = np.full((1, 100, 100), 1000, np.int16)  # 100 mm at 1 mm: a small field of view, padded to 392 mm
    x = preprocess_slices(hu, SPACED, SIZE, spacing=(1.0, 1.0))[0, 0]
    assert torch.allclose(x[112, 112], torch.tensor(1.0))  # 275 HU (clipped) -> +1
    assert torch.all(x[:50] == -1.0) and torch.all(x[:, -50:] == -1.0)  # padding = the window's low end -> -1


def test_recipe_validation():
    recipe = parse_preprocessing(SPACED)
    assert recipe.spacing_mm == 1.75 and recipe.resize == "bilinear"
    assert parse_preprocessing({"kind": "ct", "clip_hu": [-125, 275]}).spacing_mm is None
    with pytest.raises(CheckpointError, match="CT option"):
        parse_preprocessing({"kind": "rgb", "spacing_mm": 1.0})
    with pytest.raises(CheckpointError, match="positive"):
        parse_preprocessing({**SPACED, "spacing_mm": 0})
    with pytest.raises(CheckpointError, match="bilinear"):
        parse_preprocessing({**SPACED, "resize": "spline3"})
    with pytest.raises(InputError, match="pixel spacing"):
        preprocess_slices(np.zeros((1, 32, 32)), SPACED, 32)
