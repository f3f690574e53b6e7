"""The napari writers' clinical outputs: DICOM SEG of a DICOM series, palette PNG of 2-D labels.

Real data: the shared 3-slice CT series ``dcmqi_ct/ct_dicom`` opened with our reader, its shared
label maps (on the grid of ``read_dicom_series``; the shared README gives the slice order
independently of our reader: k = 0 is 03.dcm, k = 2 is 01.dcm), and a CVC-ClinicDB frame with its
polyp mask. Files are read back with highdicom, pydicom and Pillow, not with our readers.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from braunet.errors import OutputError
from braunet.io import read_image
from braunet.io.colour_tables import hex_to_rgb, resolve_colours
from braunet.zoo import resolve_model

PLUGIN = "napari-braunet"
_FILE_OF_SLICE = {0: "03.dcm", 1: "02.dcm", 2: "01.dcm"}


def _shared_labels(shared_data: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(shared_data / "dcmqi_ct" / name).dataobj).astype(np.uint8)


def _add_labels(viewer, image, labels_on_source, names, name, colours=()):
    """A labels layer on ``image``'s grid holding a label map given on the source file's grid."""
    from braunet.napari._layers import labels_layer_from_source

    data, kwargs, _ = labels_layer_from_source(labels_on_source, image.metadata["braunet"], names, name, colours)
    return viewer.add_labels(data, **kwargs)


def _frames(seg: hd.seg.Segmentation, uid: str, numbers: list[int]) -> np.ndarray:
    """(Rows, Columns, segments) of one source instance; absent frames read as empty."""
    return seg.get_pixels_by_source_instance([uid], segment_numbers=numbers, assert_missing_frames_are_empty=True)[0]


def _cielab_rgb(segment) -> tuple[int, ...]:
    return hd.color.CIELabColor.from_dicom_value(tuple(segment.RecommendedDisplayCIELabValue)).to_rgb()


def test_dicom_series_labels_save_as_seg_on_the_source_slices(make_napari_viewer, tmp_path, shared_data):
    series = shared_data / "dcmqi_ct" / "ct_dicom"
    card = resolve_model("ct-abdomen-8").card
    viewer = make_napari_viewer()
    [ct] = viewer.open(series, plugin=PLUGIN)
    labels = _shared_labels(shared_data, "case03_label_synapse8.nii.gz")  # liver (5) only
    layer = _add_labels(viewer, ct, labels, card.class_names, "organs", card.class_colors)

    [written] = layer.save(str(tmp_path / "organs.dcm"), plugin=PLUGIN)
    assert Path(written) == tmp_path / "organs.dcm" and sorted(tmp_path.iterdir()) == [tmp_path / "organs.dcm"]
    seg = hd.seg.segread(written)
    sources = {k: pydicom.dcmread(series / name) for k, name in _FILE_OF_SLICE.items()}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver"]  # absent organs get no segment
    (segment,) = seg.SegmentSequence
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT liver
    liver_colour = hex_to_rgb([resolve_colours(card.class_names, card.class_colors)[5]])[0]
    assert np.abs(np.subtract(_cielab_rgb(segment), liver_colour)).max() <= 1
    # Painted or opened labels: no model wrote them, and the SEG does not claim one did.
    assert segment.SegmentAlgorithmType == "MANUAL" and "SegmentationAlgorithmIdentificationSequence" not in segment
    # References and geometry are the source series': each frame on its source instance's plane.
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    for k, source in sources.items():
        np.testing.assert_array_equal(_frames(seg, source.SOPInstanceUID, [1])[..., 0], labels[:, :, k].T == 5)
    slice_of = {source.SOPInstanceUID: k for k, source in sources.items()}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        k = slice_of[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in sources[k].ImagePositionPatient], atol=1e-3)  # fmt: skip
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in sources[0].PixelSpacing])  # fmt: skip


def test_seg_says_which_model_wrote_the_labels_and_whether_they_were_corrected(
    make_napari_viewer, tmp_path, shared_data
):
    """The Segment widget's result layer (written by its own code path, without running the network)."""
    from braunet.napari._segment import SegmentWidget

    series = shared_data / "dcmqi_ct" / "ct_dicom"
    source = resolve_model("ct-abdomen-8")
    viewer = make_napari_viewer()
    [ct] = viewer.open(series, plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    geometry = ct.metadata["braunet"]
    from braunet.napari._geometry import layer_from_source

    two = _shared_labels(shared_data, "case03_seg_liver1_spine2.nii.gz")  # 1 liver, 2 spine
    prediction = layer_from_source(np.where(two == 1, 5, 0).astype(np.uint8), geometry)  # as "liver"
    widget._write_result(ct, geometry, None, source.ref, prediction, None, source.card)
    layer = widget.last_output

    seg = hd.seg.segread(layer.save(str(tmp_path / "predicted.dcm"), plugin=PLUGIN)[0])
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "liver" and segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "BRAU-Net++"
    assert algorithm.AlgorithmVersion == f"{source.card.name} v{source.card.version}"

    corrected = layer.data.copy()
    corrected[1][corrected[1] == 5] = 0  # the user erases the liver on the middle slice
    layer.data = corrected
    seg = hd.seg.segread(layer.save(str(tmp_path / "corrected.dcm"), plugin=PLUGIN)[0])
    (segment,) = seg.SegmentSequence
    assert segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "BRAU-Net++"
    sources = {k: pydicom.dcmread(series / name) for k, name in _FILE_OF_SLICE.items()}
    for k, dataset in sources.items():
        expected = (two[:, :, k].T == 1) & (k != 1)
        np.testing.assert_array_equal(_frames(seg, dataset.SOPInstanceUID, [1])[..., 0], expected)


def test_seg_refusals_name_the_layer_and_write_nothing(make_napari_viewer, tmp_path, shared_data):
    """One OutputError each (napari would take a ValueError for "no writer here" and only warn)."""
    viewer = make_napari_viewer()
    [ct] = viewer.open(shared_data / "dcmqi_ct" / "ct_dicom", plugin=PLUGIN)
    names = ["background", "liver", "spine"]
    two = _shared_labels(shared_data, "case03_seg_liver1_spine2.nii.gz")
    target = tmp_path / "seg.dcm"

    empty = _add_labels(viewer, ct, np.zeros_like(two), names, "empty")
    with pytest.raises(OutputError, match=r"^layer 'empty': .*seg\.dcm: the label map holds no labelled voxel"):
        empty.save(str(target), plugin=PLUGIN)
    from braunet.napari._geometry import layer_from_source

    geometry = ct.metadata["braunet"]
    unnamed = viewer.add_labels(layer_from_source(two, geometry), name="unnamed", **geometry.layer_kwargs())
    with pytest.raises(OutputError, match=r"^layer 'unnamed': .*label value 1 has no class name"):
        unnamed.save(str(target), plugin=PLUGIN)

    [nifti] = viewer.open(shared_data / "dcmqi_ct" / "case03_ct.nii.gz", plugin=PLUGIN)
    off_dicom = _add_labels(viewer, nifti, two, names, "on nifti")
    with pytest.raises(OutputError, match=r"^layer 'on nifti': a DICOM SEG needs labels on an image opened from a "
                                         r"DICOM series folder; this layer's image came from .*case03_ct\.nii\.gz"):
        off_dicom.save(str(target), plugin=PLUGIN)
    [frame] = viewer.open(shared_data / "cvc_clinicdb" / "images" / "139.tif", plugin=PLUGIN)
    flat = _add_labels(viewer, frame, np.zeros(frame.data.shape[:2], np.uint8), ["background", "polyp"], "polyp")
    with pytest.raises(OutputError, match=r"^layer 'polyp': a DICOM SEG is made for a 3-D layer"):
        flat.save(str(target), plugin=PLUGIN)
    assert list(tmp_path.iterdir()) == []


def test_2d_labels_save_as_a_palette_png_of_the_class_colours(make_napari_viewer, tmp_path, shared_data):
    card = resolve_model("polyp").card
    viewer = make_napari_viewer()
    [frame] = viewer.open(shared_data / "cvc_clinicdb" / "images" / "139.tif", plugin=PLUGIN)
    mask = (np.asarray(read_image(shared_data / "cvc_clinicdb" / "masks" / "139.tif").array) > 127).astype(np.uint8)
    assert set(np.unique(mask)) == {0, 1}
    layer = _add_labels(viewer, frame, mask, card.class_names, "polyp", card.class_colors)
    from napari.utils.colormaps import DirectLabelColormap

    # What the Legend does to hide a class: the file keeps the class's colour all the same.
    layer.colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0, 0, 0, 0)})

    [written] = layer.save(str(tmp_path / "polyp.png"), plugin=PLUGIN)
    with Image.open(written) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)  # pixel values are the class indices
        palette = np.asarray(image.getpalette()[:6], np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(palette, hex_to_rgb(resolve_colours(card.class_names, card.class_colors)))
    np.testing.assert_array_equal(palette[1], hex_to_rgb(card.class_colors)[1])  # the card's polyp colour
    [reopened] = viewer.open(written, plugin=PLUGIN)
    assert reopened._type_string == "labels" and list(reopened.features["name"]) == ["background", "polyp"]
    np.testing.assert_array_equal(reopened.data, mask)
