"""The file formats braunet reads and writes: one table, the only list of accepted suffixes.

:func:`braunet.io.read_image` dispatches on :data:`FORMATS`, the writers check their targets
against it, and everything that has to decide from a name alone which files to take (the
``braunet predict`` output names, the napari reader and its ``napari.yaml`` patterns, training-pair
collection) asks it too; a test checks ``napari.yaml`` against it. Suffixes are lower case and
matched case-insensitively. A DICOM series is a folder, not a suffix: single DICOM files
(:data:`DICOM_FILE_SUFFIXES`) are recognised only so that they can be refused with a hint. Label
maps on a DICOM series are also written as a DICOM Segmentation (:mod:`braunet.io.dicom_seg`), a
file named with one of :data:`DICOM_SEG_SUFFIXES` (``braunet predict --dicom-seg``, the napari
SEG writer); it is written, never read.

Example::

    >>> from braunet.io import file_stem, format_of
    >>> format_of("scan.NII.GZ").name, file_stem("scan.nii.gz"), file_stem("frame.tif")
    ('NIfTI', 'scan', 'frame')
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

__all__ = [
    "DICOM_FILE_SUFFIXES",
    "DICOM_SEG_SUFFIXES",
    "FORMATS",
    "IMAGE_SUFFIXES",
    "NIFTI",
    "SUPPORTED_SUFFIXES",
    "TIFF",
    "VOLUME_SUFFIXES",
    "FileFormat",
    "file_stem",
    "format_of",
    "suffixes",
]


@dataclass(frozen=True)
class FileFormat:
    """One file format :func:`braunet.io.read_image` reads.

    Attributes:
        name: shown in messages (``"NIfTI"``, ``"PNG"``).
        suffixes: lower-case file name endings, e.g. ``(".nii", ".nii.gz")``.
        is_2d: a 2-D image, (H, W) or (H, W, 3), rather than a 3-D volume (I, J, K).
        writable: :func:`braunet.io.write_labels` and :func:`braunet.io.write_image` write it too.
    """

    name: str
    suffixes: tuple[str, ...]
    is_2d: bool
    writable: bool

    def matches(self, path: str | PathLike) -> bool:
        """True if ``path``'s name ends with one of the suffixes (any case)."""
        return Path(path).name.lower().endswith(self.suffixes)


NIFTI = FileFormat("NIfTI", (".nii", ".nii.gz"), is_2d=False, writable=True)
TIFF = FileFormat("TIFF", (".tif", ".tiff"), is_2d=True, writable=True)  # read with tifffile, the others with Pillow
FORMATS: tuple[FileFormat, ...] = (
    NIFTI,
    FileFormat("PNG", (".png",), is_2d=True, writable=True),
    FileFormat("JPEG", (".jpg", ".jpeg"), is_2d=True, writable=False),
    FileFormat("BMP", (".bmp",), is_2d=True, writable=False),
    TIFF,
)
DICOM_FILE_SUFFIXES = (".dcm", ".dicom", ".ima")
DICOM_SEG_SUFFIXES = (".dcm",)  # what a DICOM Segmentation output is named


def suffixes(*, is_2d: bool | None = None, writable: bool | None = None) -> tuple[str, ...]:
    """The suffixes of the formats that match the filters (None: either), in table order."""
    return tuple(
        suffix
        for fmt in FORMATS
        if (is_2d is None or fmt.is_2d == is_2d) and (writable is None or fmt.writable == writable)
        for suffix in fmt.suffixes
    )


SUPPORTED_SUFFIXES = suffixes()  # every file suffix read_image reads
IMAGE_SUFFIXES = suffixes(is_2d=True)
VOLUME_SUFFIXES = suffixes(is_2d=False)


def format_of(path: str | PathLike) -> FileFormat | None:
    """The format ``path``'s name says it has, or None (folders and unknown suffixes)."""
    for fmt in FORMATS:
        if fmt.matches(path):
            return fmt
    return None


def file_stem(path: str | PathLike) -> str:
    """File name without its format suffix (``a.nii.gz`` -> ``a``, ``frame.png`` -> ``frame``).

    A name without a known suffix loses its last ``.part``, as :attr:`pathlib.Path.stem` does.
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
