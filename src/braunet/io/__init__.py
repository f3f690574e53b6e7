"""Image IO: NIfTI volumes, DICOM series folders and 2-D images in, label maps out.

Every reader returns one frozen :class:`Volume` (array + voxel-to-RAS+ affine + source), every
failure is an :class:`~braunet.errors.InputError` or :class:`~braunet.errors.OutputError` with a
one-line ``"PATH: problem"`` message, and every write is atomic. ``to_canonical`` reorients a
volume to the closest RAS+ axes (flips/transposes only) and ``Reorientation.undo`` maps
predictions back onto the original voxels. :data:`FORMATS` (:mod:`braunet.io.formats`) is the one
table of file suffixes that are read and written; every other part of braunet asks it.
"""

from braunet.io.dicom import read_dicom_series
from braunet.io.formats import (
    FORMATS,
    IMAGE_SUFFIXES,
    SUPPORTED_SUFFIXES,
    VOLUME_SUFFIXES,
    FileFormat,
    file_stem,
    format_of,
    suffixes,
)
from braunet.io.image2d import read_image_2d
from braunet.io.nifti import read_nifti
from braunet.io.orientation import Reorientation, to_canonical
from braunet.io.reader import read_class_names, read_image
from braunet.io.volume import Volume
from braunet.io.writers import write_image, write_labels

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "VOLUME_SUFFIXES",
    "FileFormat",
    "Reorientation",
    "Volume",
    "file_stem",
    "format_of",
    "read_class_names",
    "read_dicom_series",
    "read_image",
    "read_image_2d",
    "read_nifti",
    "suffixes",
    "to_canonical",
    "write_image",
    "write_labels",
]
