"""The slice runner: any callable network, one decoding rule, batching invariance, the engine's numbers."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from torch import nn

from braunet.errors import Cancelled, CheckpointError
from braunet.infer import (
    SYNAPSE_CT,
    SliceRunner,
    decode_labels,
    parse_preprocessing,
    predict_volume,
    to_view,
)
from braunet.io import read_image, to_canonical


@pytest.fixture(scope="module")
def ct_canonical(data_dir):
    """The real CT (122, 101, 30), 3 mm, and its canonical array."""
    volume = read_image(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")
    canonical, reorientation = to_canonical(volume)
    return volume, canonical, reorientation


def _runner(model, card, **options) -> SliceRunner:
    return SliceRunner(model, card.recipe, card.config.img_size, card.config.num_classes, **options)


def test_decode_labels_multiclass_binary_and_ties():
    logits = torch.tensor([[2.0, 2.0, 1.0], [0.0, 1.0, 3.0]]).T.reshape(1, 3, 1, 2)  # pixel 0 ties 0 and 1
    labels, conf = decode_labels(logits, confidence=True)
    assert labels.tolist() == [[[0, 2]]] and labels.dtype == torch.int64
    expected = torch.softmax(logits, dim=1).amax(dim=1)
    torch.testing.assert_close(conf, expected)
    z = torch.tensor([-0.5, 0.0, 0.5]).reshape(1, 1, 1, 3)  # sigmoid(0) = 0.5 counts as foreground
    labels, conf = decode_labels(z, confidence=True, dtype=torch.uint8)
    assert labels.tolist() == [[[0, 1, 1]]] and labels.dtype == torch.uint8
    torch.testing.assert_close(conf, torch.sigmoid(z[:, 0]))
    assert decode_labels(z)[1] is None
    with pytest.raises(ValueError, match="B, K, H, W"):
        decode_labels(z[0])


def test_any_callable_network_runs_on_real_ct_slices(ct_canonical):
    """A plain function as the network: class 1 where the normalised input is above 0 (75 HU)."""
    _, canonical, _ = ct_canonical
    recipe = parse_preprocessing(SYNAPSE_CT)
    raw = to_view(canonical, [5, 15], "radiological")  # (2, 101, 122)

    def threshold(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)

    runner = SliceRunner(threshold, recipe, 128, 2)
    assert runner.device == torch.device("cpu")
    labels, conf = runner(raw)
    assert labels.shape == raw.shape and labels.dtype == np.uint8 and conf is None
    truth = raw > 75
    overlap = 2 * np.count_nonzero(labels.astype(bool) & truth) / (np.count_nonzero(labels) + np.count_nonzero(truth))
    assert overlap > 0.9, overlap


def test_the_engine_takes_any_callable_too(ct_model, ct_canonical):
    """predict_volume with a function as the network: labels on the input grid, no module needed."""
    _, card = ct_model
    volume, _, _ = ct_canonical
    classes = card.config.num_classes

    def soft_tissue(x: torch.Tensor) -> torch.Tensor:  # class 1 above the window's middle (75 HU), else 0
        return torch.cat([torch.zeros_like(x), x, torch.full((x.shape[0], classes - 2, *x.shape[2:]), -9.0)], dim=1)

    prediction = predict_volume(soft_tissue, card, volume, slices=[12])
    truth = np.asarray(volume.array[:, :, 12]) > 75
    labels = prediction.labels[:, :, 12]
    assert prediction.labels.shape == volume.array.shape and set(np.unique(labels)) == {0, 1}
    assert np.mean((labels == 1) == truth) > 0.97


def test_batching_does_not_change_labels_or_confidence(ct_model, ct_canonical):
    model, card = ct_model
    _, canonical, _ = ct_canonical
    raw = to_view(canonical, range(0, 30, 3), card.recipe.view)  # 10 real slices
    whole = _runner(model, card, batch_size=10, confidence=True)
    one_by_one = torch.cat([whole.prepare(raw[i : i + 1]) for i in range(len(raw))])
    assert torch.equal(whole.prepare(raw), one_by_one)  # preprocessing: exactly batch-invariant
    expected, expected_conf = whole(raw)
    for batch_size in (1, 3, 8):
        labels, conf = _runner(model, card, batch_size=batch_size, confidence=True)(raw)
        # the network: identical up to float rounding (1e-5 in the logits) in near-tie pixels
        assert np.mean(labels == expected) > 0.999, batch_size
        np.testing.assert_allclose(conf, expected_conf, atol=1e-5)
    assert np.array_equal(_runner(model, card, batch_size=10)(raw)[0], expected)  # and deterministic


def test_equals_the_engine_on_a_real_ct_slice(ct_model, ct_canonical):
    model, card = ct_model
    volume, canonical, reorientation = ct_canonical
    k = 17
    engine = predict_volume(model, card, volume, slices=[k], confidence="uint8")
    labels, conf = _runner(model, card, confidence="uint8")(to_view(canonical, [k], card.recipe.view))
    engine_labels = to_view(reorientation.apply(engine.labels), [k], card.recipe.view)
    engine_conf = to_view(reorientation.apply(engine.confidence), [k], card.recipe.view)
    assert np.array_equal(labels, engine_labels) and np.array_equal(conf, engine_conf)
    assert len(np.unique(labels)) > 1  # the random tiny model is not constant: the comparison means something


def test_prepared_inputs_give_the_labels_at_the_model_size(ct_model, ct_canonical):
    model, card = ct_model
    _, canonical, _ = ct_canonical
    size = card.config.img_size
    runner = _runner(model, card)
    raw = to_view(canonical, [4, 9, 20], card.recipe.view)
    prepared_labels, _ = runner.predict_prepared(runner.prepare(raw))
    assert prepared_labels.shape == (3, size, size)
    with torch.inference_mode():
        logits = model(runner.prepare(raw))
    assert np.array_equal(prepared_labels, logits.argmax(1).numpy())
    recipe_less = SliceRunner(model, None, size, card.config.num_classes)
    assert np.array_equal(recipe_less.predict_prepared(runner.prepare(raw))[0], prepared_labels)
    with pytest.raises(ValueError, match="no preprocessing recipe"):
        recipe_less(raw)


def test_run_counts_progress_reads_ahead_and_stops_between_batches(ct_model, ct_canonical):
    model, card = ct_model
    _, canonical, _ = ct_canonical
    runner = _runner(model, card, batch_size=4)
    read = []

    def reader(batch: list[int]) -> np.ndarray:
        read.append(batch)
        return to_view(canonical, batch, card.recipe.view)

    calls = []
    results = list(runner.run(reader, range(10), progress=lambda d, t: calls.append((d, t))))
    assert [batch for batch, _, _ in results] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] == read
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]
    whole, _ = runner(to_view(canonical, range(10), card.recipe.view))
    assert np.array_equal(np.concatenate([labels for _, labels, _ in results]), whole)

    stop = threading.Event()
    batches = runner.run(reader, range(10), should_stop=stop, what="test")
    next(batches)
    stop.set()
    with pytest.raises(Cancelled, match="test cancelled after 4 of 10 slices"):
        next(batches)


def test_modules_keep_their_mode_and_no_inference_mode_leaks(ct_model):
    model, card = ct_model
    model.train()
    try:
        runner = _runner(model, card)
        runner.predict_prepared(torch.zeros(2, 1, card.config.img_size, card.config.img_size))
        assert model.training
    finally:
        model.eval()
    assert not torch.is_inference_mode_enabled()


def test_wrong_logits_and_settings_are_refused():
    recipe = parse_preprocessing(SYNAPSE_CT)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        SliceRunner(lambda x: x, recipe, 32, 3)(np.zeros((1, 40, 40), np.int16))
    with pytest.raises(ValueError, match="batch_size"):
        SliceRunner(lambda x: x, recipe, 32, 1, batch_size=0)
    with pytest.raises(ValueError, match="confidence"):
        SliceRunner(lambda x: x, recipe, 32, 1, confidence="float16")


def test_a_module_without_parameters_runs_on_the_cpu():
    class Identity(nn.Module):
        def forward(self, x):
            return x

    runner = SliceRunner(Identity(), parse_preprocessing(SYNAPSE_CT), 32, 1)
    hu = np.full((2, 40, 48), 500, np.int16)
    hu[1] = -500
    labels, _ = runner(hu)
    assert labels.shape == (2, 40, 48) and labels[0].all() and not labels[1].any()


def test_card_recipe_is_parsed_once_and_frozen(ct_model):
    _, card = ct_model
    recipe = card.recipe
    assert recipe is card.recipe and recipe.kind == "ct" and (recipe.low, recipe.high) == (-125.0, 275.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.view = "ras"  # type: ignore[misc]
    broken = dataclasses.replace(card, preprocessing={"kind": "ct", "mean": 0.5, "std": 0.5})
    with pytest.raises(CheckpointError, match=f"model {card.name!r}.*clip_hu"):
        _ = broken.recipe


def test_evaluation_batches_images_of_one_size_and_scores_each_on_its_grid(rgb_model, data_dir):
    """Three CVC-ClinicDB frames (one size) go through the network together, two Kvasir-SEG frames
    (two other sizes) alone; every image is still scored on its own grid."""
    from braunet.train.evaluate import evaluate_slices
    from braunet.train.metrics import per_class_metrics
    from braunet.train.pairs import collect_pairs
    from braunet.train.slices import load_pairs

    cvc, kvasir = data_dir / "cvc_clinicdb", data_dir / "kvasir_seg"
    frames = ["cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv"]
    images = [cvc / "images" / f"{n}.tif" for n in (1, 103, 127)] + [kvasir / "images" / f"{n}.jpg" for n in frames]
    labels = [cvc / "masks_binary" / f"{n}.png" for n in (1, 103, 127)]
    labels += [kvasir / "masks" / f"{n}.png" for n in frames]
    slices = load_pairs(collect_pairs(images, labels), num_classes=1)
    model, card = rgb_model
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda _module, args: calls.append(args[0].shape[0]))
    try:
        result = evaluate_slices(model, card, slices)
    finally:
        hook.remove()
    assert calls == [3, 1, 1] and result.n == 5
    runner = SliceRunner(model, card.recipe, card.config.img_size, 1, batch_size=1)
    for i, record in enumerate(result.cases):
        pred = runner(slices.images[i][None])[0][0].astype(np.int64)
        assert pred.shape == slices.labels[i].shape
        alone = per_class_metrics(pred, slices.labels[i], [1], slices.spacing[i])
        assert record["metrics"][1]["dice"] == pytest.approx(alone[1]["dice"], abs=1e-3)  # batch 3 vs 1: rounding


def test_test_time_flips_average_the_mirrored_logits(data_dir):
    """A recipe's ``tta`` runs the network on the mirrored input too and averages the logits mirrored
    back, on a real colonoscopy frame: a left-to-right ramp network gives the plain pass's ramp plus
    its mirror, so the average is flat; vflip is measured the same way; routing-style runners
    (``tta=False``) keep one pass, and a bad flip list is refused naming the card."""
    from braunet.infer import ISIC_RGB
    from braunet.io import read_image

    image = read_image(data_dir / "cvc_clinicdb" / "images" / "139.tif").array
    calls = []

    def ramp(x: torch.Tensor) -> torch.Tensor:  # logits = mean intensity + column index (not mirror-symmetric)
        calls.append(x.clone())
        cols = torch.arange(x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, x.shape[-2], -1)
        return x.mean(dim=1, keepdim=True) + cols

    plain = SliceRunner(ramp, parse_preprocessing(ISIC_RGB), 64, 1)
    flipped = SliceRunner(ramp, parse_preprocessing({**ISIC_RGB, "tta": ["hflip"]}), 64, 1)
    both = SliceRunner(ramp, parse_preprocessing({**ISIC_RGB, "tta": ["hflip", "vflip"]}), 64, 1)
    once = SliceRunner(ramp, parse_preprocessing({**ISIC_RGB, "tta": ["hflip"]}), 64, 1, tta=False)
    x = plain.prepare(image[None])
    base = plain.logits(x)
    intensity = x.mean(dim=1, keepdim=True)
    mirrored = (intensity.flip(-1) + torch.arange(64.0)).flip(-1)  # the network on the mirror, mirrored back
    torch.testing.assert_close(flipped.logits(x), (base + mirrored) / 2)
    assert torch.allclose(flipped.logits(x) - intensity, torch.full_like(base, 31.5))  # the ramp averages out
    up_down = (intensity.flip(-2) + torch.arange(64.0)).flip(-2)
    torch.testing.assert_close(both.logits(x), (base + mirrored + up_down) / 3)
    calls.clear()
    once.logits(x)
    assert len(calls) == 1
    for bad in (["rotate"], ["hflip", "hflip"], "hflip"):
        with pytest.raises(CheckpointError, match="tta must list distinct flips"):
            parse_preprocessing({**ISIC_RGB, "tta": bad}, source="card.json")
    with pytest.raises(CheckpointError, match="card.json: tta is an RGB option"):
        parse_preprocessing({**SYNAPSE_CT, "tta": ["hflip"]}, source="card.json")


def test_a_float16_overflow_falls_back_to_float32():
    """float16 autocast (MPS, older CUDA GPUs) holds values up to 65504: a network whose activations
    exceed it gives NaN there, so the runner re-runs the batch in float32, says so in ``precision``,
    and stays in float32. (Forced here on the CPU, whose autocast also runs float16 convolutions.)"""
    from braunet.infer import ISIC_RGB

    big = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        big.weight.fill_(4e4)  # activations of ~1e5: finite in float32, infinite in float16
        big.bias.zero_()
    runner = SliceRunner(big, parse_preprocessing(ISIC_RGB), 32, 1)
    runner.autocast, runner.precision = torch.float16, "fp16"
    x = torch.ones(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(big(x)).all()  # the premise: float16 overflows here
    logits = runner.logits(x)
    assert torch.isfinite(logits).all() and runner.precision == "fp32" and runner.autocast is None
    torch.testing.assert_close(logits, torch.full_like(logits, 1.2e5))
