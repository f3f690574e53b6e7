"""The bundled models keep the quality their cards report, on the held-out validation split of
``scripts/train_bundled.py`` (by CT subject, video sequence or image; never seen in training).

A regression test, not a benchmark: each floor sits a little below the figure measured when the
model was trained (the card's ``metrics.validation_<source>``), so a retrained or converted model
that got worse fails here. The splits come from the training script itself, so the test and the
training cannot drift apart.
"""

from __future__ import annotations

import json

import pytest
from bench._common import load_train_bundled

from braunet.train.evaluate import evaluate_slices
from braunet.zoo import resolve_model

# model -> validation source -> {class name or "mean": floor}. Measured figures: models/<name>/card.json
# and models/README.md; floors are the measured Dice minus 0.03 (0.05 for classes scored on one subject).
FLOORS: dict[str, dict[str, dict[str, float]]] = {
    "ct-abdomen-8": {  # measured 2026-12-01: scripts/train_bundled.py, 3506 steps
        "curvas_heldout_subjects": {"mean": 0.62, "liver": 0.72, "kidney_left": 0.80, "kidney_right": 0.67,
                                    "pancreas": 0.28},  # measured 0.657, 0.757, 0.839, 0.701, 0.331
        "msd_heldout_cases": {"spleen": 0.92},  # measured 0.950
        "case01_top_slab": {"liver": 0.92, "spleen": 0.88, "stomach": 0.48, "aorta": 0.61},  # 0.954 0.937 0.537 0.662
    },
    "polyp": {  # measured 2026-12-01: 8888 steps (130 min, resumed twice), test-time flips h + v
        "cvc_heldout_sequences": {"polyp": 0.63},  # measured 0.664
        "kvasir_heldout_images": {"polyp": 0.77},  # measured 0.807
    },
    "skin-lesion": {  # measured 2026-12-01: 2096 steps, test-time flip h
        "isic_heldout_crops": {"lesion": 0.90},  # measured 0.935
        "ph2_heldout_full_images": {"lesion": 0.87},  # measured 0.903
    },
}


@pytest.fixture(scope="module")
def script(shared_data):
    """scripts/train_bundled.py as a module, reading the shared data folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BRAUNET_DATA_DIR", str(shared_data))
        yield load_train_bundled()


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_bundled_model_meets_its_floor_on_held_out_cases(script, shared_data, name):
    source = resolve_model(name)
    model, card = source.load("cpu")
    bundle = script.BUILDERS[name](shared_data, None)
    recorded = json.loads((source.folder / "card.json").read_text())["metrics"]
    failures = []
    for split, floors in FLOORS[name].items():
        evaluation = evaluate_slices(model, card, bundle.val[split])
        measured = {"mean": evaluation.mean_dice, **{k: v["dice"] for k, v in evaluation.per_class.items()}}
        card_figures = recorded[f"validation_{split}"]
        # the card reports what this split gives: the same model, the same slices, the same code
        assert measured["mean"] == pytest.approx(card_figures["mean_dice"], abs=0.01), (split, measured)
        failures += [f"{split} {key}: Dice {measured[key]:.3f} < floor {floor}" for key, floor in floors.items()
                     if not measured[key] >= floor]  # fmt: skip
    assert not failures, failures
