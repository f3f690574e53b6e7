"""TransUNet-format Synapse data written from the shared real CT: values, geometry, reader errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import zoom

from braunet.errors import InputError
from braunet.repro.transunet import TransUNetFolder, TransUNetSlices, ct_to_unit, write_transunet_case


def test_folder_layout_and_values(transunet_root: Path, ct_pair) -> None:
    folder = TransUNetFolder(transunet_root)
    assert folder.train_names == [f"case01sm_slice{k:03d}" for k in (6, 10, 14, 18, 22, 26)]
    assert folder.test_names == ["case01sm"]
    volume = folder.read_volume("case01sm")
    ct = np.asarray(nib.load(ct_pair[0]).dataobj)  # (122, 101, 30), RAS: i -> patient left... see below
    labels = np.asarray(nib.load(ct_pair[1]).dataobj)
    assert volume.image.shape == (30, 101, 122) and volume.spacing == (3.0, 3.0, 3.0)
    assert volume.image.dtype == np.float32 and volume.image.min() >= 0.0 and volume.image.max() <= 1.0
    # the file is RAS, so slice k of the radiological picture is ct[::-1, ::-1, k] transposed:
    # rows anterior -> posterior, columns patient right -> left
    for k in (0, 17, 29):
        np.testing.assert_array_equal(volume.image[k], ct_to_unit(ct[::-1, ::-1, k].T))
        np.testing.assert_array_equal(volume.label[k], labels[::-1, ::-1, k].T.astype(np.int64))
    image, label = folder.read_slice("case01sm_slice014")
    np.testing.assert_array_equal(image, volume.image[14])
    np.testing.assert_array_equal(label, volume.label[14])
    with h5py.File(folder.volume_path("case01sm")) as data:  # what official readers see
        assert set(data) == {"image", "label"} and data["label"].dtype == np.float32


def test_radiological_picture_puts_liver_left_and_spleen_right(transunet_root: Path) -> None:
    """As in the official Synapse slices: the patient's right (liver) on the left of the picture,
    the spleen on the right, the spine (bright, HU > 275) towards the bottom."""
    volume = TransUNetFolder(transunet_root).read_volume("case01sm")
    cols = np.arange(volume.label.shape[2])
    rows = np.arange(volume.label.shape[1])
    liver_col = cols[np.nonzero(volume.label == 5)[2]].mean()
    spleen_col = cols[np.nonzero(volume.label == 7)[2]].mean()
    assert liver_col < volume.label.shape[2] / 2 < spleen_col
    aorta_row = rows[np.nonzero(volume.label == 1)[1]].mean()
    liver_row = rows[np.nonzero(volume.label == 5)[1]].mean()
    assert liver_row < aorta_row  # the aorta lies in front of the spine, behind the liver's centre


def test_training_dataset_items(transunet_root: Path) -> None:
    from braunet.repro.augment import missformer_augment

    folder = TransUNetFolder(transunet_root)
    plain = TransUNetSlices(folder, 64)
    x, y = plain[2]
    assert tuple(x.shape) == (1, 64, 64) and tuple(y.shape) == (64, 64)
    image, label = folder.read_slice(folder.train_names[2])  # the official zooms, then Normalize(0.5, 0.5)
    factors = (64 / image.shape[0], 64 / image.shape[1])
    np.testing.assert_allclose(x[0].numpy(), (zoom(image, factors, order=3) - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), zoom(label, factors, order=0))
    augmented = TransUNetSlices(folder, 64, missformer_augment, seed=3)
    augmented.set_epoch(5)
    first, again = augmented[2], augmented[2]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))  # deterministic per (seed, epoch, index)
    assert set(np.unique(first[1].numpy())) <= set(np.unique(y.numpy())) | {0}


def test_reader_names_the_broken_file(tmp_path: Path, transunet_root: Path) -> None:
    with pytest.raises(InputError, match="lists_Synapse"):
        TransUNetFolder(tmp_path)
    root = tmp_path / "broken"
    (root / "lists_Synapse").mkdir(parents=True)
    (root / "train_npz").mkdir()
    (root / "lists_Synapse" / "train.txt").write_text("case9_slice000\ncase9_slice001\n")
    np.savez(root / "train_npz" / "case9_slice000.npz", image=np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="1 listed file"):
        TransUNetFolder(root)
    (root / "lists_Synapse" / "train.txt").write_text("case9_slice000\n")
    with pytest.raises(InputError, match=r"case9_slice000\.npz: no array 'label'"):
        TransUNetFolder(root).read_slice("case9_slice000")


def test_writer_refuses_mismatched_grids(tmp_path: Path, ct_pair, shared_data: Path) -> None:
    other = shared_data / "totalseg_ct" / "case01_label_synapse8.nii.gz"  # 112 slices, not 30
    with pytest.raises(InputError, match="differs"):
        write_transunet_case(ct_pair[0], other, tmp_path / "out", "x")
    assert not (tmp_path / "out" / "train_npz").exists()


def test_command_line(tmp_path: Path, ct_pair, capsys) -> None:
    from braunet.repro.transunet import main

    assert main([str(ct_pair[0]), str(ct_pair[1]), str(tmp_path / "T"), "--case", "c1", "--split", "test"]) == 0
    assert "shape (30, 101, 122)" in capsys.readouterr().out
    assert TransUNetFolder(tmp_path / "T").test_names == ["c1"]
