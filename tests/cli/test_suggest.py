"""``braunet suggest`` on the shared real data: the ranking as a table and as JSON, 2-D frames, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from braunet.cli import main
from braunet.infer.uncertainty import suggest_volume
from braunet.io import read_image
from braunet.zoo import load_model


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main(["suggest", *(str(a) for a in argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ct_path(data_dir):
    return data_dir / "totalseg_ct" / "case01sm_ct.nii.gz"


def test_json_gives_the_library_ranking(ct_path, ct_model_dir, capsys):
    code, out, err = run([ct_path, "--model", ct_model_dir, "-n", "3", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input"] == str(ct_path) and report["model"] == str(ct_model_dir)
    assert report["measure"] == "entropy" and report["spacing"] == 5 and report["slices"] == 30
    model, card = load_model(ct_model_dir)
    expected = suggest_volume(model, card, read_image(ct_path), n=3, spacing=5)
    assert [row["slice"] for row in report["suggestions"]] == expected.indices
    np.testing.assert_allclose([row["score"] for row in report["suggestions"]], expected.scores[expected.indices],
                               atol=1e-6)  # fmt: skip
    assert [row["classes"] for row in report["suggestions"]] == [r["classes"] for r in expected.rows()]


def test_table_lists_slice_score_and_classes(ct_path, ct_model_dir, capsys):
    code, out, err = run([ct_path, "--model", ct_model_dir, "-n", "2", "--spacing", "10", "--measure", "margin"],
                         capsys)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert "of 30 axial slices to correct next" in lines[0] and "margin, spacing 10" in lines[0]
    assert lines[1].split() == ["slice", "score", "classes"]
    rows = [line.split(maxsplit=2) for line in lines[2:]]
    assert 1 <= len(rows) <= 2
    slices, scores = [int(r[0]) for r in rows], [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert len(slices) < 2 or abs(slices[0] - slices[1]) >= 10


def test_frames_are_ranked_by_position_with_their_paths(data_dir, rgb_model_dir, capsys):
    frames = [data_dir / "cvc_clinicdb" / "images" / f"{n}.tif" for n in (26, 38, 50)]
    code, out, err = run([*frames, "--model", rgb_model_dir, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input"] == [str(f) for f in frames] and report["spacing"] == 1 and report["slices"] == 3
    for row in report["suggestions"]:
        assert row["image"] == str(frames[row["slice"]]) and set(row["classes"]) <= {"lesion"}


def test_bad_inputs_are_one_line_errors(ct_path, ct_model_dir, data_dir, tmp_path, capsys):
    frame = data_dir / "cvc_clinicdb" / "images" / "1.tif"
    code, _, err = run([tmp_path / "missing.nii.gz", "--model", ct_model_dir], capsys)
    assert code == 2 and err.strip() == f"braunet suggest: error: {tmp_path / 'missing.nii.gz'}: no such file or folder"
    code, _, err = run([ct_path, frame, "--model", ct_model_dir], capsys)
    assert code == 2 and "a 3-D volume is ranked on its own" in err and len(err.strip().splitlines()) == 1
    code, _, err = run([frame, "--model", ct_model_dir], capsys)
    assert code == 2 and "segments 3-D CT volumes, but this is a 2-D image" in err
    with pytest.raises(SystemExit) as exit_:
        run([ct_path, "-n", "0"], capsys)
    assert exit_.value.code == 2


def test_registered_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "suggest" in capsys.readouterr().out
    from braunet.cli.suggest import MEASURES
    from braunet.infer.uncertainty import MEASURES as LIBRARY_MEASURES

    assert MEASURES == LIBRARY_MEASURES
