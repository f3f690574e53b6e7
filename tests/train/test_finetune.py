"""Fine-tuning on real CVC frames with a tiny model: held-back Dice, acceptance, parent untouched,
frozen encoder, cancel, versions and rollback."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from braunet.errors import Cancelled, CheckpointError, InputError, OutputError
from braunet.model import load_checkpoint, save_checkpoint
from braunet.train import finetune as finetune_module
from braunet.train.finetune import REGION_GRID, _block_split, finetune
from braunet.train.slices import SliceSet
from braunet.train.versions import rollback, save_version
from braunet.zoo import list_versions, resolve_model
from tests.train._shared import CVC_FRAMES, data_root, one_torch_thread, state_equal, tiny_card, tiny_model  # noqa: F401


@pytest.fixture(scope="module")
def frames():
    """Frames of CVC sequences 1, 2 and 4 (RGB uint8) with 0/255 masks, as a user would correct them."""
    folder = data_root() / "cvc_clinicdb"
    if not folder.is_dir():
        pytest.skip("shared data not found")
    images, labels = [], []
    for seq in (1, 2, 4):
        for frame in CVC_FRAMES[seq]:
            images.append(tifffile.imread(folder / "images" / f"{frame}.tif"))
            labels.append(np.where(tifffile.imread(folder / "masks" / f"{frame}.tif") > 127, 255, 0).astype(np.uint8))
    return images, labels


@pytest.fixture()
def parent():
    card = tiny_card(1, "rgb", name="polyp-test")
    return tiny_model(card, seed=1).eval(), card


def test_finetune_round_leaves_the_parent_alone(frames, parent):
    model, card = parent
    images, labels = frames
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    result = finetune(model, card, images, labels, mode="full", time_budget_s=600, holdback=0.34, seed=0,
                      holdback_by="slices", max_steps=12, anchors=SliceSet(), progress=steps.append, lr=5e-3)
    assert sorted(result.train_indices + result.heldout_indices) == list(range(9))
    assert len(result.heldout_indices) == 3 and result.steps == 12 == len(result.losses) == len(steps)
    assert steps[-1].step == 12 and steps[-1].total_steps is None and steps[-1].elapsed_s > 0
    assert result.accepted == (result.dice_after > result.dice_before)
    if result.accepted:
        assert result.model is not model and result.card.version == 2 and result.card.parent == "polyp-test@1"
        assert result.card.metrics["finetune"]["heldout_dice_after"] == result.dice_after
    else:
        assert result.model is model and result.card is card
    assert all((model.state_dict()[k] == v).all() for k, v in snapshot.items())  # parent unchanged
    assert card.version == 1 and card.parent is None


@pytest.fixture(scope="module")
def bundled_polyp():
    from braunet.zoo import list_models, load_model

    if "polyp" not in list_models():
        pytest.skip("bundled polyp model not installed")
    return load_model("polyp")


def test_bundled_polyp_model_fine_tunes_without_forgetting(bundled_polyp):
    """Sequences 2, 8, 16 were kept out of the bundled model's training. A round on 6 of their frames
    replays the bundled anchors and keeps the anchor Dice (the forgetting guard) within 0.05."""
    model, card = bundled_polyp
    folder = data_root() / "cvc_clinicdb"
    frames = [f for seq in ((26, 38, 50), (152, 164, 177), (318, 330, 342)) for f in seq]
    images = [tifffile.imread(folder / "images" / f"{f}.tif") for f in frames]
    labels = [(tifffile.imread(folder / "masks" / f"{f}.tif") > 127).astype(np.uint8) for f in frames]
    result = finetune(model, card, images, labels, time_budget_s=600, max_steps=15, holdback=0.34, seed=0,
                      anchors=resolve_model("polyp").anchors)
    assert result.details["n_anchors"] >= 4 and result.steps == 15  # the bundled anchors.npz is replayed
    # the anchors are training frames the model segments well (0.734 for the model retrained 2026-12-01, which
    # saw 1029 frames and images instead of 36, and fits each of them less closely)
    assert result.anchor_dice_before > 0.7
    assert result.anchor_dice_after > result.anchor_dice_before - 0.05
    assert result.accepted == (result.dice_after > result.dice_before)


def test_decoder_mode_freezes_the_encoder_and_replays_anchors(frames, parent):
    model, card = parent
    images, labels = frames
    anchors = SliceSet.from_arrays(images[-2:], [(m > 0).astype(np.int64) for m in labels[-2:]])
    result = finetune(model, card, images[:6], labels[:6], mode="decoder", time_budget_s=600, max_steps=6,
                      anchors=anchors, lr=2e-3, max_anchor_drop=1.0)
    assert result.anchor_dice_before is not None and result.anchor_dice_after is not None
    assert result.details["n_anchors"] == 2
    tuned = result.model if result.accepted else None
    if tuned is not None:
        assert state_equal(tuned, model, "downsample_layers.") and state_equal(tuned, model, "stages.")
        assert not state_equal(tuned, model, "layers_up.")


def test_no_improvement_keeps_the_parent(frames, parent):
    model, card = parent
    images, labels = frames
    result = finetune(model, card, images[:4], labels[:4], time_budget_s=600, max_steps=1, lr=1e-12,
                      anchors=SliceSet())
    assert result.dice_after == pytest.approx(result.dice_before, abs=1e-6)
    assert not result.accepted and result.model is model and result.card is card
    assert "did not improve" in result.message


def test_cancel_and_bad_input(frames, parent):
    model, card = parent
    images, labels = frames
    with pytest.raises(Cancelled, match="unchanged"):
        finetune(model, card, images[:4], labels[:4], should_stop=lambda: True, anchors=SliceSet())
    with pytest.raises(InputError, match="at least 1 corrected slice"):
        finetune(model, card, [], [])
    with pytest.raises(InputError, match="labels in 0 of its 64 blocks.*correct a second slice"):
        finetune(model, card, images[:1], [np.zeros_like(labels[0])])
    with pytest.raises(InputError, match="label shape"):
        finetune(model, card, images[:2], [labels[0], labels[1][:10]])
    with pytest.raises(InputError, match="mode must be one of decoder, full"):
        finetune(model, card, images[:2], labels[:2], mode="encoder")
    with pytest.raises(InputError, match=r"blend must be in \(0, 1\]"):
        finetune(model, card, images[:2], labels[:2], blend=0.0)
    ct_card = tiny_card(4, "ct")
    with pytest.raises(InputError, match=r"label slice 0: values 7..7 are not classes of this model \(0..3\)"):
        finetune(tiny_model(ct_card), ct_card, [np.zeros((64, 64))] * 2, [np.full((64, 64), 7)] * 2)


def test_blend_interpolates_between_parent_and_trained_copy(parent):
    """The kept weights are parent + blend * (trained - parent), tensor by tensor (WiSE-FT)."""
    import torch

    from braunet.train.finetune import _blend

    model, card = parent
    trained = tiny_model(card, seed=2)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    _blend(model, trained, 1.0)
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in before.items())
    _blend(model, trained, 0.25)
    reference = model.state_dict()
    for name, value in trained.state_dict().items():
        expected = reference[name] + 0.25 * (before[name] - reference[name]) if value.is_floating_point() else before[name]
        assert torch.allclose(value, expected, atol=1e-6), name


def test_round_records_its_blend(frames, parent):
    model, card = parent
    images, labels = frames
    result = finetune(model, card, images[:4], labels[:4], time_budget_s=600, max_steps=2, anchors=SliceSet(),
                      blend=0.5, seed=1)
    assert result.details["blend"] == 0.5


def test_versions_save_list_and_roll_back(parent, tmp_path):
    import copy

    import torch

    model, card = parent
    v1 = save_version(model, card, tmp_path)
    save_checkpoint(model, card, tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "anchors.npz").write_bytes(b"replay set")
    child, child_card = copy.deepcopy(model), copy.deepcopy(card)
    child_card.version, child_card.parent = 2, "polyp-test@1"
    with torch.no_grad():
        child.output.weight.add_(0.5)
    v2 = save_version(child, child_card, tmp_path, anchors_from=tmp_path / "elsewhere")
    assert v1 == tmp_path / "polyp-test" / "v1" and v2 == tmp_path / "polyp-test" / "v2"
    assert (v2 / "anchors.npz").read_bytes() == b"replay set"
    assert [(v.version, v.parent) for v in list_versions("polyp-test", tmp_path)] == [(1, None), (2, "polyp-test@1")]
    with pytest.raises(OutputError, match="never overwritten"):
        save_version(child, child_card, tmp_path)
    parent_model, parent_card, folder = rollback(v2)
    assert folder == v1 and parent_card.version == 1 and state_equal(parent_model, model)
    assert not state_equal(parent_model, child)
    assert resolve_model("polyp-test@2", root=tmp_path).folder == v2
    with pytest.raises(CheckpointError, match="has no parent"):
        rollback(v1)
    with pytest.raises(CheckpointError, match="polyp-test@7 not found"):
        resolve_model("polyp-test@7", root=tmp_path)
    loaded, loaded_card = load_checkpoint(v2)
    assert loaded_card.parent == "polyp-test@1" and state_equal(loaded, child)


def test_block_split_holds_back_labelled_and_empty_blocks():
    """One slice: a quarter of the labelled blocks and of the empty ones, whole blocks, seeded."""
    label = np.zeros((64, 64), dtype=np.int64)
    label[8:40, 16:48] = 1  # labels in 4 x 4 of the 8 x 8 blocks
    held = _block_split(label[None], 0.25, seed=0)[0]
    blocks = held.reshape(REGION_GRID, 8, REGION_GRID, 8)
    assert (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all()  # whole blocks only
    assert blocks.any(axis=(1, 3)).sum() == 4 + 12  # 25 % of 16 labelled + 25 % of 48 empty blocks
    assert (label[held] != 0).any() and (label[~held] != 0).any()
    assert np.array_equal(held, _block_split(label[None], 0.25, seed=0)[0])
    assert not np.array_equal(held, _block_split(label[None], 0.25, seed=1)[0])
    tiny = np.zeros((64, 64), dtype=np.int64)
    tiny[2:5, 2:5] = 1  # one labelled block: nothing left to train on if it were held back
    with pytest.raises(InputError, match="labels in 1 of its 64 blocks"):
        _block_split(tiny[None], 0.25, seed=0)


def test_block_split_pools_the_blocks_of_several_slices():
    """Several slices: the share is of all their labelled blocks and of all their empty ones, so a
    slice the annotator emptied (no labels left) still lends empty blocks to both sides."""
    labels = np.zeros((3, 64, 64), dtype=np.int64)
    labels[0, 8:40, 16:48] = 1  # 16 labelled blocks
    labels[1, 0:16, 0:32] = 2  # 8 labelled blocks (another class)
    held = _block_split(labels, 0.25, seed=0)  # slice 2 stays empty
    per_block = held.reshape(3, REGION_GRID, 8, REGION_GRID, 8)
    assert (per_block.all(axis=(2, 4)) == per_block.any(axis=(2, 4))).all()  # whole blocks only
    labelled = (labels.reshape(3, REGION_GRID, 8, REGION_GRID, 8) != 0).any(axis=(2, 4))
    held_blocks = per_block.any(axis=(2, 4))
    assert (held_blocks & labelled).sum() == 6  # 25 % of the 24 labelled blocks
    assert (held_blocks & ~labelled).sum() == 42  # 25 % of the 168 empty ones
    assert (labels[held] != 0).any() and (labels[~held] != 0).any()
    sparse = np.zeros((3, 64, 64), dtype=np.int64)
    sparse[1, 2:5, 2:5] = 1
    with pytest.raises(InputError, match="3 slices have labels in 1 of their 192 blocks.*another slice"):
        _block_split(sparse, 0.25, seed=0)


@pytest.fixture()
def loss_masks(monkeypatch) -> list:
    """The ``valid`` mask the fine-tuning loss gets at each step (None: every pixel counts)."""
    seen: list = []
    make_loss = finetune_module.make_loss

    def spying_make_loss(num_classes):
        loss = make_loss(num_classes)

        def call(logits, target, valid=None):
            seen.append(valid)
            return loss(logits, target, valid)

        return call

    monkeypatch.setattr(finetune_module, "make_loss", spying_make_loss)
    return seen


def test_one_corrected_slice_trains_without_its_held_back_blocks(frames, parent, loss_masks):
    """With one slice the held-back blocks are hidden from the loss (``valid`` False there) and the
    before/after Dice is scored on them alone."""
    model, card = parent
    images, labels = frames
    seen = loss_masks
    result = finetune(model, card, images[:1], labels[:1], time_budget_s=600, max_steps=3, anchors=SliceSet(),
                      seed=2, lr=5e-3)
    assert result.train_indices == result.heldout_indices == [0] and result.steps == 3
    assert result.details["heldout"] == "blocks" and 0.1 < result.details["heldout_share_of_slice"] < 0.4
    assert "of the slice (blocks)" in result.message
    assert len(seen) == 3 and all(v is not None for v in seen)
    hidden = [1 - v.float().mean().item() for v in seen]  # augmentation moves the blocks, not their share
    assert all(0.05 < h < 0.5 for h in hidden), hidden
    assert result.accepted == (result.dice_after > result.dice_before)


def test_several_slices_train_on_all_and_are_judged_on_their_held_back_blocks(frames, parent, loss_masks):
    """``holdback_by="blocks"``: every corrected slice is trained on, a quarter of their blocks hidden from the
    loss, and the before/after Dice is scored on those blocks alone (what the parent and the copy
    predict elsewhere does not count)."""
    model, card = parent
    images, labels = frames
    seen = loss_masks
    result = finetune(model, card, images[:4], labels[:4], time_budget_s=600, max_steps=2, anchors=SliceSet(), seed=1,
                      holdback_by="blocks")
    assert result.train_indices == result.heldout_indices == [0, 1, 2, 3]
    assert result.details["heldout"] == "blocks" and result.details["n_train"] == 4
    assert "of 4 slices (blocks)" in result.message and len(seen) == 2 and all(v is not None for v in seen)
    by_slices = finetune(model, card, images[:4], labels[:4], time_budget_s=600, max_steps=1, anchors=SliceSet(),
                         seed=1)  # the default
    assert by_slices.details["heldout"] == "slices" and len(by_slices.heldout_indices) == 1
    sparse = [np.zeros_like(labels[0]), np.zeros_like(labels[1])]
    sparse[0][10:14, 10:14] = 255  # the labels of both slices touch one block: too few to split, so by slices
    fallback = finetune(model, card, images[:2], sparse, time_budget_s=600, max_steps=1, anchors=SliceSet(), seed=1,
                        holdback_by="blocks")
    assert fallback.details["heldout"] == "slices" and len(fallback.heldout_indices) == 1
    with pytest.raises(InputError, match="holdback_by must be one of slices, blocks"):
        finetune(model, card, images[:4], labels[:4], max_steps=1, holdback_by="pixels")


def test_per_class_dice_and_hd95_before_and_after(frames, parent):
    """Each class's held-back Dice (its mean is the round's Dice) and HD95, in pixels or, given the
    slices' pixel spacing, in mm: the same round with 2 mm pixels reports exactly twice the distances."""
    import dataclasses

    from braunet.train.metrics import hd95

    model, card = parent
    images, labels = frames
    plain = finetune(model, card, images, labels, time_budget_s=600, max_steps=1, anchors=SliceSet(), seed=0)
    assert plain.hd95_unit == "px" and [c.name for c in plain.per_class] == ["polyp"]
    polyp = plain.per_class[0]
    assert polyp.dice_before == pytest.approx(plain.dice_before) and polyp.dice_after == pytest.approx(plain.dice_after)
    spaced = finetune(model, card, images, labels, time_budget_s=600, max_steps=1, anchors=SliceSet(), seed=0,
                      spacing=[(2.0, 2.0)] * len(images))
    assert spaced.hd95_unit == "mm"
    assert spaced.per_class[0].hd95_before == pytest.approx(2 * polyp.hd95_before, nan_ok=True)
    assert spaced.per_class[0].dice_before == pytest.approx(polyp.dice_before)
    summary = polyp.to_dict()
    assert set(summary) == {"dice_before", "dice_after", "hd95_before", "hd95_after"}
    assert np.isnan(hd95(np.zeros((4, 4), bool), np.eye(4, dtype=bool), (1.0, 1.0)))  # undefined stays undefined:
    assert dataclasses.replace(polyp, hd95_before=float("nan")).to_dict()["hd95_before"] is None  # JSON null, not NaN
    with pytest.raises(InputError, match="pixel spacings"):
        finetune(model, card, images, labels, time_budget_s=600, max_steps=1, spacing=[(1.0, 1.0)])


def test_fixed_spacing_model_fine_tunes_on_slices_prepared_as_predict_prepares_them():
    """A ``spacing_mm`` CT model (the bundled ct-abdomen-8 recipe) needs the corrected slices' pixel
    size: without it the round is refused (one line), with it the slices are resampled to the
    recipe's pixels, so one slice given at 0.8 mm or block-doubled at 0.4 mm trains on the same input,
    and HD95 is in mm on the network's fixed pixels."""
    import dataclasses

    from braunet.infer.preprocess import preprocess_slices

    card = tiny_card(9, "ct", name="ct-test")
    card = dataclasses.replace(card, preprocessing={**card.preprocessing, "resize": "bilinear", "spacing_mm": 1.75})
    model = tiny_model(card, seed=2).eval()
    rng = np.random.default_rng(0)
    image = np.full((160, 160), -1000.0, np.float32)
    image[30:130, 20:100] = 60 + rng.normal(0, 10, (100, 80))  # a liver-like block
    label = np.zeros((160, 160), np.int64)
    label[30:130, 20:100] = 6
    images, labels = [image, image.copy()], [label, label.copy()]
    with pytest.raises(InputError, match="1.75 mm pixels.*pixel spacing"):
        finetune(model, card, images, labels, time_budget_s=600, max_steps=1, anchors=SliceSet())
    result = finetune(model, card, images, labels, time_budget_s=600, max_steps=1, anchors=SliceSet(),
                      spacing=[(0.8, 0.8)] * 2, holdback=0.5)
    assert result.steps == 1 and result.hd95_unit == "mm"
    fine = np.kron(image, np.ones((2, 2), np.float32))  # the same anatomy at 0.4 mm
    a = preprocess_slices(image[None], card.recipe, 224, spacing=(0.8, 0.8))
    b = preprocess_slices(fine[None], card.recipe, 224, spacing=(0.4, 0.4))
    assert float((a - b).abs().mean()) < 0.02  # the same network input, whatever the scanner's pixels
