"""Property-based fuzzing of the readers (hypothesis): random header fields, truncations, byte flips,
dtypes, shapes and affines through ``read_image`` (NIfTI, DICOM series, PNG/JPEG/BMP/TIFF).

The contract every example must keep:

* either one :class:`~braunet.errors.InputError` whose one-line message starts with the file (for a
  DICOM series: the folder, or a file in it), or a valid :class:`~braunet.io.Volume`: a 3-D array
  with a finite, invertible affine, or a 2-D ``(H, W)`` / ``(H, W, 3)`` uint8/uint16 image;
* warnings only as one-line :class:`~braunet.errors.InputWarning` naming the file; nothing on stderr
  (no numpy RuntimeWarning, no nibabel/tifffile/pydicom/Pillow line);
* the input unchanged (SHA-256 before and after) and no file added or left next to it.

Runs in the normal suite at a small example count (a few seconds); ``BRAUNET_FUZZ_EXAMPLES=500``
runs each property longer. No example database is written (``database=None``): a failure prints
the example and a ``@reproduce_failure`` blob instead.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from braunet.errors import InputError, InputWarning
from braunet.io import Volume, read_image

EXAMPLES = int(os.environ.get("BRAUNET_FUZZ_EXAMPLES", "15"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    derandomize="BRAUNET_FUZZ_EXAMPLES" not in os.environ,  # reason: CI runs the same examples each time; longer runs explore
    # reason: tmp_path/capfd are shared by the examples on purpose; each example cleans its own folder
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, 3e38, -1024.0]),
)


def _state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_contract(path: Path, capfd: pytest.CaptureFixture[str], read: Callable[[Path], Volume] = read_image) -> None:
    """Read ``path`` and assert the contract in the module docstring."""
    folder = path if path.is_dir() else path.parent
    before = _state(folder)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            volume = read(path)
        except InputError as error:
            message = str(error)
            assert "\n" not in message, message
            assert message.startswith(str(path)), message
        else:
            _check_volume(volume)
    for item in caught:
        assert issubclass(item.category, InputWarning), f"{item.category.__name__}: {item.message}"
        text = str(item.message)
        assert "\n" not in text and text.startswith(str(path)), text
    assert capfd.readouterr().err == "", "a library or numpy wrote to stderr"
    assert _state(folder) == before, "the input changed, or a file was added or left next to it"


def _check_volume(volume: Volume) -> None:
    array, affine = volume.array, volume.affine
    assert affine.shape == (4, 4) and np.all(np.isfinite(affine))
    if volume.is_2d:
        assert array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3), array.shape
        assert array.dtype in (np.uint8, np.uint16), array.dtype
    else:
        assert array.ndim == 3 and min(array.shape) >= 1, array.shape
        assert abs(np.linalg.det(affine[:3, :3])) > 0
        assert array.dtype.kind in "biuf" and array.dtype.itemsize <= 8
        if array.dtype.kind == "f":
            assert array.dtype == np.float32 and np.all(np.isfinite(array))
    assert array.flags.c_contiguous


def _fresh(tmp_path: Path, name: str) -> Path:
    """An empty folder for one example (hypothesis reuses ``tmp_path`` across examples)."""
    folder = tmp_path / name
    if folder.exists():
        for item in sorted(folder.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
    folder.mkdir(exist_ok=True)
    return folder


def _damage(data: bytes, draw: st.DrawFn) -> bytes:
    """Maybe cut the bytes short and maybe overwrite a few of them."""
    if data and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    flips = draw(st.lists(st.tuples(st.integers(0, max(0, len(data) - 1)), st.integers(0, 255)), max_size=4))
    if data and flips:
        buffer = bytearray(data)
        for at, value in flips:
            buffer[at] = value
        data = bytes(buffer)
    return data


# --- NIfTI: header fields written exactly as drawn -----------------------------------------------

_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.float32, np.float64]


@st.composite
def nifti_files(draw: st.DrawFn) -> tuple[str, bytes]:
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=5)))
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    if draw(st.booleans()):  # forged dimensions: huge, zero or negative claims
        dims = draw(st.lists(st.integers(-2, 2**15 - 1), min_size=8, max_size=8))
        header["dim"] = [min(max(dims[0], 0), 7), *dims[1:]]
    header["pixdim"] = [draw(st.sampled_from([1.0, -1.0]))] + [draw(FLOATS) for _ in range(7)]
    header["qform_code"] = draw(st.integers(-1, 5))
    header["sform_code"] = draw(st.integers(-1, 5))
    for field in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
        header[field] = draw(FLOATS)
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = [draw(FLOATS) for _ in range(4)]
    header["scl_slope"] = draw(FLOATS)
    header["scl_inter"] = draw(FLOATS)
    if draw(st.booleans()):
        header["datatype"] = draw(st.sampled_from([0, 1, 32, 128, 255, 1536, 2304, 9999]))
    header["vox_offset"] = draw(st.sampled_from([352, 352, 0, 348, 1 << 20]))
    count = int(np.prod(shape))
    values = draw(st.sampled_from(["zeros", "random", "extreme"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if values == "zeros":
        data = np.zeros(count, dtype)
    elif values == "random":
        data = rng.integers(0, 256, count * dtype.itemsize, dtype=np.uint8).view(dtype)  # any bit pattern: NaN too
    else:
        info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
        data = rng.choice(np.array([info.min, info.max, 0], dtype=dtype), count)
    payload = header.binaryblock + bytes(4) + data.tobytes()
    payload = _damage(payload, draw)
    name = draw(st.sampled_from(["img.nii", "img.nii.gz"]))
    return name, gzip.compress(payload) if name.endswith(".gz") else payload


@FUZZ
@given(case=nifti_files())
def test_nifti_headers_and_truncations(case: tuple[str, bytes], tmp_path: Path, capfd) -> None:
    name, payload = case
    path = _fresh(tmp_path, "nifti") / name
    path.write_bytes(payload)
    _check_contract(path, capfd)


@FUZZ
@given(
    data=st.data(),
    dtype=st.sampled_from(_DTYPES),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    affine=st.lists(st.floats(-100, 100, allow_nan=False), min_size=12, max_size=12),
)
def test_nifti_dtypes_shapes_affines(data, dtype, shape, affine, tmp_path: Path, capfd) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    with np.errstate(all="ignore"):  # reason: casting 1e30 to integers is part of the drawing, not of the reading
        values = (rng.normal(size=shape) * data.draw(st.sampled_from([1.0, 1e3, 1e30]))).astype(dtype)
    matrix = np.eye(4)
    matrix[:3, :] = np.reshape(affine, (3, 4))
    header = nib.Nifti1Header()
    header.set_data_dtype(values.dtype)
    header.set_sform(matrix, code=data.draw(st.integers(1, 4)))  # reason: set_qform's SVD can hang on such matrices
    path = _fresh(tmp_path, "valid") / "img.nii.gz"
    nib.save(nib.Nifti1Image(values, None, header), path)
    capfd.readouterr()
    _check_contract(path, capfd)


# --- DICOM: a small synthetic series from the shared slices, tags redrawn ------------------------


@pytest.fixture(scope="module")
def small_series(dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three shared CT slices cut to 32 x 32 pixels (positions and tags kept), in a folder of their own."""
    folder = tmp_path_factory.mktemp("small_series")
    for source in sorted(dicom_dir.iterdir()):
        dataset = pydicom.dcmread(source)
        dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[::16, ::16]).tobytes()
        dataset.Rows = dataset.Columns = 32
        dataset.save_as(folder / source.name)
    return folder


_TAG_VALUES = {
    "Modality": st.sampled_from(["CT", "MR", "OT", "", "ct"]),
    "RescaleSlope": st.sampled_from(["1", "0", "0.5", "-1", "1e40", "nan", "abc", ""]),
    "RescaleIntercept": st.sampled_from(["-1024", "0", "1e40", "inf", "x", ""]),
    "PixelSpacing": st.sampled_from([[0.8, 0.8], [0, 1], [-1, 1], [1], ["a", "b"]]),
    "ImageOrientationPatient": st.sampled_from([[1, 0, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0]]),
    "ImagePositionPatient": st.sampled_from([[0, 0, 0], [0, 0, 1e30], [1, 2], ["nan", "0", "0"]]),
    "Rows": st.sampled_from([0, 1, 31, 64, 65535]),
    "Columns": st.sampled_from([0, 1, 33, 65535]),
    "BitsAllocated": st.sampled_from([1, 8, 12, 32]),
    "PixelRepresentation": st.sampled_from([0, 1, 2]),
    "SamplesPerPixel": st.sampled_from([0, 3]),
    "NumberOfFrames": st.sampled_from(["2", "0", "x"]),
    "PixelPaddingValue": st.sampled_from([0, -2000]),
}


@FUZZ
@given(data=st.data())
def test_dicom_series_tags_and_truncations(data, small_series: Path, tmp_path: Path, capfd) -> None:
    folder = _fresh(tmp_path, "series")
    for index, source in enumerate(sorted(small_series.iterdir())):
        payload = source.read_bytes()
        dataset = pydicom.dcmread(io.BytesIO(payload))
        for keyword in data.draw(st.lists(st.sampled_from(sorted(_TAG_VALUES)), max_size=3, unique=True)):
            if data.draw(st.booleans()):
                if keyword in dataset:
                    delattr(dataset, keyword)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reason: pydicom warns about invalid values while *writing* them
                # reason: pydicom refuses such a value outright (or cannot resolve its VR)
                with contextlib.suppress(ValueError, TypeError, OverflowError, AttributeError):
                    setattr(dataset, keyword, data.draw(_TAG_VALUES[keyword]))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dataset.save_as(buffer)
            except (ValueError, TypeError, OverflowError, OSError, AttributeError):
                buffer = io.BytesIO(payload)  # reason: pydicom could not write that value; keep the slice as it was
        (folder / f"{index:02d}.dcm").write_bytes(_damage(buffer.getvalue(), data.draw) if index == 1 else buffer.getvalue())
    capfd.readouterr()
    _check_contract(folder, capfd)


# --- 2-D images: random arrays in every format, damaged, or with forged headers ------------------


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.bool_])))
    shape = (height, width) if channels is None else (height, width, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    array = rng.integers(0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8).view(dtype).reshape(shape)
    suffix = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
    buffer = io.BytesIO()
    if suffix == ".tif":
        frames = draw(st.integers(1, 3))
        tifffile.imwrite(buffer, np.stack([array] * frames) if frames > 1 else array,
                         compression=draw(st.sampled_from([None, "zlib"])))  # fmt: skip
    else:
        with np.errstate(all="ignore"):  # reason: casting random float bits is part of the drawing
            small = array.astype(np.uint8) if dtype != np.uint16 or channels not in (None, 1) else array
        small = small[..., 0] if small.ndim == 3 and small.shape[2] in (1, 2, 5) else small
        image = Image.fromarray(small[..., :3] if suffix == ".jpg" and small.ndim == 3 else small)
        kind = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP"}[suffix]
        if kind == "JPEG" and image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        if kind == "BMP" and image.mode == "I;16":
            image = image.convert("L")
        frames = draw(st.integers(1, 2)) if kind == "PNG" else 1
        image.save(buffer, format=kind, save_all=frames > 1, append_images=[image] * (frames - 1))
    payload = buffer.getvalue()
    if suffix == ".png" and draw(st.booleans()):  # forge the IHDR width/height (the CRC then fails, or not)
        forged = draw(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)))
        payload = payload[:16] + forged[0].to_bytes(4, "big") + forged[1].to_bytes(4, "big") + payload[24:]
    return "img" + suffix, _damage(payload, draw)


@FUZZ
@given(case=image_files())
def test_2d_images(case: tuple[str, bytes], tmp_path: Path, capfd) -> None:
    name, payload = case
    path = _fresh(tmp_path, "image") / name
    path.write_bytes(payload or b"\0")
    _check_contract(path, capfd)
