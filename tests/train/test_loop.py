"""The one training loop, :func:`braunet.train.loop.fit`, on real CT slices with the tiny preset at 64 px:
exact resume, cancellation, keep-best, budgets and state files written before the loop."""

from __future__ import annotations

import pytest
import torch

from braunet.errors import Cancelled, CheckpointError
from braunet.model import BRAUNet, get_preset
from braunet.train.datasets import AugmentedSlices, prepare
from braunet.train.loop import STATE_FILE, FitConfig, FitHooks, fit, used_parameters
from braunet.train.losses import make_loss
from braunet.train.slices import load_volume_pair
from tests.train._shared import data_root, one_torch_thread, tiny_card  # noqa: F401


@pytest.fixture(scope="module")
def slices():
    """Six real axial CT slices (Synapse labels) prepared at 64 px: 3 steps of 2 per epoch."""
    ct = data_root() / "totalseg_ct"
    if not ct.is_dir():
        pytest.skip("shared data not found")
    card = tiny_card(9, "ct")
    data = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9,
                            slices=range(10, 22, 2))
    return prepare(data, card.preprocessing, 64, 9)


def _model() -> BRAUNet:
    torch.manual_seed(0)
    return BRAUNet(get_preset("tiny", num_classes=9, img_size=64))


def _run(model: BRAUNet, data, config: FitConfig, hooks: FitHooks | None = None, **kwargs):
    criterion = make_loss(9)
    return fit(model, used_parameters(model), AugmentedSlices(data, "ct", seed=3),
               loss=lambda logits, batch: criterion(logits, batch[1]),
               optimizer=lambda params: torch.optim.AdamW(params, lr=2e-3),
               lr=lambda at: 2e-3 * (1 - at.step / (at.total_steps or 1)), config=config, hooks=hooks, **kwargs)


def _equal(a: BRAUNet, b: BRAUNet) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_resume_after_a_cancel_ends_with_the_weights_of_an_uninterrupted_run(slices, tmp_path):
    config = FitConfig(epochs=2, batch_size=2, state_file=tmp_path / "run" / STATE_FILE, seed=1)
    straight = _model()
    done = _run(straight, slices, FitConfig(epochs=2, batch_size=2, seed=1))
    assert done.state.step == 6 and len(done.state.history) == 2 and not straight.training

    calls = []
    interrupted = _model()
    with pytest.raises(Cancelled, match="resume"):  # stopped inside epoch 0, after its 2nd of 3 steps
        _run(interrupted, slices, config, FitHooks(should_stop=lambda: calls.append(1) or len(calls) == 2))
    saved = torch.load(config.state_file, weights_only=True)
    assert (saved["epoch"], saved["batch"], saved["step"], len(saved["epoch_losses"])) == (0, 2, 2, 2)

    config.resume = True
    model = _model()
    resumed = _run(model, slices, config)
    assert resumed.state.step == 6 and [h["epoch"] for h in resumed.state.history] == [0, 1]
    assert resumed.losses == pytest.approx(done.losses, rel=1e-6)
    assert _equal(model, straight)


def test_a_resumed_state_must_belong_to_the_same_run(slices, tmp_path):
    config = FitConfig(epochs=1, batch_size=2, max_steps=1, state_file=tmp_path / STATE_FILE)
    _run(_model(), slices, config, state_check={"model_config": "tiny-64"})
    config.resume = True
    with pytest.raises(CheckpointError, match="saved for a different model_config; cannot resume"):
        _run(_model(), slices, config, state_check={"model_config": "other"})


def test_keep_best_restores_the_best_validation_weights(slices):
    scores = iter([0.2, 0.5, 0.3])
    after_epoch: list[dict[str, torch.Tensor]] = []
    best_epochs = []
    model = _model()
    hooks = FitHooks(
        validate=lambda: next(scores), on_best=lambda state: best_epochs.append(state.best_epoch),
        on_epoch_end=lambda state, record, last: after_epoch.append(
            {k: v.clone() for k, v in model.state_dict().items()}),
    )
    result = _run(model, slices, FitConfig(epochs=3, batch_size=2, metric="val_dice"), hooks)
    assert [h["val_dice"] for h in result.state.history] == [0.2, 0.5, 0.3]
    assert best_epochs == [0, 1] and (result.state.best_epoch, result.state.best_score) == (1, 0.5)
    assert all(torch.equal(v, after_epoch[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, after_epoch[2][k]) for k, v in model.state_dict().items())


def test_lower_is_better_with_ties_and_keeping_the_last_weights(slices):
    losses = iter([0.5, 0.5, 0.7])
    model = _model()
    last: list[dict[str, torch.Tensor]] = []
    hooks = FitHooks(validate=lambda: next(losses), is_better=lambda new, best: new <= best,
                     on_epoch_end=lambda state, record, end: last.append(dict(model.state_dict())))
    result = _run(model, slices, FitConfig(epochs=3, batch_size=2, restore_best=False), hooks)
    assert (result.state.best_epoch, result.state.best_score) == (1, 0.5)  # the tie replaced epoch 0
    assert all(torch.equal(v, last[-1][k]) for k, v in model.state_dict().items())


def test_a_step_budget_closes_the_epoch_it_ends_in_and_validates_it(slices):
    validated = []
    hooks = FitHooks(validate=lambda: validated.append(1) or 0.1)
    result = _run(_model(), slices, FitConfig(epochs=5, batch_size=2, max_steps=4, val_every=3), hooks)
    assert result.state.step == 4 and result.state.epoch == 2 and len(validated) == 1  # the last epoch validates
    assert "val_score" in result.state.history[-1] and "val_score" not in result.state.history[0]


def test_state_files_written_before_the_loop_resume(slices, tmp_path):
    """The trainer's files had best_dice and no batch position, RNG or best weights: still understood."""
    path = tmp_path / STATE_FILE
    _run(_model(), slices, FitConfig(epochs=1, batch_size=2, state_file=path), FitHooks(validate=lambda: 0.4))
    saved = torch.load(path, weights_only=True)
    for key in ("batch", "epoch_losses", "rng", "best_model", "total_steps"):
        saved.pop(key, None)
    saved["best_dice"] = saved.pop("best_score")
    torch.save(saved, path)
    model = _model()
    result = _run(model, slices, FitConfig(epochs=2, batch_size=2, state_file=path, resume=True),
                  FitHooks(validate=lambda: 0.1, load_best=lambda: dict(saved["model"])))
    assert result.state.step == 6 and (result.state.best_epoch, result.state.best_score) == (0, 0.4)
    assert all(torch.equal(v, saved["model"][k]) for k, v in model.state_dict().items())  # best from before


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _bad_state(kind: str, path, tmp_path) -> None:
    """Turn the valid state file at ``path`` into one of the bad files ``braunet train --resume`` met."""
    data = path.read_bytes()
    saved = torch.load(path, weights_only=True)
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif kind == "malicious":
        torch.save({**saved, "hook": _Payload(tmp_path / "code-ran")}, path)
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no optimizer":
        torch.save({"model": saved["model"]}, path)
    elif kind == "epoch is text":
        torch.save({**saved, "epoch": "3"}, path)
    elif kind == "other model":
        torch.save({**saved, "model": BRAUNet(get_preset("tiny", num_classes=4, img_size=64)).state_dict()}, path)
    elif kind == "optimizer of another model":
        other = BRAUNet(get_preset("tiny", num_classes=4, img_size=64, depth=(1, 1, 1, 1)))
        opt = torch.optim.AdamW(other.parameters())
        torch.save({**saved, "optimizer": opt.state_dict()}, path)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["truncated", "empty", "garbage", "malicious", "list", "tensor", "no optimizer", "epoch is text", "other model",
     "optimizer of another model"],
)
def test_a_bad_state_file_is_one_checkpoint_error_naming_it(slices, tmp_path, kind):
    """Raw tracebacks from ``train --resume`` (issue 12, item 10): now one line, nothing executed."""
    path = tmp_path / STATE_FILE
    _run(_model(), slices, FitConfig(epochs=1, batch_size=2, max_steps=1, state_file=path))
    _bad_state(kind, path, tmp_path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        _run(_model(), slices, FitConfig(epochs=1, batch_size=2, max_steps=2, state_file=path, resume=True))
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert not (tmp_path / "code-ran").exists() and path.read_bytes() == before
