"""The training loop on real CT slices with the tiny preset: learning, best checkpoint, resume, cancel."""

from __future__ import annotations

import json

import pytest
import torch

from braunet.errors import Cancelled
from braunet.model import load_checkpoint
from braunet.train.datasets import prepare
from braunet.train.loop import STATE_FILE
from braunet.train.losses import make_loss
from braunet.train.slices import load_volume_pair
from braunet.train.trainer import TrainConfig, _batch_loss, train
from braunet.train.validation import validation_dice
from tests.train._shared import data_root, one_torch_thread, tiny_card, tiny_model  # noqa: F401


@pytest.fixture(scope="module")
def ct_data():
    ct = data_root() / "totalseg_ct"
    if not ct.is_dir():
        pytest.skip("shared data not found")
    card = tiny_card(9, "ct")
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                              slices=range(8, 24, 2))
    return card, prepare(slices, card.preprocessing, 128, 9)


def test_training_fits_real_slices_and_keeps_the_best_checkpoint(ct_data, tmp_path):
    card, data = ct_data
    model = tiny_model(card)
    before = validation_dice(model, data).mean
    config = TrainConfig(epochs=20, batch_size=4, lr=3e-3, warmup_steps=5, augment="none", val_every=4)
    result = train(model, card, data, data, tmp_path, config, device="cpu")
    # fitting 8 real slices of 8 organs: the large organs are learned first (40 steps)
    assert before < 0.1 and result.best_dice > 0.2
    assert result.history[result.best_epoch]["val_dice"] == pytest.approx(result.best_dice)
    assert result.best_dice == max(h["val_dice"] for h in result.history if "val_dice" in h)
    loaded, saved_card = load_checkpoint(tmp_path)
    assert validation_dice(loaded, data).mean == pytest.approx(result.best_dice, abs=1e-6)
    assert saved_card.metrics["validation"]["mean_dice"] == pytest.approx(result.best_dice)
    assert saved_card.training["best_epoch"] == result.best_epoch and saved_card.training["steps"] == 40
    assert "liver" not in saved_card.metrics["validation"]["per_class_dice"]  # tiny_card names c1..c8
    per_class = saved_card.metrics["validation"]["per_class_dice"]
    assert per_class["c5"] > 0.75 and per_class["c7"] > 0.5  # liver and spleen
    assert json.loads((tmp_path / "card.json").read_text())["training"]["settings"]["lr"] == 3e-3


def test_resume_continues_where_it_stopped(ct_data, tmp_path):
    card, data = ct_data
    config = TrainConfig(epochs=3, batch_size=4, augment="ct", val_every=1)
    steps = []
    with pytest.raises(Cancelled):  # stopped after epoch 1 (2 steps per epoch)
        train(tiny_model(card), card, data, data, tmp_path / "run", config, device="cpu",
              should_stop=lambda: steps.append(1) or len(steps) == 4)
    resumed = train(tiny_model(card, seed=5), card, data, data, tmp_path / "run", config, resume=True, device="cpu")
    assert resumed.epochs_run == 3 and resumed.steps == 6 and len(resumed.history) == 3
    # the same run without interruption gives the same losses (same seed, per-epoch shuffles and augmentation)
    straight = train(tiny_model(card), card, data, data, tmp_path / "straight", config, device="cpu")
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in resumed.history], rel=1e-5)
    assert straight.best_dice == pytest.approx(resumed.best_dice, abs=1e-6)


def test_should_stop_saves_a_resumable_state_and_raises(ct_data, tmp_path):
    card, data = ct_data
    calls = []
    with pytest.raises(Cancelled, match="resume"):
        train(tiny_model(card), card, data, None, tmp_path, TrainConfig(epochs=5, batch_size=4), device="cpu",
              should_stop=lambda: calls.append(1) or len(calls) >= 3)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 3


def test_partial_labels_do_not_punish_unannotated_organs():
    """A liver-only slice: predicting spleen where the label says 0 costs nothing extra."""
    torch.manual_seed(0)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :4] = 5
    logits = torch.full((1, 9, 8, 8), -4.0)
    logits[:, 5, :4] = 4.0
    logits[:, 7, 4:] = 4.0  # confident spleen in the unlabelled half
    known_all = torch.ones(1, 9, dtype=torch.bool)
    known_liver = torch.zeros(1, 9, dtype=torch.bool)
    known_liver[0, [0, 5]] = True
    criterion = make_loss(9)
    full = _batch_loss(criterion, logits, target, known_all)
    partial = _batch_loss(criterion, logits, target, known_liver)
    assert partial < 0.05 < full
    # and a missed liver still costs as much under both
    logits[:, 5, :4] = -4.0
    assert _batch_loss(criterion, logits, target, known_liver) > 0.5


def test_train_on_slices_prepares_seeds_and_trains_without_validation(tmp_path):
    """The library entry the CLI and scripts/train_bundled.py share: slice sets at their own size in,
    a saved model out; no validation set keeps the last weights."""
    from braunet.train.run import train_on_slices

    ct = data_root() / "totalseg_ct"
    if not ct.is_dir():
        pytest.skip("shared data not found")
    card = tiny_card(9, "ct")
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                              slices=range(8, 16, 2))
    config = TrainConfig(epochs=1, batch_size=2, augment="none", seed=4)
    result = train_on_slices(card, slices, None, tmp_path / "a", config, device="cpu")
    again = train_on_slices(card, slices, None, tmp_path / "b", config, device="cpu")
    assert result.best_dice is None and result.best_epoch == 0 and result.steps == 2
    assert result.card.training["n_train_slices"] == 4 and result.card.training["n_val_slices"] == 0
    loaded, _ = load_checkpoint(tmp_path / "a")
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in loaded.state_dict().items())  # seeded
