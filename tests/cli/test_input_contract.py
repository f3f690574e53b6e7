"""The input contract at the command line: a refused input is one error line and exit code 2; an
input read under an assumption is one warning line; no library's own log line reaches stderr."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom

from braunet.cli import main


def _predict(argv: list, capfd) -> tuple[int, list[str]]:
    code = main(["predict", *(str(a) for a in argv)])
    return code, capfd.readouterr().err.strip().splitlines()


def test_mr_series_with_a_ct_model_is_exit_2(data_dir, ct_model_dir, tmp_path, capfd):
    folder = tmp_path / "mr_series"
    folder.mkdir()
    for source in sorted((data_dir / "dcmqi_ct" / "ct_dicom").iterdir()):
        dataset = pydicom.dcmread(source)
        dataset.Modality = "MR"  # a CT series tagged MR is refused the same way
        dataset.save_as(folder / source.name)
    out = tmp_path / "labels.nii.gz"
    code, lines = _predict([folder, "-o", out, "--model", ct_model_dir], capfd)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"braunet predict: error: {folder}: modality MR, not CT"), lines[0]
    assert not out.exists()


def test_an_assumption_is_one_warning_line(data_dir, ct_model_dir, tmp_path, capfd):
    source = nib.load(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")
    header = source.header.copy()
    header.set_qform(None, code=0)
    header.set_sform(None, code=0)
    header["pixdim"][1:4] = 0.0  # nibabel logs "pixdim[1,2,3] should be non-zero" on its own handler
    path = tmp_path / "bare.nii"
    payload = np.asarray(source.dataobj)[:, :, :4]
    header.set_data_shape(payload.shape)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + bytes(4) + payload.tobytes(order="F"))
    code, lines = _predict([path, "-o", tmp_path / "labels.nii.gz", "--model", ct_model_dir], capfd)
    assert code == 0
    assert len(lines) == 2, lines  # the orientation guess and the voxel size, nothing from nibabel
    for line, what in zip(lines, ("no qform or sform", "assumed 1 mm"), strict=True):
        assert line.startswith(f"braunet predict: warning: {path}: ") and what in line, line
