"""Sample-data registry: pinned hashes match the real files, labels derive exactly, bad copies are refused."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braunet import samples
from braunet.errors import InputError


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("key", samples.list_samples())
def test_pins_match_the_shared_copies(key, shared_data):
    sample = samples.SAMPLES[key]
    for remote in (sample.image, sample.labels):
        assert remote.url.startswith("https://raw.githubusercontent.com/")
        assert any(len(part) == 40 for part in remote.url.split("/")), "URL must be pinned to a commit"
        path = shared_data / remote.local
        if remote.sha256:
            assert _sha256(path) == remote.sha256
        else:
            assert samples.voxel_digest(np.asarray(nib.load(path).dataobj)) == remote.voxel_sha256


def test_voxel_digest_ignores_the_encoding(shared_data):
    seg = np.asarray(nib.load(shared_data / "totalseg_ct/case01_seg_totalseg_v1.nii.gz").dataobj)
    assert samples.voxel_digest(seg.astype(np.float64)) == samples.voxel_digest(seg)  # upstream stores float64
    changed = seg.copy()
    changed[0, 0, 0] += 1
    assert samples.voxel_digest(changed) != samples.voxel_digest(seg)
    with pytest.raises(InputError, match="not integers"):
        samples.voxel_digest(seg + 0.5)


def test_synapse8_derivation_reproduces_the_shared_label_map(shared_data):
    folder = shared_data / "totalseg_ct"
    v1 = np.asarray(nib.load(folder / "case01_seg_totalseg_v1.nii.gz").dataobj)
    expected = np.asarray(nib.load(folder / "case01_label_synapse8.nii.gz").dataobj)
    derived = samples.synapse8_from_totalseg_v1(v1)
    assert derived.dtype == np.uint8
    np.testing.assert_array_equal(derived, expected)
    assert set(np.unique(derived)) == set(range(9))


def test_load_sample_ct_labels_on_the_ct_grid():
    loaded = samples.load_sample("ct_abdomen")
    assert loaded.image.array.shape == loaded.labels.shape == (122, 101, 112)
    np.testing.assert_allclose(loaded.image.spacing, (3.0, 3.0, 3.0))
    assert loaded.sample.class_names[5] == "liver"
    assert 0.01 < (loaded.labels == 5).mean() < 0.2


@pytest.mark.parametrize(("key", "fraction", "shape"), [("dermoscopy", 0.2891, (512, 512)),
                                                         ("colonoscopy", 0.1843, (288, 384))])  # fmt: skip
def test_load_sample_2d_masks_are_binarised(key, fraction, shape):
    loaded = samples.load_sample(key)
    assert loaded.image.array.shape == (*shape, 3) and loaded.image.array.dtype == np.uint8
    assert loaded.labels.shape == shape and set(np.unique(loaded.labels)) == {0, 1}
    assert loaded.labels.mean() == pytest.approx(fraction, abs=5e-4)  # cases.csv: foreground fraction (mask > 127)
    border = np.concatenate([loaded.labels[0], loaded.labels[-1], loaded.labels[:, 0], loaded.labels[:, -1]])
    assert not border.any(), "the sample was chosen with its lesion fully inside the frame"


def test_colonoscopy_licence_is_stated():
    sample = samples.SAMPLES["colonoscopy"]
    assert "non-commercial" in sample.display_name
    assert "commercial use forbidden" in sample.licence


def test_a_modified_local_copy_is_refused(tmp_path, monkeypatch, shared_data):
    local = tmp_path / "cvc_clinicdb" / "images"
    local.mkdir(parents=True)
    shutil.copy(shared_data / "cvc_clinicdb/images/139.tif", local / "139.tif")
    (tmp_path / "cvc_clinicdb/masks").mkdir()
    shutil.copy(shared_data / "cvc_clinicdb/masks/139.tif", tmp_path / "cvc_clinicdb/masks/139.tif")
    monkeypatch.setenv(samples.DATA_DIR_ENV, str(tmp_path))
    assert samples.fetch("colonoscopy")["image"] == local / "139.tif"
    raw = bytearray((local / "139.tif").read_bytes())
    raw[-1] ^= 0xFF
    (local / "139.tif").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"139\.tif: sha256 differs"):
        samples.fetch("colonoscopy")
    monkeypatch.setenv(samples.DATA_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not a folder"):
        samples.fetch("colonoscopy")


def test_download_route_uses_pinned_urls_and_hashes(tmp_path, monkeypatch, shared_data):
    """Without BRAUNET_DATA_DIR the files come from pooch (stubbed here: no network in tests)."""
    import pooch

    calls = []

    def fake_retrieve(url, known_hash, fname, path, progressbar):
        calls.append((url, known_hash))
        local = next(r.local for s in samples.SAMPLES.values() for r in (s.image, s.labels) if r.url == url)
        target = tmp_path / fname
        shutil.copy(shared_data / local, target)
        return str(target)

    monkeypatch.delenv(samples.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(pooch, "retrieve", fake_retrieve)
    loaded = samples.load_sample("ct_abdomen")
    assert loaded.labels.shape == (122, 101, 112)
    ct, seg = samples.SAMPLES["ct_abdomen"].image, samples.SAMPLES["ct_abdomen"].labels
    assert calls == [(ct.url, f"sha256:{ct.sha256}"), (seg.url, None)]  # the seg is checked by voxel digest
    assert "0e65a448d557382b1e925276212b3bec7f5aff83" in ct.url
    assert "5de6e4dcf702d525e0b2813683575b2c9e998aee" in seg.url

    def corrupt_seg(url, known_hash, fname, path, progressbar):
        target = fake_retrieve(url, known_hash, fname, path, progressbar)
        if url == seg.url:
            image = nib.load(target)
            values = np.asarray(image.dataobj).copy()
            values[60, 50, 56] = 99
            nib.save(nib.Nifti1Image(values, image.affine, image.header), target)
        return target

    monkeypatch.setattr(pooch, "retrieve", corrupt_seg)
    with pytest.raises(InputError, match="label voxels differ from the pinned content digest"):
        samples.load_sample("ct_abdomen")
    assert not any(p.name.endswith("case01_seg_totalseg_v1.nii.gz") for p in tmp_path.iterdir()), "bad download kept"


def test_unknown_sample():
    with pytest.raises(InputError, match="unknown sample 'brain'"):
        samples.load_sample("brain")


@pytest.mark.parametrize("key", samples.list_samples())
def test_each_sample_names_a_bundled_model_with_its_classes_and_colours(key):
    """``default_model`` is a bundled model whose card has the sample's class names and colours."""
    from importlib import resources

    from braunet.model import read_card

    sample = samples.SAMPLES[key]
    card = read_card(Path(str(resources.files("braunet") / "models" / sample.default_model)))
    assert card.class_names == sample.class_names
    assert card.class_colors == sample.class_colors
    assert card.preprocessing["kind"] == sample.kind


def test_sample_classes_are_the_package_class_lists():
    from braunet import classes

    expected = {
        "ct_abdomen": (classes.SYNAPSE8_CLASSES, classes.SYNAPSE8_COLORS),
        "dermoscopy": (classes.LESION_CLASSES, classes.LESION_COLORS),
        "colonoscopy": (classes.POLYP_CLASSES, classes.POLYP_COLORS),
    }
    assert set(expected) == set(samples.SAMPLES)
    for key, (names, colors) in expected.items():
        assert samples.SAMPLES[key].class_names is names and samples.SAMPLES[key].class_colors is colors
        assert len(names) == len(colors)
