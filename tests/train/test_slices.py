"""Volume/label pairs as axial slices, SliceSet splits."""

from __future__ import annotations

import numpy as np
import pytest

from braunet.errors import InputError
from braunet.train.slices import SliceSet, load_volume_pair, split_validation


def test_volume_pair_slices_in_the_radiological_view(shared_data):
    ct = shared_data / "totalseg_ct"
    slices = load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01sm_label_synapse8.nii.gz", num_classes=9)
    assert len(slices) == 30 and slices.images[0].shape == (101, 122)  # (J, I): rows anterior -> posterior
    assert slices.spacing[0] == (3.0, 3.0) and slices.depth_mm[0] == 3.0
    label = slices.labels[20]
    liver_cols = np.nonzero(label == 5)[1].mean()
    spleen_cols = np.nonzero(label == 7)[1].mean()
    assert liver_cols < 61 < spleen_cols  # liver on the picture's left, as in the official Synapse slices
    assert slices.images[20].min() < -500 and slices.images[20].max() > 300  # raw HU, not windowed


def test_volume_pair_refuses_a_label_on_another_grid(shared_data):
    ct = shared_data / "totalseg_ct"
    with pytest.raises(InputError, match="case01_label_synapse8.nii.gz: label volume shape"):
        load_volume_pair(ct / "case01sm_ct.nii.gz", ct / "case01_label_synapse8.nii.gz", num_classes=9)


def test_split_validation_by_slab_with_gap_and_by_group():
    volume = SliceSet.from_arrays([np.zeros((4, 4))] * 20, [np.zeros((4, 4), np.int64)] * 20, group="case")
    train, val, text = split_validation(volume, 0.2, gap=2)
    assert val == [16, 17, 18, 19] and train == list(range(14)) and "slab" in text
    images = SliceSet.from_arrays([np.zeros((4, 4, 3), np.uint8)] * 10, [np.zeros((4, 4), np.int64)] * 10)
    images.groups = [f"seq{i // 2}" for i in range(10)]  # 5 sequences of 2 frames
    train, val, text = split_validation(images, 0.2)
    assert val == [0, 1] and len(train) == 8 and "by group" in text


def test_curvas_slices_as_hu_with_assumed_spacing_and_partial_labels(shared_data):
    from braunet.train.pairs import collect_pairs
    from braunet.train.slices import CURVAS_SLICES, load_windowed_pairs

    folder = shared_data / "curvas_ct_slices"
    pairs = [pair for n in (1, 2, 3) for pair in collect_pairs([folder / f"annotator{n}" / "images"],
                                                               [folder / f"annotator{n}" / "labels_synapse8"])]
    slices = load_windowed_pairs(pairs, CURVAS_SLICES)
    assert len(slices) == len(pairs) == 78
    # one CT, one group, whichever annotator drew it: a split never separates them
    subjects = set(slices.groups)
    assert len(subjects) == 11 and "curvas-10001" in subjects and not subjects & {"curvas-10010", "curvas-10011"}
    assert slices.spacing[0] == (0.8, 0.8) and slices.known[0] == (3, 4, 5, 6) and slices.depth_mm[0] is None
    assert slices.images[0].dtype == np.float32 and slices.images[0].min() >= 0.0 and slices.images[0].max() <= 255.0
    assert set(slices.class_ids()) == {0, 3, 4, 5, 6}  # both kidney sides, liver, pancreas
    liver = np.concatenate([im[lab == 5] for im, lab in zip(slices.images, slices.labels, strict=True)])
    assert 90 < np.median(liver) < 120  # portal-venous liver HU under the [0, 255] HU reading


def test_msd_spleen_slices_are_mirrored_back_and_a_mirrored_label_is_refused(shared_data, tmp_path):
    from PIL import Image

    from braunet.train.pairs import collect_pairs
    from braunet.train.slices import MSD_SPLEEN_SLICES, load_windowed_pairs

    folder = shared_data / "msd_spleen_slices_jpg"
    slices = load_windowed_pairs(collect_pairs([folder / "images"], [folder / "masks_synapse8"]), MSD_SPLEEN_SLICES)
    assert len(slices) == 12 and len(set(slices.groups)) == 7 and "msd-spleen_8" in slices.groups
    assert slices.known[0] == (7,) and set(slices.class_ids()) == {0, 7}
    for label in slices.labels:  # the spleen on the picture's right: the patient's left, radiological view
        assert np.nonzero(label == 7)[1].mean() > label.shape[1] / 2
    name = "10003_spleen_26"
    Image.open(folder / "images" / f"{name}.png").save(tmp_path / f"{name}.png")
    mirrored = np.asarray(Image.open(folder / "masks_synapse8" / f"{name}.png"))[:, ::-1]
    Image.fromarray(np.ascontiguousarray(mirrored)).save(tmp_path / f"{name}_label.png")
    with pytest.raises(InputError, match="mirrored"):
        load_windowed_pairs([(tmp_path / f"{name}.png", tmp_path / f"{name}_label.png")], MSD_SPLEEN_SLICES)


def test_volume_pair_refuses_an_mr_series(shared_data, tmp_path):
    """Training and fine-tuning read volumes through load_volume_pair: a series tagged MR is refused
    there (HU windows mean nothing for MR), as braunet predict refuses it."""
    import pydicom

    folder = tmp_path / "mr_series"
    folder.mkdir()
    for source in sorted((shared_data / "dcmqi_ct" / "ct_dicom").iterdir()):
        dataset = pydicom.dcmread(source)
        dataset.Modality = "MR"
        dataset.save_as(folder / source.name)
    label = shared_data / "dcmqi_ct" / "case03_label_synapse8.nii.gz"
    with pytest.raises(InputError, match=r"modality MR, not CT; the volume models train and fine-tune on CT"):
        load_volume_pair(folder, label, num_classes=9)
