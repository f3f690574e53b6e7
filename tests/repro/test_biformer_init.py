"""--init-encoder: the official load_from rule on the real BiFormer-base key layout, and safe loading."""

from __future__ import annotations

import argparse
import json
import pathlib
from pathlib import Path

import pytest
import torch

from braunet.errors import CheckpointError
from braunet.model import BRAUNet, get_preset
from braunet.repro.biformer_init import init_encoder_from_biformer, official_key_names, read_training_checkpoint


@pytest.fixture(scope="module")
def layout(biformer_fixtures: Path) -> tuple[dict[str, list[int]], dict]:
    keys = json.loads((biformer_fixtures / "biformer_base_keys.json").read_text())
    mapping = json.loads((biformer_fixtures / "load_from_mapping.json").read_text())
    return keys, mapping


def _synthetic_checkpoint(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Random float32 tensors of the listed shapes; int64 scalars for the BatchNorm counters."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randint(1, 1000, (), generator=g) if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=g) for k, shape in keys.items()}


@pytest.fixture(scope="module")
def checkpoint(layout) -> dict[str, torch.Tensor]:
    return _synthetic_checkpoint(layout[0])


@pytest.fixture(scope="module")
def synapse_model() -> BRAUNet:
    """The official Synapse build with every tensor set to -7 (built on "meta", then allocated:
    seconds faster than the random init of 62 M parameters, and any tensor the loader touches shows)."""
    with torch.device("meta"):
        model = BRAUNet(get_preset("synapse"))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(-7)
    return model


def test_matches_official_load_from(layout, checkpoint, synapse_model: BRAUNet) -> None:
    _, expected = layout
    state = checkpoint
    model = synapse_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_encoder_from_biformer(model, {"model": state, "epoch": 300})
    assert report.loaded == expected["loaded"]  # same keys, checkpoint order
    assert report.dropped_missing == expected["dropped_missing"]
    assert report.dropped_shape == [] == expected["dropped_shape"]
    assert set(report.left_random) == set(expected["model_keys_not_initialised"])
    assert len(report.left_random) == expected["counts"]["model_keys_not_initialised"] == 267
    assert sorted(report.loaded_unused) == sorted(expected["loaded_but_never_used_in_forward"])
    assert report.loaded_elements == expected["counts"]["loaded_numel"]
    ours = {official: key for key, official in official_key_names(model).items()}
    after = model.state_dict()
    for name in report.loaded:  # every copied tensor equals the checkpoint's
        assert torch.equal(after[ours[name]], state[name].to(after[ours[name]].dtype)), name
    for name in report.left_random:  # and nothing else changed, BatchNorm counters included
        assert torch.equal(after[ours[name]], before[ours[name]]), name


def test_other_builds_map_the_same_but_a_one_channel_stem(layout, checkpoint) -> None:
    """The ISIC build (256 px, 8 windows, 1 class) takes the same keys; built with 1 input channel
    (the official model never is) exactly the stem conv is dropped for its shape."""
    _, expected = layout
    with torch.device("meta"):  # reason: only names and shapes matter here; no memory, no init time
        model = BRAUNet(get_preset("isic", in_chans=1))
    report = init_encoder_from_biformer(model, {"model": checkpoint})
    assert report.dropped_shape == [("downsample_layers.0.0.weight", (48, 3, 3, 3), (48, 1, 3, 3))]
    assert report.loaded == [k for k in expected["loaded"] if k != "downsample_layers.0.0.weight"]
    assert report.dropped_missing == expected["dropped_missing"]


def test_unrelated_checkpoint_is_refused() -> None:
    with pytest.raises(CheckpointError, match="no tensor matches"):
        init_encoder_from_biformer(BRAUNet(get_preset("tiny")), {"model": {"fc.weight": torch.zeros(3, 3)}})


def test_training_checkpoint_with_namespace_and_paths_loads(tmp_path: Path) -> None:
    """A BiFormer best.pth pickles the run's argparse Namespace (with paths) and optimizer state."""
    source = BRAUNet(get_preset("tiny"))
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.ones(3)
    optimizer.step()
    args = argparse.Namespace(model="biformer_base", lr=5e-4, output=pathlib.PosixPath("/runs/biformer"),
                              data_path=pathlib.Path("imagenet"), drop_path=0.3)
    path = tmp_path / "biformer_base_best.pth"
    torch.save({"model": source.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 299,
                "args": args, "max_accuracy": 84.3, "lr_scheduler": {"last_epoch": 299}}, path)
    loaded = read_training_checkpoint(path)
    assert isinstance(loaded["args"], argparse.Namespace)
    assert loaded["args"].output == pathlib.PurePosixPath("/runs/biformer")
    assert not isinstance(loaded["args"].output, pathlib.Path)  # pure path: cannot touch the file system
    target = BRAUNet(get_preset("tiny"))
    report = init_encoder_from_biformer(target, path)
    assert report.source == path.name
    assert len(report.loaded) == len(source.state_dict()) and not report.left_random
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), source.state_dict().values(), strict=True))


class Payload:
    """An unknown class whose unpickling would run code."""

    def __reduce__(self):
        marker = str(MARKER)
        return (open, (marker, "w"))


MARKER = Path()


def test_unknown_class_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    global MARKER
    MARKER = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"stages.0.0.norm1.weight": torch.ones(16)}, "args": argparse.Namespace(x=1),
                "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="io.open"):
        init_encoder_from_biformer(BRAUNet(get_preset("tiny")), path)
    assert not MARKER.exists()
