"""``braunet evaluate`` on the shared real data: labels on the image's grid or refused, honest means, units."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from braunet.cli import main
from braunet.cli.evaluate import format_table
from braunet.errors import InputError
from braunet.train.evaluate import evaluate_files


@pytest.fixture(scope="module")
def dcmqi(shared_data):
    """The dcmqi 3-slice CT as a DICOM series and as NIfTI, with its liver-only synapse8 labels (LPS)."""
    folder = shared_data / "dcmqi_ct"
    if not (folder / "ct_dicom").is_dir():
        pytest.skip("dcmqi_ct not in the shared data")
    return folder


@pytest.fixture(scope="module")
def ct_model():
    from braunet.zoo import load_model

    return load_model("ct-abdomen-8")


@pytest.fixture(scope="module")
def nifti_result(dcmqi, ct_model):
    """The NIfTI image scored with its own labels: the reference every other layout must match."""
    return evaluate_files(*ct_model, [(dcmqi / "case03_ct.nii.gz", dcmqi / "case03_label_synapse8.nii.gz")])


def _evaluate(capsys, image, label, model="ct-abdomen-8") -> tuple[int, dict | None, str]:
    code = main(["evaluate", "--model", model, "--images", str(image), "--labels", str(label), "--json",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err.strip()


def _relabel(source, target, ornt=None, shift_mm=None) -> None:
    """Save the label file again, the same voxels stored in another axis order/direction or moved."""
    image = nib.load(source)
    if ornt is not None:
        image = image.as_reoriented(ornt)
    if shift_mm is not None:
        affine = image.affine.copy()
        affine[:3, 3] += shift_mm
        image = nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header)
    nib.save(image, target)


def test_dicom_series_against_its_nifti_labels_scores_as_the_nifti_image(dcmqi, ct_model, nifti_result, tmp_path):
    """Issue 12, item 1: only shapes were compared, so labels stored in another voxel order were
    scored against the wrong voxels (liver 0.19 for an RAS copy). Every layout of the same labels
    must give the liver Dice of the NIfTI image with its own labels."""
    labels = dcmqi / "case03_label_synapse8.nii.gz"
    liver = nifti_result.per_class["liver"]["dice"]
    assert liver > 0.8  # the bundled model was trained on these slices
    swapped = tmp_path / "labels_swapped.nii.gz"
    _relabel(labels, swapped, ornt=[[1, 1], [0, -1], [2, -1]])  # rows and columns swapped, two axes flipped
    result = evaluate_files(*ct_model, [(dcmqi / "ct_dicom", label) for label in (labels, swapped)])
    for record, label in zip(result.cases, (labels, swapped), strict=True):
        assert record["metrics"][5]["dice"] == pytest.approx(liver, abs=1e-6), label.name
    assert result.mean_over == ["liver"]


@pytest.mark.parametrize(("shift", "mm"), [((30.0, 0.0, 0.0), "30.0"), ((0.0, 0.4, 0.0), "0.4")])
def test_labels_off_the_image_grid_are_refused_naming_both_files(dcmqi, tmp_path, capsys, shift, mm):
    """A label shifted by 30 mm scored exactly like the registered one; now it is refused in one line."""
    moved = tmp_path / "labels_moved.nii.gz"
    _relabel(dcmqi / "case03_label_synapse8.nii.gz", moved, shift_mm=np.array(shift))
    code, _, err = _evaluate(capsys, dcmqi / "ct_dicom", moved)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(moved) in err and str(dcmqi / "ct_dicom") in err and f"up to {mm} mm apart" in err


def test_resampled_labels_are_refused(dcmqi, ct_model, tmp_path):
    source = nib.load(dcmqi / "case03_label_synapse8.nii.gz")
    data = np.asarray(source.dataobj)[::2, ::2]  # half the in-plane resolution
    affine = source.affine.copy()
    affine[:3, :2] *= 2
    half = tmp_path / "labels_half.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), half)
    with pytest.raises(InputError, match=r"label volume shape \(256, 256, 3\) \(256 x 256 x 3 voxels.*512 x 512 x 3 voxels"):
        evaluate_files(*ct_model, [(dcmqi / "case03_ct.nii.gz", half)])


def test_classes_absent_from_both_are_not_scored_and_the_mean_says_what_it_is_over(nifti_result):
    """Issue 12, item 3: an organ absent from prediction and reference counted as Dice 1.0 in the mean.
    The dcmqi labels hold only the liver; the mean is the liver's Dice."""
    report = nifti_result.to_json_dict()
    per_class = report["per_class"]
    assert report["mean_over"] == ["liver"] and report["mean_dice"] == per_class["liver"]["dice"]
    absent = [name for name, values in per_class.items() if values["n_scored"] == 0]
    assert absent and all(per_class[name]["dice"] is None for name in absent)
    for name, values in per_class.items():
        if values["n_scored"] and not values["n_in_reference"]:  # predicted only: a false positive, Dice 0
            assert values["dice"] == 0.0 and name not in report["mean_over"]
    table = format_table(nifti_result, "ct-abdomen-8 v1")
    assert "HD95 mm" in table and "absent from prediction and reference" in table
    assert "over the 1 class(es) present in the reference" in table and "1.0000" not in table


def test_2d_images_report_hd95_in_pixels(shared_data, capsys):
    cvc = shared_data / "cvc_clinicdb"
    images = [str(cvc / "images" / f"{n}.tif") for n in (1, 13)]
    masks = [str(cvc / "masks" / f"{n}.tif") for n in (1, 13)]
    assert main(["evaluate", "--model", "polyp", "--images", *images, "--labels", *masks, "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "HD95 px" in table and "HD95 mm" not in table
    assert main(["evaluate", "--model", "polyp", "--images", *images, "--labels", *masks, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "mean_hd95_px" in report and "mean_hd95_mm" not in report
    assert set(report["per_class"]["polyp"]) == {"dice", "hd95_px", "n_scored", "n_in_reference"}


def test_a_2d_mask_for_a_volume_is_refused(dcmqi, ct_model, shared_data):
    with pytest.raises(InputError, match="a 2-D mask cannot label a volume"):
        evaluate_files(*ct_model, [(dcmqi / "ct_dicom", shared_data / "cvc_clinicdb" / "masks" / "1.tif")])
