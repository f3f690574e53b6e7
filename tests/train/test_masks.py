"""Mask decoding: the one rule per kind of source, checked against the rules it replaced on real masks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from braunet.errors import InputError
from braunet.io import read_image
from braunet.train.masks import mask_to_labels

# Raw masks as the datasets ship them -> the datasets' own binarised copy (``> 127`` -> {0, 255}).
# PH2 ships {0, 255} PNGs only, so its masks are their own reference.
RAW_AND_BINARISED = {
    "cvc_clinicdb": ("masks/*.tif", "masks_binary/{stem}.png"),  # anti-aliased edges
    "kvasir_seg": ("masks_original_jpg/*.jpg", "masks/{stem}.png"),  # RGB JPEG
    "isic2016_crops": ("masks_original_jpg/*.jpg", "masks/{stem}.png"),  # JPEG
    "ph2": ("masks/*.png", "masks/{stem}.png"),
}


def test_cvc_anti_aliased_mask_uses_the_8_bit_midpoint(shared_data):
    """Frame 1 has 7209 edge pixels between 1 and 254; "non-zero" would grow the polyp by 42 %."""
    raw = tifffile.imread(shared_data / "cvc_clinicdb" / "masks" / "1.tif")
    labels = mask_to_labels(raw, 1, "1.tif", kind="image")
    reference = np.asarray(Image.open(shared_data / "cvc_clinicdb" / "masks_binary" / "1.png")) > 0
    assert np.array_equal(labels == 1, reference)
    assert (raw > 0).sum() > 1.4 * labels.sum()


def test_binary_masks_01_and_0255_agree_and_class_ids_are_checked():
    mask = np.zeros((6, 7), np.uint8)
    mask[2:4, 1:5] = 1
    assert np.array_equal(mask_to_labels(mask, 1, "m", kind="image"), mask)
    assert np.array_equal(mask_to_labels(mask * 255, 1, "m", kind="image"), mask)
    assert np.array_equal(mask_to_labels(np.stack([mask * 255] * 3, -1), 1, "m", kind="image"), mask)  # RGB JPEG mask
    assert np.array_equal(mask_to_labels(mask * 3, 4, "m", kind="image"), mask * 3)
    with pytest.raises(InputError, match="m: label values 0..3 are not class ids"):
        mask_to_labels(mask * 3, 3, "m", kind="image")
    with pytest.raises(ValueError, match="mask kind"):
        mask_to_labels(mask, 1, "m", kind="volume")  # type: ignore[arg-type]


@pytest.mark.parametrize("dataset", sorted(RAW_AND_BINARISED))
def test_image_rule_reproduces_the_old_image_and_sample_rules_on_real_masks(shared_data, dataset):
    """Every raw mask of the dataset: the ``"image"`` rule equals the old training rule (mean of RGB,
    ``> 127``), the old sample reader's rule (Pillow grey, ``> 127``; TIFF: tifffile) and the
    dataset's own binarised copy. On the clean {0, 255} copies it also equals the old label-volume
    and napari-layer rule (non-zero), which it must not use on raw masks (frame 1 above)."""
    raw_pattern, binarised = RAW_AND_BINARISED[dataset]
    folder = shared_data / dataset
    paths = sorted(folder.glob(raw_pattern))
    assert paths, f"no masks in {folder}"
    for path in paths:
        array = read_image(path).array
        decoded = mask_to_labels(array, 1, path.name, kind="image")
        assert decoded.dtype == np.int64 and set(np.unique(decoded)) <= {0, 1}
        grey = array[..., :3].mean(axis=-1) if array.ndim == 3 else array
        old_training = grey > (0 if grey.max() <= 1 else 127)
        if path.suffix == ".tif":  # reason: Pillow cannot open the CVC-ClinicDB TIFFs; the old reader used tifffile
            old_sample = tifffile.imread(path) > 127
        else:
            with Image.open(path) as image:
                old_sample = np.asarray(image.convert("L")) > 127
        clean = read_image(folder / binarised.format(stem=path.stem)).array
        for name, expected in (("training", old_training), ("sample", old_sample), ("binarised copy", clean > 0)):
            assert np.array_equal(decoded == 1, expected), f"{path.name}: differs from the old {name} rule"
        clean_decoded = mask_to_labels(clean, 1, path.name, kind="image")
        assert np.array_equal(clean_decoded, mask_to_labels(clean, 1, path.name, kind="label_map"))
        assert np.array_equal(clean_decoded == 1, clean != 0)


@pytest.mark.parametrize(
    ("relative", "num_classes"),
    [("totalseg_ct/case01sm_label_synapse8.nii.gz", 9), ("msd_spleen_ct/spleen_8_label_spleen1.nii.gz", 2)],
)
def test_label_map_rule_reproduces_the_old_volume_and_layer_rules_on_real_label_volumes(
    shared_data, relative, num_classes
):
    """Class ids pass unchanged; a binary model reads any organ as foreground, as the old label
    volume rule (``> 0``) and the fine-tuning rule for napari label layers (``!= 0``) did."""
    path = shared_data / relative
    array = read_image(path).array
    labels = mask_to_labels(array, num_classes, path.name, kind="label_map")
    assert labels.shape == array.shape and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, array)
    binary = mask_to_labels(array, 1, path.name, kind="label_map")
    np.testing.assert_array_equal(binary, (array > 0).astype(np.int64))
    np.testing.assert_array_equal(binary, (array != 0).astype(np.int64))
    assert binary.any()
    with pytest.raises(InputError, match="not class ids"):
        mask_to_labels(np.asarray(array, np.int64) + 1, num_classes, path.name, kind="label_map")
    with pytest.raises(InputError, match="must be integers"):
        mask_to_labels(array + 0.5, num_classes, path.name, kind="label_map")
