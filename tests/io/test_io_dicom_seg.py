"""DICOM SEG export: round trip on the shared 3-slice CT series, read back with highdicom and pydicom.

The shared labels ``dcmqi_ct/case03_*.nii.gz`` are on the grid of ``read_dicom_series(ct_dicom)``
(the DICOM tests check that the CT conversion matches it voxel for voxel). The shared README
gives the slice order independently of our reader: k = 0 is 03.dcm, k = 2 is 01.dcm.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from braunet.classes import SYNAPSE8_CLASSES, SYNAPSE8_COLORS
from braunet.errors import InputError
from braunet.io import read_dicom_series
from braunet.io.dicom_seg import write_dicom_seg

_FILE_OF_SLICE = {0: "03.dcm", 1: "02.dcm", 2: "01.dcm"}


def _labels(shared_data: Path, name: str) -> np.ndarray:
    return np.asarray(nib.load(shared_data / "dcmqi_ct" / name).dataobj).astype(np.uint8)


def _pixels(seg: hd.seg.Segmentation, uid: str, numbers: list[int]) -> np.ndarray:
    """(Rows, Columns, segments) frames of one source instance; absent frames read as empty."""
    return seg.get_pixels_by_source_instance([uid], segment_numbers=numbers, assert_missing_frames_are_empty=True)[0]


def test_organs_round_trip_with_source_references(shared_data: Path, dicom_dir: Path, tmp_path: Path) -> None:
    labels = _labels(shared_data, "case03_label_synapse8.nii.gz")  # liver (5) only
    assert set(np.unique(labels)) == {0, 5}
    out = write_dicom_seg(labels, dicom_dir, SYNAPSE8_CLASSES, SYNAPSE8_COLORS, tmp_path / "seg.dcm",
                          model_name="ct-abdomen-8", model_version=3)  # fmt: skip
    seg = hd.seg.segread(out)
    sources = {k: pydicom.dcmread(dicom_dir / name) for k, name in _FILE_OF_SLICE.items()}

    # one segment: the absent organs get none
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver"]
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT liver
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "BRAU-Net++" and algorithm.AlgorithmVersion == "ct-abdomen-8 v3"
    rgb = hd.color.CIELabColor.from_dicom_value(tuple(segment.RecommendedDisplayCIELabValue)).to_rgb()
    assert np.abs(np.subtract(rgb, (0xE6, 0x9F, 0x00))).max() <= 1  # liver's "#e69f00"

    # references: study, series, every instance, frame of reference, patient
    first = sources[0]
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.PatientID == first.PatientID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources.values()
    }
    # every source slice's frame equals the label map on that slice
    for k, source in sources.items():
        np.testing.assert_array_equal(_pixels(seg, source.SOPInstanceUID, [1])[..., 0], labels[:, :, k].T == 5)


def test_segment_numbers_are_consecutive_and_empty_frames_stay_empty(
    shared_data: Path, dicom_dir: Path, tmp_path: Path
) -> None:
    labels = _labels(shared_data, "case03_seg_liver1_spine2.nii.gz")  # 1 liver, 2 spine
    labels[:, :, 1][labels[:, :, 1] == 1] = 0  # liver missing from the middle slice
    assert [bool((labels[:, :, k] == 1).any()) for k in range(3)] == [True, False, True]
    assert all((labels[:, :, k] == 2).any() for k in range(3))
    names = {0: "background", 1: "liver", 2: "spine"}
    out = write_dicom_seg(labels, dicom_dir, names, None, tmp_path / "seg.dcm", model_name="custom")
    seg = hd.seg.segread(out)
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [(1, "liver"), (2, "spine")]
    spine = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (spine.CodingSchemeDesignator, spine.CodeMeaning) == ("99BRAUNET", "spine")  # no SNOMED entry: local code
    assert "RecommendedDisplayCIELabValue" not in seg.SegmentSequence[0]
    assert seg.NumberOfFrames == 5  # 3 spine frames + 2 liver frames; the empty liver frame is left out
    for k, name in _FILE_OF_SLICE.items():
        frames = _pixels(seg, pydicom.dcmread(dicom_dir / name).SOPInstanceUID, [1, 2])
        np.testing.assert_array_equal(frames[..., 0], labels[:, :, k].T == 1)
        np.testing.assert_array_equal(frames[..., 1], labels[:, :, k].T == 2)


def test_refusals_write_nothing(shared_data: Path, dicom_dir: Path, tmp_path: Path, refuses) -> None:
    grid = read_dicom_series(dicom_dir).shape
    target = tmp_path / "seg.dcm"
    transposed = np.zeros(grid[::-1], np.uint8)
    refuses(lambda: write_dicom_seg(transposed, dicom_dir, SYNAPSE8_CLASSES, None, target, model_name="m"),
            InputError, "does not match the DICOM series grid", names=target)  # fmt: skip
    refuses(lambda: write_dicom_seg(np.zeros(grid, np.uint8), dicom_dir, SYNAPSE8_CLASSES, None, target,
                                    model_name="m"), InputError, "no labelled voxel", names=target)  # fmt: skip
    beyond = np.zeros(grid, np.uint8)
    beyond[0, 0, 0] = 9
    refuses(lambda: write_dicom_seg(beyond, dicom_dir, SYNAPSE8_CLASSES, None, target, model_name="m"),
            InputError, "label value 9 has no class name", names=target)  # fmt: skip


@pytest.mark.parametrize(("name", "code"), [("polyp", "68496003"), ("lesion", "52988006"), ("kidney_left", "18639004")])
def test_codes_of_binary_models_and_sided_organs(name: str, code: str) -> None:
    from braunet.io.dicom_seg import segment_codes

    _, kind = segment_codes(name)
    assert (kind.value, kind.scheme_designator) == (code, "SCT")


def test_frames_checked_with_pydicom_alone(shared_data: Path, dicom_dir: Path, tmp_path: Path) -> None:
    """The per-frame references and pixels as stored, read without highdicom's SEG reader."""
    labels = _labels(shared_data, "case03_seg_liver1_spine2.nii.gz")
    names = {0: "background", 1: "liver", 2: "spine"}
    seg = pydicom.dcmread(write_dicom_seg(labels, dicom_dir, names, None, tmp_path / "seg.dcm", model_name="m"))
    slice_of = {pydicom.dcmread(dicom_dir / name).SOPInstanceUID: k for k, name in _FILE_OF_SLICE.items()}
    positions = {k: pydicom.dcmread(dicom_dir / name).ImagePositionPatient for k, name in _FILE_OF_SLICE.items()}
    pixels = seg.pixel_array  # (frames, rows, columns), bit-unpacked 0/1
    seen = set()
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        k = slice_of[uid]
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in positions[k]], atol=1e-3)  # fmt: skip
        np.testing.assert_array_equal(pixels[index], np.equal(labels[:, :, k].T, number))  # segment n is label n here
        seen.add((k, number))
    assert seen == {(k, n) for k in range(3) for n in (1, 2)}


@pytest.mark.parametrize("kind", ["SEMIAUTOMATIC", "MANUAL"])
def test_corrected_and_hand_drawn_labels_say_so(shared_data: Path, dicom_dir: Path, tmp_path: Path, kind: str) -> None:
    """Labels a person corrected keep the model's identification; hand-drawn ones name no algorithm."""
    labels = _labels(shared_data, "case03_label_synapse8.nii.gz")
    seg = hd.seg.segread(write_dicom_seg(labels, dicom_dir, SYNAPSE8_CLASSES, SYNAPSE8_COLORS, tmp_path / "seg.dcm",
                                         model_name="ct-abdomen-8", model_version=3, algorithm_type=kind))  # fmt: skip
    (segment,) = seg.SegmentSequence
    assert segment.SegmentAlgorithmType == kind and segment.SegmentLabel == "liver"
    if kind == "MANUAL":
        assert "SegmentationAlgorithmIdentificationSequence" not in segment
        assert "BRAU-Net++" not in seg.SeriesDescription
    else:
        assert segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "ct-abdomen-8 v3"
