"""The bundled recipes say what the official scripts do; schedule, split and augmentation helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from braunet.errors import InputError
from braunet.repro.recipes import list_recipes, load_recipe
from braunet.repro.runner import learning_rate
from braunet.repro.splits import group_kfold, official_split


def test_bundled_recipes_state_the_official_protocols() -> None:
    assert list_recipes() == ["cvc", "isic", "synapse", "synapse-nosccsa"]
    synapse = load_recipe("synapse")
    assert synapse["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0001}
    assert (synapse["schedule.name"], synapse["schedule.power"], synapse["batch_size"], synapse["epochs"]) == (
        "poly", 0.9, 24, 400)
    assert synapse["loss"] == {"name": "dice_ce", "ce_weight": 0.4, "dice_weight": 0.6}
    assert synapse["evaluation.every_epochs"] == 20 and synapse["evaluation.start_fraction"] == 0.5
    config = synapse.model_config()
    assert (config.img_size, config.num_classes, config.n_win, config.use_sccsa) == (224, 9, 7, True)
    assert (synapse["paper.dsc"], synapse["paper.hd95"]) == (82.47, 19.07)
    for name, dsc, miou in (("isic", 90.10, 84.01), ("cvc", 92.94, 88.17)):
        recipe = load_recipe(name)
        assert recipe["optimizer"] == {"name": "adam", "lr": 0.0005, "weight_decay": 0.0}
        assert recipe["schedule.name"] == "cosine" and recipe["schedule.t_max_epochs"] == 200
        assert (recipe["batch_size"], recipe["epochs"], recipe["loss.name"]) == (8, 200, "soft_dice")
        assert recipe["split"]["folds"] == 5 and recipe["split"]["group_by"] == "image"
        assert recipe["augmentation.coarse_dropout.holes"] == 8
        config = recipe.model_config()
        assert (config.img_size, config.num_classes, config.n_win) == (256, 1, 8)
        assert (recipe["paper.dsc"], recipe["paper.miou"]) == (dsc, miou)
    for name in list_recipes():
        deviations = load_recipe(name)["deviations"]
        assert deviations and all({"topic", "official", "ours", "why"} <= set(d) for d in deviations)


def test_no_sccsa_recipe_builds_the_31_40_m_ablation() -> None:
    recipe = load_recipe("synapse-nosccsa")
    config = recipe.model_config()
    assert not config.use_sccsa and recipe["paper.dsc"] == 81.65
    from braunet.model import BRAUNet

    with torch.device("meta"):
        model = BRAUNet(config)
    used = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("stages.3."))
    assert round(used / 1e6, 2) == 31.40


def test_overrides_and_errors(tmp_path: Path) -> None:
    recipe = load_recipe("synapse").with_overrides({"epochs": 2, "model.preset": "tiny", "optimizer.lr": 0.01})
    assert recipe["epochs"] == 2 and recipe["optimizer.momentum"] == 0.9
    assert recipe.model_config().img_size == 128 and recipe["overrides"]["optimizer.lr"] == 0.01
    with pytest.raises(InputError, match="unknown recipe 'synapse2'"):
        load_recipe("synapse2")
    bad = load_recipe("isic").to_dict()
    bad["optimizer"]["name"] = "rmsprop"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"mine\.json: optimizer\.name = 'rmsprop'"):
        load_recipe(path)
    with pytest.raises(InputError, match="class names"):
        load_recipe("synapse").with_overrides({"model.num_classes": 4})


def test_poly_schedule_is_set_after_each_step_as_the_official_loop() -> None:
    recipe = load_recipe("synapse")
    max_steps = 400 * 93  # 2211 slices / 24 = 93 batches per epoch
    assert learning_rate(recipe, 0, 0, max_steps) == 0.05
    assert learning_rate(recipe, 1, 0, max_steps) == 0.05  # the official lr update comes after the step
    assert learning_rate(recipe, 2, 0, max_steps) == pytest.approx(0.05 * (1 - 1 / max_steps) ** 0.9)
    assert learning_rate(recipe, max_steps - 1, 399, max_steps) == pytest.approx(
        0.05 * (2 / max_steps) ** 0.9)


def test_cosine_schedule_per_epoch() -> None:
    recipe = load_recipe("isic")
    assert learning_rate(recipe, 123, 0, 10_000) == pytest.approx(5e-4)
    assert learning_rate(recipe, 0, 100, 10_000) == pytest.approx(2.5e-4)
    assert learning_rate(recipe, 0, 199, 10_000) == pytest.approx(5e-4 * (1 + math.cos(math.pi * 199 / 200)) / 2)
    short = recipe.with_overrides({"epochs": 2})  # T_max stays 200, as the official script hard-codes
    assert learning_rate(short, 0, 1, 10) == pytest.approx(5e-4 * (1 + math.cos(math.pi / 200)) / 2)


def test_group_kfold_follows_scikit_learn() -> None:
    # sizes a:3, b:2, c:2, d:1 -> largest first, each into the lightest fold (the first on ties)
    groups = ["a", "a", "a", "b", "b", "c", "c", "d"]
    folds = group_kfold(groups, 2)
    sizes = np.bincount(folds)
    assert sorted(sizes) == [4, 4]
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    assert folds[0] == 0
    with pytest.raises(InputError, match="at least 3 groups"):
        group_kfold(["a", "b"], 3)


def test_official_split_keeps_groups_apart() -> None:
    ids = [f"frame{i:03d}" for i in range(60)]
    sequences = [f"s{i // 3}" for i in range(60)]  # 20 sequences of 3 frames
    train, val, test = official_split(ids, sequences, test_fraction=0.1, seed=42, folds=5, val_fold=0)
    assert sorted(train + val + test) == list(range(60))
    sides = [{sequences[i] for i in part} for part in (train, val, test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(sides[2]) == 2 and len(sides[1]) in (3, 4)  # 10 % of 20 sequences; a fifth of the other 18
    assert official_split(ids, sequences) == (train, val, test)  # reproducible
    by_image = official_split(ids)  # the official grouping: every image its own group
    assert [len(part) for part in by_image] == [43, 11, 6]  # 54 train+val in folds of 11, 11, 11, 11, 10


def test_missformer_and_isic_augmentations_are_label_safe(shared_data: Path) -> None:
    import tifffile

    from braunet.repro.augment import (
        albumentations_isic_augment,
        coarse_dropout,
        missformer_augment,
        transunet_augment,
    )

    image = tifffile.imread(shared_data / "cvc_clinicdb" / "images" / "1.tif").astype(np.float32) / 255
    mask = (tifffile.imread(shared_data / "cvc_clinicdb" / "masks" / "1.tif") > 127).astype(np.int64)
    params = load_recipe("cvc")["augmentation"]
    rng = np.random.default_rng(0)
    for _ in range(8):
        out, lab = missformer_augment(image[..., 0], mask * 7, rng)
        assert out.shape == image.shape[:2] and set(np.unique(lab)) <= {0, 7}
        out, lab = transunet_augment(image[..., 0], mask * 7, rng)  # rot90 may swap H and W
        assert sorted(out.shape) == sorted(image.shape[:2]) and lab.shape == out.shape
        assert set(np.unique(lab)) <= {0, 7}
        out, lab = albumentations_isic_augment(image, mask, rng, params, fill=-1.0)
        assert out.shape == image.shape and set(np.unique(lab)) <= {0, 1}
    dropped = coarse_dropout(np.ones((64, 64, 3)), np.random.default_rng(1), fill=(-2.0, -3.0, -4.0))
    holes = dropped[..., 0] == -2.0
    assert 64 <= holes.sum() <= 8 * 64 and (dropped[holes][:, 2] == -4.0).all()
