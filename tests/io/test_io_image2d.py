"""2-D images: the shared CVC TIFF, Kvasir JPEG and PNG masks, documented conversions, refusals."""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.errors import InputError
from braunet.io import read_image, read_image_2d

KVASIR = "cju0qkwl35piu0993l0dewei2"


def _png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """A valid 48-bit RGB PNG written by hand (Pillow cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def test_cvc_tiff_frame(shared_data: Path) -> None:
    path = shared_data / "cvc_clinicdb" / "images" / "1.tif"
    image = read_image(path)
    assert image.shape == (288, 384, 3) and image.array.dtype == np.uint8
    np.testing.assert_array_equal(image.array, tifffile.imread(path))
    assert image.is_2d and image.modality == "RGB" and image.spatial_shape == (288, 384)
    np.testing.assert_array_equal(image.affine, np.eye(4))
    assert image.spacing == (1.0, 1.0) and image.orientation == ""


def test_cvc_tiff_mask(shared_data: Path) -> None:
    mask = read_image(shared_data / "cvc_clinicdb" / "masks" / "1.tif")
    assert mask.shape == (288, 384) and mask.array.dtype == np.uint8 and mask.modality == "grey"


def test_kvasir_jpeg(shared_data: Path) -> None:
    path = shared_data / "kvasir_seg" / "images" / f"{KVASIR}.jpg"
    image = read_image(path)
    assert image.shape == (529, 622, 3) and image.array.dtype == np.uint8
    with Image.open(path) as reference:
        np.testing.assert_array_equal(image.array, np.asarray(reference))


@pytest.mark.parametrize(
    "relative", [f"kvasir_seg/images/{KVASIR}.jpg", f"kvasir_seg/masks/{KVASIR}.png", "cvc_clinicdb/images/1.tif",
                 "totalseg_ct/case01sm_ct.nii.gz", "dcmqi_ct/ct_dicom"],
)  # fmt: skip
def test_every_reader_returns_a_contiguous_writable_array(shared_data: Path, relative: str) -> None:
    array = read_image(shared_data / relative).array
    assert array.flags.c_contiguous and array.flags.writeable


@pytest.mark.parametrize(
    "relative",
    [f"kvasir_seg/masks/{KVASIR}.png", "cvc_clinicdb/masks_binary/1.png", "ham10000/masks/ISIC_0024311.png"],
)
def test_png_masks(shared_data: Path, relative: str) -> None:
    mask = read_image(shared_data / relative)
    assert mask.array.ndim == 2 and mask.array.dtype == np.uint8
    assert set(np.unique(mask.array)) <= {0, 255}


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(image.array, pixels[..., :3])  # colour as stored, not composited
    assert image.modality == "RGB"


def test_16_bit_grey_png_stays_uint16(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "grey16.png")
    image = read_image(tmp_path / "grey16.png")
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, pixels)


def test_palette_and_bilevel_and_grey_alpha(tmp_path: Path, shared_data: Path) -> None:
    with Image.open(shared_data / "kvasir_seg" / "images" / f"{KVASIR}.jpg") as photo:
        palette = photo.convert("P")
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png").array, np.asarray(palette.convert("RGB")))
    bits = np.zeros((8, 9), dtype=bool)
    bits[2:5, 3:7] = True
    Image.fromarray(bits).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png").array, bits.astype(np.uint8) * 255)
    grey_alpha = np.dstack([np.arange(72, dtype=np.uint8).reshape(8, 9), np.full((8, 9), 7, np.uint8)])
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png").array, grey_alpha[..., 0])


def test_tiff_variants(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 65536, (10, 12, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "planar.tif").array, rgb)
    rgba = np.random.default_rng(3).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tiff", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image_2d(tmp_path / "rgba.tiff").array, rgba[..., :3])


# --- refused images: one-line InputError naming the file, nothing written ------------------------


def test_missing_and_empty(refuses, tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    refuses(lambda: read_image(missing), InputError, "no such file", names=missing)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    refuses(lambda: read_image(empty), InputError, "empty file", empty, names=empty)


@pytest.mark.parametrize(("relative", "cut_to"), [(f"kvasir_seg/masks/{KVASIR}.png", 0.5),
                                                  (f"kvasir_seg/masks/{KVASIR}.png", 30),
                                                  (f"kvasir_seg/images/{KVASIR}.jpg", 0.5),
                                                  ("cvc_clinicdb/images/1.tif", 0.5),
                                                  ("ham10000/images/ISIC_0024311.jpg", 100)])  # fmt: skip
def test_truncated(refuses, tmp_path: Path, shared_data: Path, relative: str, cut_to: float) -> None:
    source = shared_data / relative
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: int(len(data) * cut_to) if cut_to < 1 else int(cut_to)])
    refuses(lambda: read_image(cut), InputError, "truncated|unreadable", cut, source, names=cut)


def test_truncated_tiff_with_leading_directory(refuses, tmp_path: Path, shared_data: Path) -> None:
    # tifffile writes the directory before the pixels, unlike the CVC files, so a cut keeps the header
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, tifffile.imread(shared_data / "cvc_clinicdb" / "images" / "1.tif"))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:100_000])
    refuses(lambda: read_image(cut), InputError, "truncated TIFF", names=cut)


def test_text_named_png(refuses, tmp_path: Path) -> None:
    text = tmp_path / "mask.png"
    text.write_text("not a picture")
    refuses(lambda: read_image(text), InputError, "unreadable", names=text)


def test_16_bit_colour_png(refuses, tmp_path: Path) -> None:
    path = _png_rgb16(tmp_path / "rgb16.png", np.full((4, 5, 3), 1000, dtype=np.uint16))
    refuses(lambda: read_image(path), InputError, "16-bit colour PNG", names=path)


def test_more_than_three_channels(refuses, tmp_path: Path) -> None:
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((10, 12, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    refuses(lambda: read_image(path), InputError, "channels", names=path)
    cmyk_like = tmp_path / "four.tif"
    tifffile.imwrite(cmyk_like, np.zeros((10, 12, 4), np.uint8), photometric="minisblack", planarconfig="contig")
    refuses(lambda: read_image(cmyk_like), InputError, "4 channels", names=cmyk_like)


def test_multi_page_and_float_tiff(refuses, tmp_path: Path) -> None:
    pages = tmp_path / "pages.tif"
    tifffile.imwrite(pages, np.zeros((5, 10, 12), np.uint8), photometric="minisblack")
    refuses(lambda: read_image(pages), InputError, "single page", names=pages)
    floats = tmp_path / "float.tif"
    tifffile.imwrite(floats, np.zeros((10, 12), np.float32))
    refuses(lambda: read_image(floats), InputError, "float32 pixels are not supported", names=floats)


def test_unsupported_suffix(refuses, tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    Image.new("L", (4, 4)).save(gif)
    refuses(lambda: read_image(gif), InputError, "unsupported file type", names=gif)


# --- several frames: refused, not silently the first one ---------------------------------------


def _frames(count: int = 3) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (60 * k, 0, 0)) for k in range(count)]


@pytest.mark.parametrize(("name", "pillow_format", "kind"), [("anim.png", "PNG", "an animated PNG"),
                                                             ("gif_inside.png", "GIF", "an animated GIF")])
def test_animations_are_refused(refuses, tmp_path: Path, name: str, pillow_format: str, kind: str) -> None:
    path = tmp_path / name
    first, *rest = _frames()
    first.save(path, format=pillow_format, save_all=True, append_images=rest)
    refuses(lambda: read_image(path), InputError, rf"3 frames \({kind}\); expected one still image", path, names=path)


def test_multi_page_tiff_names_its_frames(refuses, tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 30, 40, 3), np.uint8), photometric="rgb")
    refuses(lambda: read_image(path), InputError, r"4 frames \(a multi-page TIFF\)", path, names=path)


def test_a_reduced_resolution_preview_page_is_not_a_frame(tmp_path: Path) -> None:
    path = tmp_path / "with_preview.tif"
    image = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80).astype(np.uint8)
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(image, photometric="minisblack")
        tiff.write(image[::4, ::4], photometric="minisblack", subfiletype=1)  # FILETYPE_REDUCEDIMAGE
    np.testing.assert_array_equal(read_image(path).array, image)


# --- pixel counts from the header: refused before decoding -------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height 8-bit grey pixels, with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_png_claiming_more_pixels_than_pillow_allows(refuses, tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 10_000, 10_000)  # 1e8 pixels: Pillow would only warn, then decode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reason: Pillow's DecompressionBombWarning must not reach the user
        refuses(lambda: read_image(path), InputError, r"claims 10000x10000 = 100,000,000 pixels .* more than the limit "
                f"of {Image.MAX_IMAGE_PIXELS:,}", path, names=path)  # fmt: skip


def test_small_compressed_tiff_that_decodes_to_gigabytes(refuses, tmp_path: Path) -> None:
    path = tmp_path / "bomb.tif"
    tile = np.zeros((256, 256), np.uint8)
    tiles = (tile for _ in range(48 * 48))
    tifffile.imwrite(path, tiles, shape=(12288, 12288), dtype=np.uint8, tile=(256, 256), compression="zlib")
    assert path.stat().st_size < 2_000_000  # 151 Mpixels in under 2 MB
    refuses(lambda: read_image(path), InputError, r"claims 12288x12288 = 150,994,944 pixels", path, names=path)


def test_pixel_limit_follows_the_voxel_budget(refuses, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ok.png"
    Image.new("L", (50, 40)).save(path)
    monkeypatch.setenv("BRAUNET_MAX_VOXELS", "1999")
    refuses(lambda: read_image(path), InputError, "claims 40x50 = 2,000 pixels", path, names=path)
    monkeypatch.setenv("BRAUNET_MAX_VOXELS", "2000")
    assert read_image(path).shape == (40, 50)


# --- library log lines and warnings stay off stderr --------------------------------------------


def test_tifffile_log_lines_do_not_reach_stderr(tmp_path: Path, capfd, caplog) -> None:
    whole = tmp_path / "two.tif"
    tifffile.imwrite(whole, np.zeros((2, 20, 30), np.uint8), photometric="minisblack")
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) - 200])  # the second page's directory is gone: tifffile logs "invalid page offset"
    capfd.readouterr()
    with caplog.at_level(logging.WARNING), pytest.raises(InputError):
        read_image(cut)
    # reason: pytest's log capture stands in for stderr here (without it, logging's last resort prints there)
    assert [r for r in caplog.records if r.name.startswith("tifffile")] == []
    assert capfd.readouterr().err == ""


def test_pillow_warnings_do_not_reach_the_user(tmp_path: Path) -> None:
    path = tmp_path / "bad_exif.jpg"
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\xff\xff\xff\xff"
    Image.new("RGB", (20, 20)).save(path, exif=exif)  # Pillow warns "Corrupt EXIF data" when it reads the orientation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).shape == (20, 20, 3)


# A forged two-page TIFF whose series header makes tifffile assert (found by the reader fuzz suite).
_FORGED_TIFF = bytes.fromhex(
    "49492a000800000011000001040001000000010000000101040001000000010000000201030004000000da00000003010300"
    "01000000010000000601030001000000020000000e01020018000000e2000000110104000100000030010000150103000100"
    "0000040000001601040001000000010000001701040001000000080000001a010500010000000a0100001b01050001000000"
    "120100001c0103000100000001000000280103000100000001000000310102000c0000001a01000052010300010000000200"
    "00005301030004000000260100004001000000001000100010007b227368617065223a205b322c20312c20312c20345d7d00"
    "00000000000000000000000000000000010000000100000001000000010000007469666666696c652e707900020002000200"
    "020000005f82c2d9cfeb0fa35f82c2d9cfeb0fa30f0000010400010000000100000001010400010000000100000002010300"
    "04000000fa010000030103000100000001000000060103000100000002000000110104000100000038010000150103000100"
    "0000040000001601040001000000010000001701040001000000080000001a01050001000000020200001b01050001000000"
    "0a0200001c010300010000000100000028010300010000000100000052010300010000000200000053010300040000001202"
    "0000000000001000100010001000010000000100000001000000010000000200020002000200"
)


def test_tiff_that_makes_tifffile_assert_is_one_error(tmp_path):
    path = tmp_path / "img.tif"
    path.write_bytes(_FORGED_TIFF)
    with pytest.raises(InputError, match=str(path)):
        read_image(path)
