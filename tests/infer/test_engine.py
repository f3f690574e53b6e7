"""The slice-wise engine on real data: geometry round trips, batching, confidence, cancel, errors."""

from __future__ import annotations

import dataclasses
import threading
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from braunet.errors import Cancelled, InputError
from braunet.infer import predict, predict_image, predict_volume
from braunet.io import Volume, read_image


@pytest.fixture(scope="module")
def ct_volume(data_dir) -> Volume:
    return read_image(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")  # (122, 101, 30), RAS, 3 mm


@pytest.fixture(scope="module")
def ct_crop(ct_volume) -> Volume:
    """Axial slices 10..19 of the real CT (its affine moved along), to keep the variant runs short."""
    affine = ct_volume.affine.copy()
    affine[:3, 3] += affine[:3, 2] * 10
    return Volume(np.ascontiguousarray(ct_volume.array[:, :, 10:20]), affine, ct_volume.source, "CT", False)


@pytest.fixture(scope="module")
def crop_prediction(ct_model, ct_crop):
    model, card = ct_model
    return predict_volume(model, card, ct_crop, confidence=True)


def flipped(volume: Volume, axes: tuple[int, ...]) -> Volume:
    """The same physical image stored with ``axes`` reversed (e.g. (0, 1): RAS -> LPS)."""
    affine = volume.affine.copy()
    for axis in axes:
        step = np.eye(4)
        step[axis, axis], step[axis, 3] = -1, volume.array.shape[axis] - 1
        affine = affine @ step
    return dataclasses.replace(volume, array=np.flip(volume.array, axes).copy(), affine=affine, header=None)


def permuted(volume: Volume, order: tuple[int, int, int]) -> Volume:
    """The same physical image with its voxel axes stored in ``order``."""
    index_map = np.zeros((4, 4))
    index_map[3, 3] = 1
    for new_axis, old_axis in enumerate(order):
        index_map[old_axis, new_axis] = 1
    return dataclasses.replace(
        volume, array=volume.array.transpose(order).copy(), affine=volume.affine @ index_map, header=None
    )


def rotated(volume: Volume, degrees_z: float, degrees_x: float) -> Volume:
    """An oblique version: the world frame rotated by less than 45 degrees (same closest axes)."""
    a, b = np.radians(degrees_z), np.radians(degrees_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, np.cos(b), -np.sin(b), 0], [0, np.sin(b), np.cos(b), 0], [0, 0, 0, 1]])
    return dataclasses.replace(volume, affine=rz @ rx @ volume.affine, header=None)


def test_labels_lie_on_the_input_grid(crop_prediction, ct_crop):
    labels = crop_prediction.labels
    assert labels.shape == ct_crop.array.shape == (122, 101, 10) and labels.dtype == np.uint8
    assert len(np.unique(labels)) >= 3  # the geometry checks below need varied labels to mean anything
    assert crop_prediction.slices == list(range(10))
    assert crop_prediction.class_names[5] == "liver"
    conf = crop_prediction.confidence
    assert conf.shape == labels.shape and conf.dtype == np.float32
    assert float(conf.min()) >= 1 / 9 - 1e-6 and float(conf.max()) <= 1.0


@pytest.mark.parametrize(
    "make, undo",
    [
        (lambda v: flipped(v, (0, 1)), lambda a: np.flip(a, (0, 1))),  # LPS storage
        (lambda v: flipped(v, (2,)), lambda a: np.flip(a, 2)),  # head-first slice order
        (lambda v: permuted(v, (2, 0, 1)), lambda a: a.transpose(2, 0, 1)),  # slices on axis 0
        (lambda v: rotated(flipped(v, (0,)), 25, -15), lambda a: np.flip(a, 0)),  # oblique and flipped
    ],
    ids=["lps", "flip-k", "permuted", "oblique"],
)
def test_reoriented_inputs_give_the_reoriented_labels_exactly(ct_model, ct_crop, crop_prediction, make, undo):
    model, card = ct_model
    variant = make(ct_crop)
    assert np.array_equal(variant.array, undo(ct_crop.array))
    result = predict_volume(model, card, variant, confidence=True)
    assert len(np.unique(crop_prediction.labels)) >= 3
    assert np.array_equal(result.labels, undo(crop_prediction.labels))
    assert np.array_equal(result.confidence, undo(crop_prediction.confidence))


def test_chosen_slices_only_and_batch_size_does_not_change_labels(ct_model, ct_crop, crop_prediction):
    model, card = ct_model
    part = predict_volume(model, card, ct_crop, slices=[3, 7, 4, 7], batch_size=2)
    assert part.slices == [3, 4, 7]
    untouched = np.ones(10, bool)
    untouched[[3, 4, 7]] = False
    assert not part.labels[:, :, untouched].any()
    agreement = np.mean(part.labels[:, :, [3, 4, 7]] == crop_prediction.labels[:, :, [3, 4, 7]])
    assert agreement > 0.999  # batch 2 vs 8: identical up to float rounding in near-tie pixels
    with pytest.raises(InputError, match="0..9"):
        predict_volume(model, card, ct_crop, slices=[10])


@pytest.mark.parametrize("stored", ["LPS", "SRA", "strided"])
def test_some_slices_read_from_any_voxel_order_as_from_the_canonical_copy(ct_model, ct_crop, stored):
    """A run of some slices reads them from a view of the input (no whole-volume copy): the labels
    are exactly those of the same slices read from the RAS volume, however the input is stored."""
    from nibabel.orientations import apply_orientation, io_orientation

    model, card = ct_model
    if stored == "LPS":
        volume = flipped(ct_crop, (0, 1))
    elif stored == "SRA":
        volume = permuted(flipped(ct_crop, (1,)), (2, 0, 1))
    else:  # what the Segment widget hands over: a strided view of a layer, not a contiguous array
        volume = dataclasses.replace(ct_crop, array=np.repeat(ct_crop.array, 2, axis=0)[::2])
        assert not volume.array.flags.c_contiguous
    reference = predict_volume(model, card, ct_crop, slices=[6, 2], batch_size=2)
    part = predict_volume(model, card, volume, slices=[6, 2], batch_size=2)
    assert part.slices == [2, 6]
    to_ras = apply_orientation(part.labels, io_orientation(volume.affine))
    np.testing.assert_array_equal(to_ras, reference.labels)


def test_progress_counts_slices_and_cancel_stops_between_batches(ct_model, ct_crop):
    model, card = ct_model
    calls = []
    predict_volume(model, card, ct_crop, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]

    event = threading.Event()

    def progress(done, total):
        if done >= 4:
            event.set()

    with pytest.raises(Cancelled, match="after 4 of 10 slices"):
        predict_volume(model, card, ct_crop, batch_size=4, progress=progress, should_stop=event)
    assert event.is_set()
    with pytest.raises(Cancelled):
        predict_volume(model, card, ct_crop, should_stop=lambda: True)


def test_dicom_series_in_lps(ct_model, data_dir):
    model, card = ct_model
    volume = read_image(data_dir / "dcmqi_ct" / "ct_dicom")
    result = predict_volume(model, card, volume, confidence="uint8")
    assert result.labels.shape == volume.array.shape == (512, 512, 3)
    assert result.confidence.dtype == np.uint8


def test_binary_rgb_model_on_a_real_frame(rgb_model, data_dir):
    model, card = rgb_model
    frame = read_image(data_dir / "cvc_clinicdb" / "images" / "1.tif")  # (288, 384, 3), not square
    result = predict(model, card, frame, confidence=True)
    assert result.labels.shape == (288, 384) and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1}
    assert np.array_equal(result.labels, (result.confidence >= 0.5).astype(np.uint8))  # sigmoid >= 0.5
    tiny = dataclasses.replace(frame, array=np.ascontiguousarray(frame.array[:20, :31]))
    assert predict_image(model, card, tiny).labels.shape == (20, 31)  # smaller than the 128 px input
    grey = dataclasses.replace(frame, array=np.ascontiguousarray(frame.array[..., 0]), modality="grey")
    assert predict_image(model, card, grey).labels.shape == (288, 384)


def test_wrong_inputs_are_refused_with_the_file_name(ct_model, rgb_model, ct_volume, data_dir):
    ct_net, ct_card = ct_model
    rgb_net, rgb_card = rgb_model
    frame = read_image(data_dir / "cvc_clinicdb" / "images" / "1.tif")
    name = "case01sm_ct.nii.gz"
    with pytest.raises(InputError, match=f"{name}.*2-D RGB images"):
        predict(rgb_net, rgb_card, ct_volume)
    with pytest.raises(InputError, match="1.tif.*3-D CT volumes"):
        predict(ct_net, ct_card, frame)
    nan_array = ct_volume.array.astype(np.float32)
    nan_array[5, 5, 5] = np.nan
    with pytest.raises(InputError, match=f"{name}.*NaN"):
        predict(ct_net, ct_card, dataclasses.replace(ct_volume, array=nan_array))
    with pytest.raises(InputError, match="16-bit"):
        predict(rgb_net, rgb_card, dataclasses.replace(frame, array=frame.array[..., 0].astype(np.uint16) * 257))
    with pytest.raises(InputError, match="too small"):
        predict(rgb_net, rgb_card, dataclasses.replace(frame, array=np.ascontiguousarray(frame.array[:8, :40])))
    with pytest.raises(InputError, match="too small"):
        predict(ct_net, ct_card, dataclasses.replace(ct_volume, array=ct_volume.array[:10, :, :].copy()))


def test_amp_request_is_ignored_on_cpu(ct_model, ct_crop, crop_prediction):
    model, card = ct_model
    result = predict_volume(model, card, ct_crop, amp=True, device="cpu")
    assert np.array_equal(result.labels, crop_prediction.labels)


class _PixelClassifier(nn.Module):
    """A per-pixel linear classifier with the BRAUNet call signature: fast, for the memory test."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(1, config.num_classes, 1)

    def forward(self, x):
        return self.head(x)


class _SmallGpu(_PixelClassifier):
    """Raises CUDA's out-of-memory error above ``limit`` slices per call, like a full GPU."""

    limit = 3

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_labels(ct_model, ct_crop):
    from braunet.errors import BraunetError

    _, card = ct_model
    torch.manual_seed(0)
    model = _SmallGpu(card.config).eval()
    _SmallGpu.limit = 100
    expected = predict_volume(model, card, ct_crop, batch_size=8).labels
    _SmallGpu.limit = 3
    assert np.array_equal(predict_volume(model, card, ct_crop, batch_size=8).labels, expected)
    _SmallGpu.limit = 0
    with pytest.raises(BraunetError, match="out of GPU memory"):
        predict_volume(model, card, ct_crop, batch_size=8)


def test_memory_stays_bounded_by_the_label_map(ct_model):
    """No volume-sized float array is ever held: logits (9 x float32 = 36 bytes/voxel) stay per batch."""
    _, card = ct_model
    model = _PixelClassifier(card.config).eval()
    array = np.random.default_rng(0).integers(-1000, 1000, size=(256, 256, 160), dtype=np.int16)  # 21 MB
    volume = Volume(array, np.diag([0.8, 0.8, 2.0, 1.0]), None, "CT", False)
    tracemalloc.start()
    try:
        result = predict_volume(model, card, volume, batch_size=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.labels.shape == array.shape
    voxels = array.size
    assert peak < 3.5 * voxels, f"peak numpy memory {peak / 2**20:.0f} MiB for {voxels / 2**20:.1f} M voxels"
    assert torch.is_inference_mode_enabled() is False


@pytest.mark.parametrize("modality", ["MR", "PT", "OT"])
def test_a_ct_model_refuses_volumes_of_another_modality(ct_model, ct_volume, modality):
    model, card = ct_model
    with pytest.raises(InputError, match=rf"case01sm_ct.nii.gz: modality {modality}, not CT; model .* Hounsfield"):
        predict(model, card, dataclasses.replace(ct_volume, modality=modality))
    for accepted in ("CT", "unknown"):  # unknown: NIfTI, or DICOM without a Modality tag
        volume = dataclasses.replace(ct_volume, modality=accepted)
        assert predict(model, card, volume, slices=[0]).labels.shape == ct_volume.shape
