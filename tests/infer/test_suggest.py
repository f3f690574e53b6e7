"""Suggested slices: the runner's probabilities, the uncertainty measures, the diversity rule, real CT and frames."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from braunet.errors import Cancelled, InputError
from braunet.infer import SliceRunner, decode_labels, to_view
from braunet.infer.uncertainty import pick_diverse, pixel_uncertainty, slice_scores, suggest_slices, suggest_volume
from braunet.io import Volume, read_image, to_canonical


@pytest.fixture(scope="module")
def ct_small(data_dir) -> Volume:
    """The real CT's upper abdomen: (122, 101, 30), slices 82-111 of case01."""
    return read_image(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")


def _runner(model, card, **options) -> SliceRunner:
    return SliceRunner(model, card.recipe, card.config.img_size, card.config.num_classes, **options)


# -- the runner's probabilities ------------------------------------------------------------------
def test_probabilities_are_the_softmax_and_agree_with_the_labels(ct_model, ct_small):
    model, card = ct_model
    canonical, _ = to_canonical(ct_small)
    runner = _runner(model, card, batch_size=2)
    raw = to_view(canonical, [3, 12, 25], card.recipe.view)
    x = runner.prepare(raw)
    p = runner.probabilities(x)
    assert p.shape == (3, 9, card.config.img_size, card.config.img_size) and p.dtype == torch.float32
    torch.testing.assert_close(p, torch.softmax(runner.logits(x), dim=1))
    assert torch.equal(p.argmax(dim=1), decode_labels(runner.logits(x))[0])
    batches = list(runner.run(lambda b: to_view(canonical, b, card.recipe.view), [3, 12, 25], probabilities=True))
    assert [b for b, _, _ in batches] == [[3, 12], [25]] and all(conf is None for _, _, conf in batches)
    np.testing.assert_allclose(np.concatenate([q for _, q, _ in batches]), p.numpy(), rtol=1e-5, atol=1e-6)
    prepared = list(runner.run(lambda b: x[[[3, 12, 25].index(k) for k in b]], [3, 12, 25], prepared=True,
                               probabilities=True))  # fmt: skip
    np.testing.assert_allclose(np.concatenate([q for _, q, _ in prepared]), p.numpy(), rtol=1e-5, atol=1e-6)


def test_a_binary_model_gives_two_class_probabilities(rgb_model, data_dir):
    model, card = rgb_model
    frame = tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")
    runner = _runner(model, card)
    x = runner.prepare(frame[None])
    p = runner.probabilities(x)
    foreground = torch.sigmoid(runner.logits(x)[:, 0])
    assert p.shape == (1, 2, *foreground.shape[1:])
    torch.testing.assert_close(p[:, 1], foreground)
    torch.testing.assert_close(p.sum(dim=1), torch.ones_like(foreground))


# -- measures and the diversity rule --------------------------------------------------------------
def test_pixel_uncertainty_is_zero_when_sure_and_one_at_a_tie():
    p = torch.zeros(1, 4, 1, 3)
    p[0, 0, 0, 0] = 1.0  # sure
    p[0, :, 0, 1] = 0.25  # all four classes equally likely
    p[0, :2, 0, 2] = 0.5  # a tie between two classes
    entropy = pixel_uncertainty(p, "entropy")[0, 0]
    torch.testing.assert_close(entropy, torch.tensor([0.0, 1.0, math.log(2) / math.log(4)]))
    torch.testing.assert_close(pixel_uncertainty(p, "margin")[0, 0], torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        pixel_uncertainty(p, "variance")
    with pytest.raises(ValueError, match="K >= 2"):
        pixel_uncertainty(p[:, :1])


def test_scores_count_the_organ_and_its_band_and_damp_specks():
    p = torch.zeros(4, 3, 64, 64)
    p[:, 0] = 1.0
    unsure = torch.tensor([0.3, 0.6, 0.1])[:, None, None]
    p[1, :, 10:30, 10:30] = unsure  # an unsure 20 x 20 organ (class 1)
    p[2, :, 10:30, 10:30] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # a sure organ...
    p[2, :, 8:10, 10:30] = torch.tensor([0.6, 0.3, 0.1])[:, None, None]  # ...with an unsure rim called background
    p[3, :, 0:2, 0:2] = unsure  # a 2 x 2 speck
    per_pixel = float(pixel_uncertainty(p[1:2, :, 10:11, 10:11]))
    scores, counts = slice_scores(p, band=0, min_area=0.01)
    assert scores[0] == 0 and scores[2] == 0  # nothing predicted / nothing unsure inside the organ
    assert float(scores[1]) == pytest.approx(per_pixel)  # the mean over the organ
    assert float(scores[3]) == pytest.approx(4 * per_pixel / (0.01 * 64 * 64))  # damped below min_area
    assert counts[:, 1].tolist() == [0, 400, 400, 4] and counts.sum(dim=1).tolist() == [64 * 64] * 4
    banded, _ = slice_scores(p, band=2, min_area=0.01)
    assert float(banded[2]) == pytest.approx(40 * float(pixel_uncertainty(p[2:3, :, 8:9, 10:11])) / (24 * 24))
    assert float(banded[1]) == pytest.approx(400 * per_pixel / (24 * 24))  # the band is sure background
    with pytest.raises(ValueError, match="band"):
        slice_scores(p, band=-1)
    with pytest.raises(ValueError, match="min_area"):
        slice_scores(p, min_area=0)


def test_suggestions_are_ranked_spaced_and_never_empty_slices():
    scores = np.array([0.0, 0.5, 0.9, 0.85, 0.1, 0.0, 0.7, 0.7, 0.0, 0.3])
    assert pick_diverse(scores, 10) == [2, 3, 6, 7, 1, 9, 4]
    assert pick_diverse(scores, 3, spacing=3) == [2, 6, 9]  # 3 and 1 are within 2 of 2; 7 of 6
    assert pick_diverse(scores, 2, spacing=1) == [2, 3]
    assert pick_diverse(np.zeros(5), 3) == [] and pick_diverse(scores, 0) == []
    with pytest.raises(ValueError, match="spacing"):
        pick_diverse(scores, 3, spacing=0)
    with pytest.raises(ValueError, match="n must be"):
        pick_diverse(scores, -1)


# -- volumes, stacks and images --------------------------------------------------------------------
def test_a_real_ct_volume_is_ranked_like_its_stack_of_slices(ct_model, ct_small):
    model, card = ct_model
    calls = []
    found = suggest_volume(model, card, ct_small, n=4, spacing=3, batch_size=4,
                           progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert found.scores.shape == (30,) and found.scores.dtype == np.float64
    assert ((found.scores >= 0) & (found.scores <= 1)).all()
    assert calls[0] == (0, 30) and calls[-1] == (30, 30)
    assert 0 < len(found.indices) <= 4
    assert list(found.scores[found.indices]) == sorted(found.scores[found.indices], reverse=True)
    assert all(abs(a - b) >= 3 for a in found.indices for b in found.indices if a != b)
    canonical, _ = to_canonical(ct_small)
    stack = to_view(canonical, range(30), card.recipe.view)
    same = suggest_slices(model, card, stack, n=4, spacing=3, batch_size=7)
    np.testing.assert_allclose(same.scores, found.scores, rtol=1e-5, atol=1e-7)
    assert same.indices == found.indices and same.classes == found.classes
    rows = found.rows()
    assert [r["slice"] for r in rows] == found.indices
    assert all(set(r["classes"]) <= set(card.class_names[1:]) for r in rows)


def test_the_bundled_model_is_least_sure_where_it_never_trained(ct_small):
    """ct-abdomen-8 trained on case01 slices 0-96; of slices 82-111 it doubts the unseen top ones most."""
    from braunet.zoo import list_models, load_model

    if "ct-abdomen-8" not in list_models():
        pytest.skip("bundled model ct-abdomen-8 is not installed")
    model, card = load_model("ct-abdomen-8")
    found = suggest_volume(model, card, ct_small, n=3, spacing=3)
    assert found.indices[0] + 82 >= 97, found.rows()
    assert set(found.classes[found.indices[0]]) >= {5, 7, 8}  # liver, spleen, stomach in the upper abdomen


def test_frames_of_different_sizes_are_ranked_as_a_list(rgb_model, data_dir):
    model, card = rgb_model
    frames = [tifffile.imread(data_dir / "cvc_clinicdb" / "images" / f"{n}.tif") for n in (1, 13, 25)]
    frames.append(np.asarray(Image.open(data_dir / "kvasir_seg" / "images" / "cju0qkwl35piu0993l0dewei2.jpg")))
    found = suggest_slices(model, card, frames, n=2, batch_size=3)
    assert found.scores.shape == (4,) and len(found.indices) <= 2
    for k in range(4):
        alone = suggest_slices(model, card, [frames[k]])
        assert float(alone.scores[0]) == pytest.approx(float(found.scores[k]), rel=1e-5, abs=1e-7)
    assert found.class_names == list(card.class_names)


def test_wrong_inputs_and_options_are_refused(ct_model, rgb_model, ct_small, data_dir):
    ct, ct_card = ct_model
    rgb, rgb_card = rgb_model
    frame = tifffile.imread(data_dir / "cvc_clinicdb" / "images" / "1.tif")
    with pytest.raises(InputError, match="2-D RGB images"):
        suggest_volume(rgb, rgb_card, ct_small)
    with pytest.raises(InputError, match="3-D volume"):
        suggest_volume(ct, ct_card, Volume(frame, np.eye(4), "frame.png", "RGB", True))
    mr = Volume(ct_small.array, ct_small.affine, "mr.nii.gz", "MR", False)
    with pytest.raises(InputError, match="modality MR, not CT"):  # the same check predict makes
        suggest_volume(ct, ct_card, mr)
    with pytest.raises(InputError, match="slice 1: .*2-D CT slices"):
        suggest_slices(ct, ct_card, [np.zeros((64, 64), np.int16), frame])
    with pytest.raises(InputError, match="slice 0: RGBA"):
        suggest_slices(rgb, rgb_card, [np.zeros((64, 64, 4), np.uint8)])
    with pytest.raises(InputError, match="NaN"):
        suggest_slices(ct, ct_card, [np.full((64, 64), np.nan, np.float32)])
    with pytest.raises(InputError, match="too small"):
        suggest_slices(ct, ct_card, [np.zeros((8, 64), np.int16)])
    with pytest.raises(InputError, match="unknown uncertainty measure"):
        suggest_volume(ct, ct_card, ct_small, measure="variance")
    with pytest.raises(ValueError, match="spacing"):
        suggest_volume(ct, ct_card, ct_small, spacing=0)


def test_a_set_stop_event_cancels_between_batches(ct_model, ct_small):
    model, card = ct_model
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled, match="suggestion cancelled after 0 of 30"):
        suggest_volume(model, card, ct_small, should_stop=stop)
