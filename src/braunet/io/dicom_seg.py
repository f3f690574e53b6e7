"""DICOM Segmentation export (highdicom): a label map on a DICOM series' grid -> one SEG file.

The SEG references its source series (Study, Series and SOP Instance UIDs, Frame of Reference), so
PACS, 3D Slicer and OHIF place it on the images it was computed from. Each organ present in the
label map becomes one segment with its class name, a coded category and type (SNOMED CT, the codes
DICOM's CID 7150/7151 use for these structures), its display colour (CIELab from the card's
"#rrggbb") and how it was made: by BRAU-Net++ (model name and version) as predicted (AUTOMATIC) or
corrected by a person (SEMIAUTOMATIC), or drawn by a person (MANUAL, no algorithm). Classes absent
from the label map get no segment, and empty frames are left out.

Frames map to source instances exactly: the label map is on the grid of
:func:`braunet.io.read_dicom_series`, whose slice ``k`` is
:func:`braunet.io.dicom.read_series_datasets` ``(folder)[k]`` and holds ``pixel_array.T``; so the
frame for that instance is ``labels[:, :, k].T`` (rows, columns).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Literal

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from braunet._atomic import check_writable_target, write_checked
from braunet.errors import InputError
from braunet.io.dicom import read_series_datasets

__all__ = ["SEGMENT_CODES", "AlgorithmType", "segment_codes", "write_dicom_seg"]

Coded = Code | hd.sr.CodedConcept
AlgorithmType = Literal["AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"]  # DICOM's Segment Algorithm Type

_ANATOMY = codes.SCT.AnatomicalStructure  # SCT 91723000
_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003

# {class name: (segmented property category, segmented property type)}. Left and right kidney have
# their own SNOMED concepts (pydicom's dictionary only names "Kidney"), as in dcmqi and TotalSegmentator.
SEGMENT_CODES: dict[str, tuple[Coded, Coded]] = {
    "aorta": (_ANATOMY, codes.SCT.Aorta),
    "gallbladder": (_ANATOMY, codes.SCT.Gallbladder),
    "kidney_left": (_ANATOMY, hd.sr.CodedConcept("18639004", "SCT", "Left kidney")),
    "kidney_right": (_ANATOMY, hd.sr.CodedConcept("9846003", "SCT", "Right kidney")),
    "liver": (_ANATOMY, codes.SCT.Liver),
    "pancreas": (_ANATOMY, codes.SCT.Pancreas),
    "spleen": (_ANATOMY, codes.SCT.Spleen),
    "stomach": (_ANATOMY, codes.SCT.Stomach),
    "polyp": (_ABNORMAL, codes.SCT.PolypOfColon),
    "lesion": (_ABNORMAL, codes.SCT.Lesion),
}
_LOCAL_SCHEME = "99BRAUNET"  # reason: DICOM reserves "99..." designators for private coding schemes
_TISSUE = codes.SCT.Tissue


def segment_codes(class_name: str) -> tuple[Coded, Coded]:
    """The (category, type) codes of a class; an unknown class gets category Tissue and a type in
    the private scheme ``99BRAUNET`` named after the class (a coded value DICOM requires, honestly local)."""
    known = SEGMENT_CODES.get(class_name.lower())
    if known is not None:
        return known
    value = class_name[:16] or "class"
    return _TISSUE, hd.sr.CodedConcept(value, _LOCAL_SCHEME, class_name or "class")


def write_dicom_seg(
    labels: np.ndarray,
    series: str | PathLike,
    class_names: Sequence[str] | Mapping[int, str],
    colours: Sequence[str] | None,
    path: str | PathLike,
    *,
    model_name: str,
    model_version: str | int = "",
    series_number: int = 99,
    algorithm_type: AlgorithmType = "AUTOMATIC",
) -> Path:
    """Write ``labels`` as a binary DICOM Segmentation of the series in folder ``series``.

    Args:
        labels: ``(I, J, K)`` = (Columns, Rows, slices) integer label map on the grid of
            :func:`braunet.io.read_dicom_series` ``(series)``; value = class index, 0 = background.
        series: the DICOM series folder the labels were predicted from.
        class_names: name per class index (a list, or ``{index: name}``); names choose the codes
            (:data:`SEGMENT_CODES`).
        colours: ``"#rrggbb"`` per class index (the model card's ``class_colors``); ``None`` or
            empty writes no recommended display colour.
        path: the ``.dcm`` file to write (atomically).
        model_name, model_version: identify the algorithm in every segment (MANUAL: unused).
        series_number: the new SEG series' number.
        algorithm_type: ``"AUTOMATIC"`` (the model's labels as predicted), ``"SEMIAUTOMATIC"``
            (the model's labels corrected by a person) or ``"MANUAL"`` (drawn by a person).

    Returns:
        ``path`` as a Path.

    Raises:
        InputError: unreadable series, a label map off its grid, a label without a class name,
            or a label map without any labelled voxel (a SEG needs one segment at least).
        OutputError: missing or read-only output folder.
    """
    target = check_writable_target(path)
    datasets = read_series_datasets(series)
    names = dict(class_names) if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    frames = _frames(np.asarray(labels), datasets, target)
    present = [int(v) for v in np.unique(frames) if v != 0]
    if not present:
        raise InputError(f"{target}: the label map holds no labelled voxel, so there is no segment to write")
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise InputError(f"{target}: label value {unnamed[0]} has no class name")

    kind_of_algorithm = hd.seg.SegmentAlgorithmTypeValues(algorithm_type)
    manual = kind_of_algorithm == hd.seg.SegmentAlgorithmTypeValues.MANUAL
    algorithm = None if manual else hd.AlgorithmIdentificationSequence(
        name="BRAU-Net++",
        family=codes.cid7162.ArtificialIntelligence,
        version=f"{model_name} v{model_version}" if model_version != "" else model_name,
        parameters={"model": model_name},
    )
    made_by = "manual" if manual else model_name
    what = "Manual" if manual else f"BRAU-Net++ {model_name}"
    descriptions = []
    for number, value in enumerate(present, start=1):
        category, kind = segment_codes(names[value])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=names[value][:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=kind_of_algorithm,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=f"{made_by}:{names[value]}"[:64],
                display_color=_cielab(colours, value),
            )
        )
    # reason: highdicom wants segment numbers 1..n; class indices of absent organs leave gaps
    lookup = np.zeros(int(frames.max()) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    lookup[present] = np.arange(1, len(present) + 1)

    from braunet import __version__

    source = datasets[0]
    with warnings.catch_warnings():
        # reason: highdicom warns about the source's patient-name style, which the SEG must copy as is
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=lookup[frames],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="napari-braunet",
            manufacturer_model_name=what[:64],
            software_versions=__version__,
            device_serial_number="0",
            content_label="BRAUNET",
            content_description=f"{what} segmentation"[:64],
            series_description=f"{what} segmentation"[:64],
            # reason: an empty SpecificCharacterSet in the source means the default repertoire
            specific_character_set=source.get("SpecificCharacterSet") or None,
        )
    return write_checked(target, seg.save_as)


def _frames(labels: np.ndarray, datasets: Sequence, target: Path) -> np.ndarray:
    """``(I, J, K)`` label map -> ``(K, Rows, Columns)`` frames, one per source instance in order."""
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    expected = (columns, rows, len(datasets))
    if labels.shape != expected:
        raise InputError(f"{target}: label map shape {labels.shape} does not match the DICOM series grid {expected}")
    if labels.dtype.kind not in "iub" or (labels.size and labels.min() < 0):
        raise InputError(f"{target}: label map of type {labels.dtype}; expected non-negative integers")
    return np.ascontiguousarray(np.transpose(labels, (2, 1, 0)))


def _cielab(colours: Sequence[str] | None, value: int) -> hd.color.CIELabColor | None:
    if not colours or value >= len(colours):
        return None
    text = colours[value].lstrip("#")
    return hd.color.CIELabColor.from_rgb(*(int(text[i : i + 2], 16) for i in (0, 2, 4)))
