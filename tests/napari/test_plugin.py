"""Manifest discovery, sample data in a viewer, and the reader/writer round trip through napari."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from braunet.io import read_class_names, read_image, write_image, write_labels

PLUGIN = "napari-braunet"


def test_manifest_is_discovered():
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {"Segment", "Routing explorer", "Fine-tune", "Legend"}
    assert {s.key for s in contributions.sample_data} == {"ct_abdomen", "dermoscopy", "colonoscopy"}
    assert "*.nii.gz" in contributions.readers[0].filename_patterns and contributions.readers[0].accepts_directories
    writer, seg_writer = contributions.writers
    assert writer.layer_types == ["labels"] and ".nii.gz" in writer.filename_extensions
    assert seg_writer.layer_types == ["labels"] and seg_writer.filename_extensions == [".dcm"]
    colonoscopy = next(s for s in contributions.sample_data if s.key == "colonoscopy")
    assert "non-commercial" in colonoscopy.display_name


@pytest.mark.parametrize(("key", "shape", "classes"), [
    ("ct_abdomen", (112, 101, 122), 9), ("dermoscopy", (512, 512), 2), ("colonoscopy", (288, 384), 2),
])  # fmt: skip
def test_each_sample_opens_with_aligned_labels(make_napari_viewer, key, shape, classes):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, labels = viewer.layers
    assert labels.data.shape == shape and labels.data.dtype == np.uint8
    assert image.data.shape[: len(shape)] == shape
    np.testing.assert_array_equal(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.translate, image.translate)
    assert list(labels.features["name"])[:2] == ["background", labels.metadata["braunet_class_names"][1]]
    assert len(labels.features) == classes and labels.data.max() == classes - 1
    if key == "ct_abdomen":
        assert image.rgb is False and tuple(image.contrast_limits) == (-150.0, 250.0)  # abdomen window
        np.testing.assert_allclose(image.scale, (3.0, 3.0, 3.0))
        # Radiological display: liver (patient's right) on the screen's left, spleen on the right,
        # and in LPS world x the liver lies right of the spleen (smaller x).
        liver = np.argwhere(labels.data == 5).mean(axis=0)
        spleen = np.argwhere(labels.data == 7).mean(axis=0)
        assert liver[2] < spleen[2]
        assert labels.data_to_world(liver)[2] < labels.data_to_world(spleen)[2]
        voxel = np.argwhere(labels.data == 5)[1000]
        viewer.dims.set_point(0, labels.data_to_world(voxel)[0])
        assert labels.get_status(labels.data_to_world(voxel), world=True)["value"] == "5; name: liver"
    else:
        assert image.rgb is True and image.data.dtype == np.uint8


def _lps_copy(volume, folder):
    """Store the CT (and later labels) in LPS voxel order: a non-trivial reorientation."""
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(("L", "P", "S")))
    array = np.ascontiguousarray(apply_orientation(volume.array, transform))
    affine = volume.affine @ inv_ornt_aff(transform, volume.array.shape)
    lps = dataclasses.replace(volume, array=array, affine=affine, header=None, source=None)
    return write_image(lps, folder / "ct_lps.nii.gz"), transform


def test_reader_writer_round_trip_keeps_the_affine(make_napari_viewer, tmp_path, shared_data):
    source = read_image(shared_data / "totalseg_ct/case01sm_ct.nii.gz")
    path, transform = _lps_copy(source, tmp_path)
    original = nib.load(path)
    truth = np.asarray(nib.load(shared_data / "totalseg_ct/case01sm_label_synapse8.nii.gz").dataobj)
    truth_lps = np.ascontiguousarray(apply_orientation(truth, transform)).astype(np.uint8)

    viewer = make_napari_viewer()
    [image] = viewer.open(path, plugin=PLUGIN)
    assert image.data.shape == (30, 101, 122)  # reoriented for display; the file is (122, 101, 30) LPS
    # The labels of the LPS file, painted into a Labels layer on the image's grid, are saved back exactly.
    from braunet.napari._geometry import layer_from_source

    geometry = image.metadata["braunet"]
    from braunet.classes import SYNAPSE8_CLASSES
    from braunet.napari._layers import labels_layer

    data, kwargs, _ = labels_layer(layer_from_source(truth_lps, geometry), geometry, SYNAPSE8_CLASSES, "organs")
    labels = viewer.add_labels(data, **kwargs)
    out = tmp_path / "organs.nii.gz"
    labels.save(str(out), plugin=PLUGIN)
    saved = nib.load(out)
    assert saved.affine.tobytes() == original.affine.tobytes()
    assert saved.header.get_sform(coded=True)[1] == original.header.get_sform(coded=True)[1]
    np.testing.assert_array_equal(np.asarray(saved.dataobj), truth_lps)
    # ...and the saved file opens again as a Labels layer on the same grid.
    [reopened] = viewer.open(out, plugin=PLUGIN)
    assert reopened._type_string == "labels"
    np.testing.assert_array_equal(reopened.data, labels.data)
    np.testing.assert_array_equal(reopened.translate, image.translate)
    assert list(reopened.features["name"]) == SYNAPSE8_CLASSES


def test_writer_keeps_class_names_and_refuses_wrong_targets(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ct_abdomen")
    labels = viewer.layers[1]
    out = tmp_path / "labels.nii.gz"
    labels.save(str(out), plugin=PLUGIN)
    assert read_class_names(out)[5] == "liver"
    source = read_image(out)
    assert source.array.shape == (122, 101, 112)  # file voxel order of the source CT
    from braunet.errors import OutputError

    with pytest.raises(OutputError, match=r"labels\.png: a volume is written as NIfTI"):
        labels.save(str(tmp_path / "labels.png"), plugin=PLUGIN)


def test_dicom_folder_and_2d_images(make_napari_viewer, tmp_path, shared_data):
    viewer = make_napari_viewer()
    [ct] = viewer.open(shared_data / "dcmqi_ct/ct_dicom", plugin=PLUGIN)
    assert ct.data.shape == (3, 512, 512)
    np.testing.assert_allclose(ct.scale, (1.0, 0.8105469942, 0.8105469942), rtol=1e-6)
    # DICOM patient position of the first pixel of the lowest slice (03.dcm, LPS): the layer's translate.
    np.testing.assert_allclose(ct.translate, (-128.69, -226.8, -235.2), atol=0.01)
    seg = np.asarray(nib.load(shared_data / "dcmqi_ct/case03_seg_liver1_spine2.nii.gz").dataobj)
    from braunet.napari._geometry import layer_from_source

    layer = viewer.add_labels(layer_from_source(seg.astype(np.uint8), ct.metadata["braunet"]),
                              **ct.metadata["braunet"].layer_kwargs())  # fmt: skip
    layer.save(str(tmp_path / "seg.nii.gz"), plugin=PLUGIN)
    saved = read_image(tmp_path / "seg.nii.gz")
    np.testing.assert_allclose(saved.affine, read_image(shared_data / "dcmqi_ct/ct_dicom").affine, atol=1e-6)
    np.testing.assert_array_equal(saved.array, seg)

    [frame] = viewer.open(shared_data / "cvc_clinicdb/images/139.tif", plugin=PLUGIN)
    assert frame.rgb and frame.data.shape == (288, 384, 3)
    mask = (np.asarray(read_image(shared_data / "cvc_clinicdb/masks/139.tif").array) > 127).astype(np.uint8)
    polyp = viewer.add_labels(mask, **frame.metadata["braunet"].layer_kwargs())
    polyp.save(str(tmp_path / "139_mask.png"), plugin=PLUGIN)
    np.testing.assert_array_equal(read_image(tmp_path / "139_mask.png").array, mask)
    write_labels(mask, read_image(shared_data / "cvc_clinicdb/images/139.tif"), tmp_path / "named.png",
                 class_names={0: "background", 1: "polyp"})  # fmt: skip
    [named] = viewer.open(tmp_path / "named.png", plugin=PLUGIN)
    assert named._type_string == "labels" and list(named.features["name"]) == ["background", "polyp"]
