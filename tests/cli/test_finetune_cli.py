"""``braunet finetune`` refuses before it trains: the wrong kind of input for the model, a taken or
unwritable output, a second run for the same output; and a version folder appears complete or not at all."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import threading
from pathlib import Path

import pytest

from braunet.cli import main
from braunet.model import load_checkpoint
from braunet.zoo import resolve_model


@pytest.fixture()
def frames(data_dir, tmp_path) -> tuple[Path, Path]:
    """Four real CVC frames and their masks, in images/ and masks/."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for frame in (1, 13, 26, 38):
        shutil.copy(data_dir / "cvc_clinicdb" / "images" / f"{frame}.tif", images)
        shutil.copy(data_dir / "cvc_clinicdb" / "masks" / f"{frame}.tif", masks)
    return images, masks


@pytest.fixture()
def rounds(monkeypatch):
    """Replace the fine-tuning round by one real step that is always accepted; records each round.

    ``hold`` (a threading.Event) makes a round wait until it is set, so a second run can be started
    while the first one trains.
    """
    from braunet.train import finetune as finetune_module

    real = finetune_module.finetune
    calls: list[str] = []
    hold = threading.Event()
    hold.set()
    entered = threading.Event()

    def accepting_round(model, card, images, labels, **options):
        calls.append(card.name)
        entered.set()
        hold.wait(30)
        result = real(model, card, images, labels, **{**options, "anchors": None, "max_steps": 1})
        child = copy.deepcopy(card)
        child.version, child.parent, child.training = card.version + 1, f"{card.name}@{card.version}", {
            "finetune": dict(result.details)}
        return dataclasses.replace(result, accepted=True, card=child)

    monkeypatch.setattr(finetune_module, "finetune", accepting_round)
    return type("Rounds", (), {"calls": calls, "hold": hold, "entered": entered})


def _args(model, images, labels, *extra) -> list[str]:
    return ["finetune", "--model", str(model), "--images", str(images), "--labels", str(labels),
            "--time-budget", "2", "--device", "cpu", *map(str, extra)]  # fmt: skip


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_ct_volume_is_refused_for_an_rgb_model_and_images_for_a_ct_model(
    data_dir, frames, rgb_model_dir, ct_model_dir, model_library, capsys
):
    """The check predict and evaluate use (braunet.infer.engine.check_input_kind), before any training."""
    ct = data_dir / "totalseg_ct"
    code = main(_args(rgb_model_dir, ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz"))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "case01sm_ct.nii.gz" in line and "segments 2-D RGB images, but this is a 3-D volume" in line
    code = main(_args(ct_model_dir, *frames))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and ".tif" in line and "segments 3-D CT volumes, but this is a 2-D image" in line
    assert list(model_library.iterdir()) == []
    # the same pairing through predict gives the same words
    assert main(["predict", str(ct / "case01sm_ct.nii.gz"), "-o", str(frames[0].parent / "x.nii.gz"),
                 "--model", str(rgb_model_dir)]) == 2  # fmt: skip
    assert "segments 2-D RGB images, but this is a 3-D volume" in capsys.readouterr().err


@pytest.mark.parametrize("taken", ["a file", "a folder with files", "missing parent"])
def test_a_bad_out_is_refused_before_training(taken, frames, rgb_model_dir, rounds, tmp_path, capsys):
    out = tmp_path / "out"
    if taken == "a file":
        out.write_text("notes\n")
    elif taken == "a folder with files":
        out.mkdir()
        (out / "keep.txt").write_text("mine\n")
    else:
        out = tmp_path / "no" / "out"
    code = main(_args(rgb_model_dir, *frames, "--out", out))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and str(out) in line and rounds.calls == []
    if taken == "a file":
        assert out.read_text() == "notes\n"
    elif taken == "a folder with files":
        assert os.listdir(out) == ["keep.txt"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_a_library_slot_being_written_is_refused_before_training(frames, rgb_model_dir, rounds, model_library, capsys):
    from braunet.train.versions import claim_version

    slot = model_library / "tiny-rgb" / "v2"
    with claim_version(slot):  # another run holds NAME@2
        code = main(_args(rgb_model_dir, *frames))
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and str(slot) in line and "another process is writing it" in line and rounds.calls == []
    assert main(_args(rgb_model_dir, *frames, "--json")) == 0 and resolve_model("tiny-rgb@2").version == 2


@pytest.mark.parametrize("where", ["--out", "library"])
def test_ctrl_c_while_saving_leaves_no_folder_and_the_rerun_works(where, frames, rgb_model_dir, rounds, tmp_path,
                                                                  model_library, capsys, monkeypatch):  # fmt: skip
    """Interrupted between the weights and the card: no half version folder, nothing that blocks a re-run."""
    from braunet.model.checkpoint import ModelCard

    out = tmp_path / "tuned" if where == "--out" else model_library / "tiny-rgb" / "v2"
    extra = ["--out", out] if where == "--out" else []

    def interrupted(self):
        assert any(p.name == "model.safetensors" for p in out.parent.rglob("*"))  # the weights are written
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ModelCard, "to_dict", interrupted)
        assert main(_args(rgb_model_dir, *frames, *extra)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    assert main(_args(rgb_model_dir, *frames, *extra)) == 0 and len(rounds.calls) == 2
    model, card = load_checkpoint(out)
    assert card.version == 2 and card.parent == "tiny-rgb@1"


@pytest.mark.parametrize("where", ["--out", "library"])
def test_a_second_run_for_the_same_output_is_refused_while_the_first_trains(
    where, frames, rgb_model_dir, rounds, tmp_path, model_library, capsys
):
    out = tmp_path / "tuned" if where == "--out" else model_library / "tiny-rgb" / "v2"
    extra = ["--out", out] if where == "--out" else []
    rounds.hold.clear()
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(main(_args(rgb_model_dir, *frames, *extra, "--json"))))
    first.start()
    try:
        assert rounds.entered.wait(60)  # the first run is training now
        second = main(_args(rgb_model_dir, *frames, *extra))
    finally:
        rounds.hold.set()
        first.join(60)
    err = capsys.readouterr().err
    assert second == 2 and "another process is writing it" in err and str(out) in err
    assert codes == [0] and len(rounds.calls) == 1
    assert load_checkpoint(out)[1].version == 2


def test_holdback_by_reaches_the_round_and_defaults_as_the_library_does(frames, rgb_model_dir, tmp_path, monkeypatch,
                                                                        capsys):
    """``--holdback-by`` is passed to the round; without it the CLI uses the library's default
    (the CLI spells it out so that ``--help`` loads no torch)."""
    from braunet.train import finetune as finetune_module

    real, seen = finetune_module.finetune, []

    def spying_round(model, card, images, labels, **options):
        seen.append(options["holdback_by"])
        return real(model, card, images, labels, **{**options, "anchors": None, "max_steps": 1})

    monkeypatch.setattr(finetune_module, "finetune", spying_round)
    images, masks = frames
    assert main(_args(rgb_model_dir, images, masks, "--out", tmp_path / "a")) == 0
    assert main(_args(rgb_model_dir, images, masks, "--holdback-by", "blocks", "--out", tmp_path / "b")) == 0
    assert seen == [finetune_module.DEFAULT_HOLDBACK_BY, "blocks"]
    assert finetune_module.HOLDBACK_UNITS == ("slices", "blocks")  # the CLI's choices
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(_args(rgb_model_dir, images, masks, "--holdback-by", "pixels"))
    assert exit_info.value.code == 2 and "--holdback-by" in capsys.readouterr().err
