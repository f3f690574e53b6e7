"""braunet train --recipe and braunet evaluate --protocol official, in process and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from braunet.cli import main

TOY_SET = ["epochs=2", "batch_size=2", "model.preset=tiny", "model.overrides.img_size=64", "evaluation.every_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, transunet_root: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli") / "synapse-toy"
    code = main(["train", "--recipe", "synapse", "--data", f"transunet:{transunet_root}", "--out", str(out),
                 "--json", "--set", *TOY_SET])
    assert code == 0
    return out, json.loads((out / "card.json").read_text())


def test_train_recipe_writes_a_model(trained, capsys) -> None:
    out, card = trained
    assert card["training"]["recipe"] == "synapse" and card["training"]["overrides"]["model.preset"] == "tiny"
    assert card["config"]["img_size"] == 64 and card["config"]["num_classes"] == 9
    assert "official_test" in card["metrics"]


def test_evaluate_official_matches_the_training_evaluation(trained, transunet_root: Path, ct_pair, capsys) -> None:
    out, card = trained
    assert main(["evaluate", "--protocol", "official", "--model", str(out), "--data",
                 f"transunet:{transunet_root}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["official"]["mean_dice"] == pytest.approx(card["metrics"]["official_test"]["official"]["mean_dice"])
    assert report["ours"]["per_class"].keys() == report["official"]["per_class"].keys()
    assert main(["evaluate", "--protocol", "official", "--model", str(out), "--images", str(ct_pair[0]),
                 "--labels", str(ct_pair[1])]) == 0
    table = capsys.readouterr().out
    assert "HD95 vox" in table and "HD95 mm" in table and "liver" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "x"], "give --preset, --images and --labels (or --recipe NAME)"),
        (["train", "--recipe", "isic", "--data", "transunet:/nowhere", "--out", "x"], "give --images and --labels"),
        (["train", "--recipe", "synapse", "--out", "x"], "give --data transunet:PATH"),
        (["train", "--recipe", "synapse", "--images", "a", "--labels", "b", "--out", "x"], "not --images/--labels"),
        (["train", "--recipe", "synapse", "--data", "/nowhere", "--out", "x"], "expected transunet:PATH"),
        (["train", "--recipe", "synapse3", "--out", "x"], "unknown recipe 'synapse3'"),
        (["evaluate", "--model", "x", "--protocol", "official"], "give either --data"),
    ],
)
def test_bad_invocations_fail_with_one_line(argv, message, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_recipe_under_torchrun_two_processes(tmp_path: Path, transunet_root: Path) -> None:
    """Two CPU processes (gloo): DistributedSampler halves the steps, rank 0 evaluates and writes."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "braunet", "train", "--recipe", "synapse", "--data", f"transunet:{transunet_root}",
               "--out", str(out), "--device", "cpu", "--json", "--set", *TOY_SET]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["steps"] == 4  # 6 slices -> 3 per rank -> 2 steps x 2 epochs
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["world_size"] == 2 and "official_test" in card["metrics"]


def test_isic_recipe_and_official_binary_evaluation_from_the_command_line(tmp_path: Path, shared_data: Path,
                                                                            capsys) -> None:
    folder = shared_data / "isic2016_crops"
    ids = ["ISIC_0000012", "ISIC_0000014", "ISIC_0000015", "ISIC_0000022", "ISIC_0000023", "ISIC_0000036",
           "ISIC_0000037", "ISIC_0000043"]
    images = [str(folder / "images" / f"{i}.jpg") for i in ids]
    masks = [str(folder / "masks" / f"{i}.png") for i in ids]
    out = tmp_path / "isic"
    assert main(["train", "--recipe", "isic", "--images", *images, "--labels", *masks, "--out", str(out), "--json",
                 "--set", "epochs=1", "batch_size=2", "model.preset=tiny", "model.overrides.img_size=64",
                 'split={"test_fraction": 0.25, "seed": 42, "folds": 2, "val_fold": 0}']) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["test"]) == {"mean_dice", "mean_iou"}
    assert main(["evaluate", "--protocol", "official", "--model", str(out), "--images", *images[:3],
                 "--labels", *masks[:3], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "official-binary" and report["n"] == 3 and report["ours"]["n"] == 3
