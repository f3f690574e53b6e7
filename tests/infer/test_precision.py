"""Precision as a choice: how auto|fp32|bf16 resolves, bf16 labels against fp32 on a real CT, the CLI line."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from braunet.cli import main
from braunet.errors import InputError
from braunet.infer import SliceRunner, predict_volume, resolve_precision
from braunet.infer import device as device_module
from braunet.infer.device import bf16_validated
from braunet.io import read_image

CPU = torch.device("cpu")
PASSING = {"label_agreement": 0.999, "max_dice_change": 0.002, "split": "test", "date": "2026-12-01"}


@pytest.fixture()
def native(monkeypatch):
    """Set whether this CPU counts as having native bf16: ``native(True)``."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(device_module, "_cpu_bf16_native", lambda: value)

    return set_native


def test_auto_needs_both_the_hardware_and_the_card(native):
    native(True)
    assert resolve_precision("auto", CPU, validated=True) == "bf16"
    assert resolve_precision("auto", CPU, validated=False) == "fp32"
    native(False)
    assert resolve_precision("auto", CPU, validated=True) == "fp32"


def test_explicit_choices_and_one_warning_for_emulated_bf16(native, monkeypatch):
    native(False)
    monkeypatch.setattr(device_module, "_warned_emulated", set())
    assert resolve_precision("FP32", CPU) == "fp32"
    with pytest.warns(RuntimeWarning, match="no native bfloat16"):
        assert resolve_precision("bf16", CPU) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) == "bf16"  # once per device type
    with pytest.raises(InputError, match="choose one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)


def test_card_record_bounds():
    assert bf16_validated({"bf16_validated": PASSING})
    assert not bf16_validated({})
    assert not bf16_validated({"bf16_validated": {**PASSING, "label_agreement": 0.99}})
    assert not bf16_validated({"bf16_validated": {**PASSING, "max_dice_change": 0.0051}})
    assert not bf16_validated({"bf16_validated": {"split": "no figures"}})


def test_runner_resolves_once_and_autocasts(native):
    native(True)
    seen = []

    def network(x):
        seen.append(torch.is_autocast_cpu_enabled())
        return torch.cat([torch.zeros_like(x), x], dim=1)

    fp32 = SliceRunner(network, None, 16, 2, precision="auto")
    bf16 = SliceRunner(network, None, 16, 2, precision="auto", bf16_validated=True)
    legacy = SliceRunner(network, None, 16, 2, amp=True)  # amp never autocasts on a CPU
    assert (fp32.precision, bf16.precision, legacy.precision) == ("fp32", "bf16", "fp32")
    x = torch.randn(1, 1, 16, 16)
    for runner in (fp32, bf16, legacy):
        assert runner.logits(x).dtype == torch.float32
    assert seen == [False, True, False]


@pytest.fixture(scope="module")
def bundled_ct():
    from braunet import zoo

    if "ct-abdomen-8" not in zoo.list_models():
        pytest.skip("bundled model ct-abdomen-8 is not installed (models/ct-abdomen-8)")
    return zoo.load_model("ct-abdomen-8")


def test_bf16_labels_agree_with_fp32_on_a_real_ct_slice(bundled_ct, data_dir):
    model, card = bundled_ct
    volume = read_image(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")  # (122, 101, 30); slice 24 = case01's 106
    fp32 = predict_volume(model, card, volume, slices=[24], precision="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16 on a CPU without it
        bf16 = predict_volume(model, card, volume, slices=[24], precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert np.count_nonzero(fp32.labels[..., 24]) > 1000  # organs on it, not an empty slice
    assert np.mean(fp32.labels[..., 24] == bf16.labels[..., 24]) >= 0.99


def test_cli_prints_the_precision_that_ran(data_dir, ct_model_dir, tmp_path, capsys):
    ct = data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"
    code = main(["predict", str(ct), "-o", str(tmp_path / "a.nii.gz"), "--model", str(ct_model_dir), "--precision", "fp32"])
    assert code == 0 and capsys.readouterr().out.rstrip().endswith("(tiny-ct) [fp32]")
    code = main(["predict", str(ct), "-o", str(tmp_path / "b.nii.gz"), "--model", str(ct_model_dir)])
    assert code == 0 and capsys.readouterr().out.rstrip().endswith("(tiny-ct) [fp32]")  # auto, no record on the card


def test_measure_and_record_bf16_in_a_card(data_dir, ct_model_dir, tmp_path, native):
    from braunet.model import read_card
    from braunet.train.bf16 import measure_bf16, write_bf16_record
    from braunet.zoo import load_model

    native(True)
    folder = shutil.copytree(ct_model_dir, tmp_path / "tiny-ct")
    model, card = load_model(folder)
    ct = data_dir / "totalseg_ct"
    pairs = [(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", [20, 24])]
    record = measure_bf16(model, card, pairs, split="case01sm slices 20, 24")
    assert 0.0 <= record["label_agreement"] <= 1.0 and set(record["dice_change"]) == set(card.class_names[1:])
    assert record["passed"] == bf16_validated({"bf16_validated": record})
    write_bf16_record(folder, {**record, **PASSING})
    assert read_card(folder).extra["bf16_validated"]["split"] == "test"
    _, validated = load_model(folder)
    volume = read_image(ct / "case01sm_ct.nii.gz")
    assert predict_volume(model, validated, volume, slices=[24], precision="auto").precision == "bf16"
