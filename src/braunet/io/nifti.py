"""NIfTI-1/2 reading and the NIfTI half of the writers (nibabel).

Geometry is whatever nibabel's ``img.affine`` picks (sform if its code is set, else qform, else
the pixdim fallback). Writers keep that geometry bit for bit by copying the source header's
qform/sform fields when they still describe ``Volume.affine``.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from braunet.errors import InputError
from braunet.io._common import PARSE_ERRORS, existing_file, first_line, require_finite, rescale
from braunet.io.formats import NIFTI
from braunet.io.volume import Volume

__all__ = ["is_nifti_path", "nifti_image", "read_nifti", "read_nifti_class_names"]

_LOAD_ERRORS: tuple[type[BaseException], ...] = (ImageFileError, HeaderDataError, *PARSE_ERRORS)

# Header fields that together define the voxel-to-world geometry (pixdim[0] is qfac).
_GEOMETRY_FIELDS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units",
)  # fmt: skip
_SCANNER_CODE = 1  # NIFTI_XFORM_SCANNER_ANAT: coordinates from the scanner (DICOM-derived)
_COMMENT_ECODE = 6  # NIFTI_ECODE_COMMENT: a free-text header extension, ignored by other tools
_CLASS_NAMES_KEY = "braunet_class_names"


def is_nifti_path(path: Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` (any case)."""
    return NIFTI.matches(path)


def read_nifti(path: str | PathLike) -> Volume:
    """Read a 3-D NIfTI volume (``.nii`` or ``.nii.gz``).

    Returns:
        A Volume with ``array`` ``(I, J, K)`` in file voxel order: the stored dtype when the file
        has no scaling (int16 HU stays int16), the :func:`~braunet.io._common.rescale` result when
        it has scl_slope/scl_inter, float32 for float64 data. ``modality="unknown"``: NIfTI does
        not record it and guessing CT from the value range is unreliable.

    Raises:
        InputError: ``"PATH: problem"`` for a missing, empty, non-NIfTI, truncated or corrupt
            file, a 2-D or true 4-D image (a trailing axis of size 1 is squeezed), a data type
            that is not a plain number, NaN/Inf voxels or a singular affine.
    """
    path = existing_file(Path(path).expanduser(), "NIfTI")
    try:
        img = nib.load(path, mmap=False)
    except _LOAD_ERRORS as error:
        raise InputError(f"{path}: not a readable NIfTI file ({first_line(error)})") from error
    if not isinstance(img, nib.Nifti1Image):  # reason: Nifti2Image is a subclass
        raise InputError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")

    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise InputError(f"{path}: 2-D NIfTI (shape {shape}); save it with a third axis of size 1, or as PNG/TIFF")
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise InputError(
            f"{path}: {len(shape)}-D NIfTI (shape {shape}); extract one 3-D volume (one time point or channel) first"
        )
    if 0 in shape:
        raise InputError(f"{path}: empty volume (shape {shape})")
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":
        raise InputError(f"{path}: voxel type {dtype} is not supported (expected integers or floats)")

    proxy = cast(ArrayProxy, img.dataobj)  # reason: a loaded file's dataobj is a proxy; nibabel types it ArrayLike
    try:
        # reason: nibabel reads lazily, so truncated or corrupt data only fails here
        raw = np.asanyarray(proxy.get_unscaled())
    except PARSE_ERRORS as error:
        raise InputError(f"{path}: truncated or corrupt NIfTI data ({first_line(error)})") from error
    raw = raw.reshape(shape[:3])  # reason: squeeze trailing axes of size 1 (a 4-D file with one time point)
    array = rescale(raw, proxy.slope, proxy.inter)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)  # reason: float16/float64 storage; the model works in float32
    require_finite(array, path)

    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{path}: voxel-to-world affine is not invertible (zero or missing voxel size?)")
    return Volume(array=np.ascontiguousarray(array), affine=affine, source=path, modality="unknown",
                  is_2d=False, header=img.header)  # fmt: skip


def nifti_image(array: np.ndarray, like: Volume, *, class_names: dict[int, str] | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``array`` (spatial shape of ``like``) on exactly ``like``'s grid.

    When ``like.header`` is a NIfTI header whose affine is still ``like.affine``, its qform/sform
    fields are copied verbatim, so codes and affine survive bit for bit. Otherwise (DICOM input,
    or an affine changed since reading) both forms are set from ``like.affine`` (stored as
    float32, as NIfTI-1 requires) with the header's codes where set, else code 1 (scanner).
    The header is fresh otherwise: no scl_slope, cal_min or intent inherited from a CT.
    """
    header = nib.Nifti1Header()
    header.set_data_dtype(array.dtype)
    source = like.header if isinstance(like.header, nib.Nifti1Header) else None
    if source is not None and np.array_equal(source.get_best_affine(), like.affine):
        for field in _GEOMETRY_FIELDS:
            header[field] = source[field]
        header["pixdim"][:4] = source["pixdim"][:4]
    else:
        qform_code = int(source["qform_code"]) if source is not None else 0
        sform_code = int(source["sform_code"]) if source is not None else 0
        header.set_qform(like.affine, code=qform_code or _SCANNER_CODE)
        header.set_sform(like.affine, code=sform_code or _SCANNER_CODE)
        header.set_xyzt_units(xyz="mm")
    if class_names:
        text = json.dumps({_CLASS_NAMES_KEY: {str(k): v for k, v in sorted(class_names.items())}})
        header.extensions.append(nib.nifti1.Nifti1Extension(_COMMENT_ECODE, text.encode()))
    return nib.Nifti1Image(array, None, header)


def read_nifti_class_names(path: str | PathLike) -> dict[int, str] | None:
    """The class names :func:`~braunet.io.write_labels` stored in a NIfTI file, if any (header only)."""
    path = existing_file(Path(path).expanduser(), "NIfTI")
    try:
        header = nib.load(path).header
    except _LOAD_ERRORS as error:
        raise InputError(f"{path}: not a readable NIfTI file ({first_line(error)})") from error
    if not isinstance(header, nib.Nifti1Header):
        return None
    for extension in header.extensions:
        if extension.get_code() != _COMMENT_ECODE:
            continue
        try:
            content = json.loads(extension.get_content())
        except ValueError:  # reason: comment extensions written by other tools are free text
            continue
        if isinstance(content, dict) and _CLASS_NAMES_KEY in content:
            return {int(k): str(v) for k, v in content[_CLASS_NAMES_KEY].items()}
    return None
