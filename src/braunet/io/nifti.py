"""NIfTI-1/2 reading and the NIfTI half of the writers (nibabel).

Geometry is whatever nibabel's ``img.affine`` picks (sform if its code is set, else qform, else
the pixdim fallback). Writers keep that geometry bit for bit by copying the source header's
qform/sform fields when they still describe ``Volume.affine``.

Header problems that nibabel fixes or resolves on its own each get one
:class:`~braunet.errors.InputWarning` naming the file (and no nibabel log line): no qform or
sform (orientation guessed), zero or negative voxel sizes where they make the affine (1 mm or
their absolute value assumed), a sheared affine, and qform and sform that disagree (the sform
wins). Before any voxel is read, the size the header claims is checked against the file (an
uncompressed file must hold it; gzip cannot compress more than 1032 : 1) and against
:func:`~braunet.io._common.max_voxels`.
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
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError

from braunet.errors import InputError
from braunet.io._common import (
    PARSE_ERRORS,
    check_budget,
    existing_file,
    first_line,
    quiet_libraries,
    require_affine,
    rescale,
    warn,
)
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
_DEFLATE_MAX_RATIO = 1032  # deflate's best case (long runs of one byte); gzip cannot beat it
_SHEAR_COSINE = 1e-3  # |cos| between voxel axes above this (0.06 degrees off 90) is a shear


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
            that is not a plain number, a header claiming more data than the file holds or than
            :func:`~braunet.io._common.max_voxels` allows, NaN/Inf voxels, values beyond float32,
            or a singular affine.

    Warns:
        InputWarning: for each geometry assumption listed in the module docstring.
    """
    path = existing_file(Path(path).expanduser(), "NIfTI")
    try:
        with quiet_libraries():
            img = nib.load(path, mmap=False)
            # reason: nibabel repairs pixdim while loading; the header as stored says what was assumed
            stored = _stored_header(path, img) if isinstance(img, nib.Nifti1Image) else None
    except _LOAD_ERRORS as error:
        raise InputError(f"{path}: not a readable NIfTI file ({first_line(error)})") from error
    if not isinstance(img, nib.Nifti1Image) or stored is None:  # reason: Nifti2Image is a subclass
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

    _check_claimed_size(path, stored, shape, dtype)

    affine = np.asarray(img.affine, dtype=np.float64)
    require_affine(affine, path)

    proxy = cast(ArrayProxy, img.dataobj)  # reason: a loaded file's dataobj is a proxy; nibabel types it ArrayLike
    try:
        # reason: nibabel reads lazily, so truncated or corrupt data only fails here
        with quiet_libraries():
            raw = np.asanyarray(proxy.get_unscaled())
    except PARSE_ERRORS as error:
        raise InputError(f"{path}: truncated or corrupt NIfTI data ({first_line(error)})") from error
    raw = raw.reshape(shape[:3])  # reason: squeeze trailing axes of size 1 (a 4-D file with one time point)
    # float16/float64 storage becomes float32 here (the model works in float32); values beyond it are refused
    array = rescale(raw, proxy.slope, proxy.inter, path)
    try:
        problems = _geometry_problems(img, stored, affine)
    except PARSE_ERRORS as error:  # reason: get_qform decodes the quaternion, which can be invalid
        raise InputError(f"{path}: unusable qform ({first_line(error)})") from error
    for problem in problems:
        warn(path, problem)
    return Volume(array=np.ascontiguousarray(array), affine=affine, source=path, modality="unknown",
                  is_2d=False, header=img.header)  # fmt: skip


def _stored_header(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Header:
    """The header exactly as stored: ``img.header`` has nibabel's repairs (pixdim 0 -> 1) applied."""
    with ImageOpener(str(path)) as stream:
        return type(img.header).from_fileobj(stream, check=False)


def _check_claimed_size(path: Path, stored: nib.Nifti1Header, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse a header that claims more voxel data than the file can hold, or than memory allows.

    A 180-byte ``.nii.gz`` whose header says 12.8 GB must fail here, not after nibabel allocated it.
    """
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    offset = int(stored.get_data_offset())  # reason: img.header has it reset to 0
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        if claimed + offset > _DEFLATE_MAX_RATIO * size:
            raise InputError(
                f"{path}: truncated or corrupt NIfTI data (the header claims {claimed:,} bytes of voxels; "
                f"a {size:,}-byte gzip file holds at most {_DEFLATE_MAX_RATIO} times that)"
            )
    elif claimed + offset > size:
        raise InputError(
            f"{path}: truncated or corrupt NIfTI data (the header claims {claimed:,} bytes of voxels from byte "
            f"{offset}; the file has {size:,} bytes)"
        )
    check_budget(path, shape, dtype)


def _geometry_problems(img: nib.Nifti1Image, stored: nib.Nifti1Header, affine: np.ndarray) -> list[str]:
    """One sentence for each thing nibabel assumed or resolved silently to make ``affine``."""
    problems = []
    qform_code, sform_code = int(stored["qform_code"]), int(stored["sform_code"])
    codes = "".join(nib.aff2axcodes(affine))
    if qform_code == 0 and sform_code == 0:
        problems.append(f"no qform or sform (both codes 0), so the orientation is not recorded; assumed {codes} "
                        "from the voxel sizes, as nibabel does: left and right may be swapped")  # fmt: skip
    if sform_code == 0:  # reason: the pixdim voxel sizes make the affine only without an sform
        pixdim = np.asarray(stored["pixdim"][1:4], dtype=np.float64)
        if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
            problems.append(f"voxel size pixdim {pixdim.tolist()} has zero or missing values; assumed 1 mm there")
        elif np.any(pixdim < 0):
            problems.append(f"negative voxel sizes pixdim {pixdim.tolist()}; used their absolute values")
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(columns.T @ columns - np.eye(3))
    if cosines.max() > _SHEAR_COSINE:
        degrees = float(np.degrees(np.arcsin(min(1.0, cosines.max()))))
        problems.append(f"the affine is sheared (voxel axes {degrees:.2f} degrees off square; gantry tilt?): slices "
                        "are segmented on the voxel grid, and distances treat the axes as orthogonal")  # fmt: skip
    if qform_code > 0 and sform_code > 0:
        header = img.header
        apart = _largest_distance(header.get_qform(), header.get_sform(), img.shape[:3])
        smallest = float(np.linalg.norm(affine[:3, :3], axis=0).min())
        if apart > 0.5 * smallest:
            qcodes = "".join(nib.aff2axcodes(header.get_qform()))
            problems.append(f"qform ({qcodes}) and sform ({codes}) disagree by up to {apart:.1f} mm over the volume; "
                            "used the sform, as the NIfTI standard's readers do")  # fmt: skip
    return problems


def _largest_distance(first: np.ndarray, second: np.ndarray, shape: tuple[int, ...]) -> float:
    """The largest distance in mm between where two affines put the volume's corner voxels."""
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    return float(np.linalg.norm((corners @ first.T - corners @ second.T)[:, :3], axis=1).max())


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
        with quiet_libraries():
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
