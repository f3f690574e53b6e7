"""``braunet predict --cohort`` on crops of the shared CT: outputs once, resume, failures, torchrun."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braunet.cli import main
from braunet.cli.cohort import list_studies


@pytest.fixture(scope="module")
def studies(data_dir, tmp_path_factory) -> Path:
    """A folder of 4 studies: 3-slice axial crops of the real CT at different heights."""
    folder = tmp_path_factory.mktemp("studies")
    source = nib.load(data_dir / "totalseg_ct" / "case01sm_ct.nii.gz")
    array = np.asarray(source.dataobj)
    for n, first in enumerate((4, 10, 16, 22)):
        affine = source.affine.copy()
        affine[:3, 3] += affine[:3, 2] * first
        nib.save(nib.Nifti1Image(array[:, :, first : first + 3], affine, source.header), folder / f"s{n}.nii.gz")
    return folder


def summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*_labels.nii.gz"))


def test_a_cohort_writes_each_output_once_and_a_rerun_skips_them(studies, ct_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", "--cohort", str(studies), "-o", str(out), "--model", str(ct_model_dir), "--device", "cpu"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert outputs(out) == [f"s{n}_labels.nii.gz" for n in range(4)]
    assert sum(" -> " in line for line in stdout.splitlines()) == 4  # a plain line per study (stdout is no terminal)
    rows = summary(out)
    assert [row["study"] for row in rows] == [str(studies / f"s{n}.nii.gz") for n in range(4)]
    assert {row["status"] for row in rows} == {"done"} and {row["model"] for row in rows} == {"tiny-ct"}
    voxel_ml = float(np.prod(nib.load(studies / "s0.nii.gz").header.get_zooms())) / 1000
    for row in rows:
        labels = np.asarray(nib.load(out / f"{Path(row['study']).name[:-7]}_labels.nii.gz").dataobj)
        for index, name in enumerate(("aorta", "gallbladder"), start=1):
            assert float(row[f"{name}_ml"]) == pytest.approx(np.count_nonzero(labels == index) * voxel_ml, abs=1e-3)
        present = [name for name in row["organs"].split(";") if name]
        assert all(float(row[f"{name}_ml"]) > 0 for name in present)
    assert not list(out.glob("summary.rank*.csv"))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")}

    assert main(argv) == 0
    again = summary(out)
    assert {row["status"] for row in again} == {"skipped"}
    assert [row["aorta_ml"] for row in again] == [row["aorta_ml"] for row in rows]  # earlier numbers kept
    assert {p: p.stat().st_mtime_ns for p in out.glob("*_labels.nii.gz")} == stamps


def test_a_corrupt_study_is_one_line_and_the_others_finish(studies, ct_model_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n in range(3):
        (folder / f"s{n}.nii.gz").write_bytes((studies / f"s{n}.nii.gz").read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    out = tmp_path / "out"
    code = main(["predict", "--cohort", str(folder), "-o", str(out), "--model", str(ct_model_dir), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{folder / 'broken.nii.gz'}: ")
    assert outputs(out) == [f"s{n}_labels.nii.gz" for n in range(3)]
    status = {Path(row["study"]).name: row["status"] for row in summary(out)}
    assert status == {"broken.nii.gz": "failed", "s0.nii.gz": "done", "s1.nii.gz": "done", "s2.nii.gz": "done"}


def test_globs_and_csv_lists_name_the_studies(studies, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,note\ns1.nii.gz,x\n" + f"{studies / 's3.nii.gz'},y\n")
    (tmp_path / "s1.nii.gz").write_bytes(b"")
    assert list_studies([str(studies / "s[02].nii.gz")]) == [studies / "s0.nii.gz", studies / "s2.nii.gz"]
    assert list_studies([str(listing)]) == [tmp_path / "s1.nii.gz", studies / "s3.nii.gz"]


def test_bad_cohort_arguments_exit_2(studies, ct_model_dir, tmp_path, capsys):
    bad_csv = tmp_path / "list.csv"
    bad_csv.write_text("file\na.nii.gz\n")
    model = ["--model", str(ct_model_dir)]
    assert main(["predict", "--cohort", str(bad_csv), "-o", str(tmp_path / "o"), *model]) == 2
    assert main(["predict", "--cohort", str(tmp_path / "none*.nii.gz"), "-o", str(tmp_path / "o"), *model]) == 2
    assert main(["predict", "--cohort", str(studies), "-o", str(bad_csv), *model]) == 2
    assert "path" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_torchrun_with_two_processes_writes_each_output_once(studies, ct_model_dir, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "braunet", "predict", "--cohort", str(studies), "-o", str(out),
        "--model", str(ct_model_dir), "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert outputs(out) == [f"s{n}_labels.nii.gz" for n in range(4)]
    rows = summary(out)
    assert sorted(Path(row["study"]).name for row in rows) == [f"s{n}.nii.gz" for n in range(4)]
    assert {row["status"] for row in rows} == {"done"}
    assert not list(out.glob("summary.rank*.csv"))
    # each study was segmented by exactly one rank: one "->" line per study over both processes
    assert sorted(line.split(" -> ")[0].split()[-1] for line in result.stdout.splitlines() if " -> " in line) == [
        str(studies / f"s{n}.nii.gz") for n in range(4)
    ]


def test_a_run_stopped_midway_resumes_with_the_finished_rows(studies, ct_model_dir, tmp_path, monkeypatch, capsys):
    import braunet.cli.predict as predict_cli

    real, calls = predict_cli.predict_one, []

    def stop_at_the_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out"
    argv = ["predict", "--cohort", str(studies), "-o", str(out), "--model", str(ct_model_dir), "--device", "cpu"]
    monkeypatch.setattr(predict_cli, "predict_one", stop_at_the_third)
    assert main(argv) == 130
    assert outputs(out) == ["s0_labels.nii.gz", "s1_labels.nii.gz"] and not (out / "summary.csv").exists()
    monkeypatch.setattr(predict_cli, "predict_one", real)
    capsys.readouterr()
    assert main(argv) == 0
    rows = summary(out)
    assert [row["status"] for row in rows] == ["skipped", "skipped", "done", "done"]
    assert all(row["aorta_ml"] for row in rows)  # the finished studies keep their numbers from the stopped run
    assert not list(out.glob("summary.rank*.csv"))
