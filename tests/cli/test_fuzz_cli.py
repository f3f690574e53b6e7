"""Property-based fuzzing of ``braunet predict/evaluate/finetune`` (hypothesis), in-process through ``braunet.cli.main``.

Random argument combinations over tiny generated inputs (NIfTI and PNG/JPEG/TIFF/BMP files of
random shapes, dtypes and affines, some truncated or with flipped bytes) and odd output targets
(existing files, folders, the input itself, missing folders), checked against the input contract:

- exit 0 with valid outputs on the input grid (same spatial shape; volumes: the same affine), or
  exit 2 with exactly one stderr line ``braunet COMMAND: error: ...`` naming the file concerned;
- input files unchanged, files that were in the output folder unchanged on a refusal;
- no temporary or partial file (hidden name) left in any folder involved.

A few examples per command run by default (seconds); set ``BRAUNET_FUZZ_EXAMPLES=N`` to run N per
command (e.g. 500 overnight). Fine-tuning is capped at two steps per round.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from braunet.cli import main

EXAMPLES = int(os.environ.get("BRAUNET_FUZZ_EXAMPLES", "0"))


def _settings(default: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default, deadline=None, database=None, derandomize=not EXAMPLES,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip


# --- generated inputs -------------------------------------------------------------------------


@dataclass
class Spec:
    """One input file to generate: its kind, pixels and what is done to its bytes afterwards."""

    kind: str  # "image" or "volume"
    suffix: str
    shape: tuple[int, ...]
    dtype: str
    seed: int
    affine_axes: tuple[int, int, int] = (0, 1, 2)
    affine_signs: tuple[int, int, int] = (1, 1, 1)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    nan: bool = False
    damage: tuple[str, float, int] = ("none", 0.0, 0)  # (how, where as a fraction, seed)
    extras: dict = field(default_factory=dict)


_INTACT = ("none", 0.0, 0)
# Most inputs are valid, so that the success side of the contract is exercised as often as refusals.
_damage = st.one_of(
    st.just(_INTACT), st.just(_INTACT), st.just(_INTACT),
    st.tuples(st.sampled_from(["truncate", "flip"]), st.floats(0.0, 0.98), st.integers(0, 2**16)),
)
_side = st.one_of(st.integers(16, 72), st.integers(16, 72), st.integers(16, 72), st.integers(1, 15))


@st.composite
def images(draw, *, labels: bool = False) -> Spec:
    suffix = draw(st.sampled_from([".png", ".png", ".jpg", ".tif", ".bmp"]))
    h, w = draw(_side), draw(_side)
    channels = draw(st.sampled_from([None, 3, 3, 4] if not labels else [None]))
    dtypes = {".png": ["uint8"] * 3 + ["uint16"], ".jpg": ["uint8"], ".bmp": ["uint8"],
              ".tif": ["uint8"] * 3 + ["uint16", "float32"]}
    if channels == 4 and suffix in (".jpg", ".bmp"):
        channels = 3
    if channels and suffix == ".png":
        dtypes[".png"] = ["uint8"]
    shape = (h, w) if channels is None else (h, w, channels)
    return Spec("image", suffix, shape, draw(st.sampled_from(dtypes[suffix])), draw(st.integers(0, 2**16)),
                damage=draw(_damage) if not labels else _INTACT)  # fmt: skip


@st.composite
def volumes(draw, *, labels: bool = False) -> Spec:
    ndim = draw(st.sampled_from([3] * 8 + [2, 4]))
    axes = tuple(draw(st.permutations([0, 1, 2])))  # voxel axis -> world axis
    axial = axes.index(2)
    # reason: few axial slices keep an example fast; in-plane sides as for images
    shape = tuple(draw(st.integers(1, 4) if axis == axial else _side if axis < 3 else st.integers(1, 3))
                  for axis in range(ndim))  # fmt: skip
    return Spec(
        "volume", draw(st.sampled_from([".nii.gz", ".nii"])), shape,
        draw(st.sampled_from(["uint8"] if labels else ["int16", "int16", "uint8", "float32", "float64"])),
        draw(st.integers(0, 2**16)),
        affine_axes=axes,
        affine_signs=tuple(draw(st.sampled_from([1, -1])) for _ in range(3)),
        spacing=tuple(draw(st.sampled_from([0.5, 1.0, 2.5])) for _ in range(3)),
        nan=not labels and draw(st.integers(0, 5)) == 0,
        damage=draw(_damage) if not labels else _INTACT,
    )  # fmt: skip


def _affine(spec: Spec) -> np.ndarray:
    affine = np.zeros((4, 4))
    for axis, (world, sign, size) in enumerate(zip(spec.affine_axes, spec.affine_signs, spec.spacing, strict=True)):
        affine[world, axis] = sign * size
    affine[:3, 3] = (-10.0, 20.0, -30.0)
    affine[3, 3] = 1
    return affine


def _pixels(spec: Spec, *, label_classes: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(spec.seed)
    if label_classes is not None:
        return rng.integers(0, label_classes, spec.shape).astype(spec.dtype)
    if spec.kind == "volume" and spec.dtype.startswith("int"):
        return rng.integers(-1024, 1500, spec.shape).astype(spec.dtype)
    if spec.dtype.startswith("float"):
        array = rng.uniform(-1000, 1000 if spec.kind == "volume" else 1, spec.shape).astype(spec.dtype)
        if spec.nan and array.size:
            array.flat[rng.integers(0, array.size)] = np.nan
        return array
    return rng.integers(0, np.iinfo(spec.dtype).max, spec.shape, endpoint=True).astype(spec.dtype)


def build(spec: Spec, path: Path, *, label_classes: int | None = None, like: Spec | None = None) -> Path:
    """Write ``spec`` to ``path`` (its suffix is added), then damage its bytes as the spec says."""
    path = path.with_name(path.name + spec.suffix)
    array = _pixels(spec, label_classes=label_classes)
    if spec.kind == "volume":
        nib.save(nib.Nifti1Image(array, _affine(like or spec)), path)
    elif spec.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    how, where, seed = spec.damage
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: int(len(data) * where)])
    elif how == "flip" and data:
        rng = np.random.default_rng(seed)
        raw = bytearray(data)
        for position in rng.integers(int(len(raw) * where), len(raw), 4):
            raw[position] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(raw))
    return path


# --- the contract -------------------------------------------------------------------------------


def _digest(paths: list[Path]) -> dict[Path, str]:
    found = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
        for file in files:
            found[file] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def _hidden(folders: list[Path]) -> list[Path]:
    return [p for folder in folders if folder.is_dir() for p in folder.rglob(".*")]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)``; warnings count as stderr lines, as the command line prints them."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse: a usage error is exit 2 with its own (multi-line) usage text
            code = int(exit_.code or 0)
            assert code == 2, argv
            event("usage error")
            return code, "", "usage"
    captured = capsys.readouterr()
    err = captured.err + "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)
    event(f"exit {code}")
    return code, captured.out, err


def check_refusal(command: str, err: str, names: list[Path]) -> None:
    if err == "usage":  # reason: argparse's refusal of an option value names the option
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"braunet {command}: error: "), lines[0]
    assert any(str(p) in lines[0] or p.name in lines[0] for p in names), (lines[0], names)


def _model_kind(choice: str, first: Spec) -> str:
    """"ct", "rgb" or "default"; "match" picks the model for the first input's kind."""
    if choice == "match":
        return "ct" if first.kind == "volume" else "rgb"
    return choice


@pytest.fixture()
def workdir(tmp_path_factory):
    """A fresh folder per example (pytest's tmp_path is shared by all of a test's examples)."""
    return lambda: tmp_path_factory.mktemp("fuzz")


# --- predict ------------------------------------------------------------------------------------


_TARGETS = ["new", "new", "new", "new", "new folder/", "new folder/", "existing file", "existing folder", "the input",
            "missing folder", "wrong suffix"]  # fmt: skip


@given(
    inputs=st.lists(st.one_of(images(), volumes()), min_size=1, max_size=2),
    target=st.sampled_from(_TARGETS),
    confidence=st.sampled_from([None, None, "new", "new", "same as -o", "existing file"]),
    model=st.sampled_from(["match", "match", "ct", "rgb", "default"]),
    batch=st.sampled_from([None, "1", "3"]),
)
@_settings(10)
def test_fuzz_predict(inputs, target, confidence, model, batch, ct_model_dir, rgb_model_dir, workdir, capsys):
    from braunet.io import read_image

    root = workdir()
    model = _model_kind(model, inputs[0])
    (root / "in").mkdir()
    out = root / "out"
    out.mkdir()
    paths = [build(spec, root / "in" / f"case{k}") for k, spec in enumerate(inputs)]
    several = len(paths) > 1
    suffix = ".png" if inputs[0].kind == "image" else ".nii.gz"
    o = {
        "new": out / f"labels{suffix}", "new folder/": f"{out / 'fresh'}/", "existing file": out / f"old{suffix}",
        "existing folder": out, "the input": paths[0], "missing folder": root / "nope" / f"labels{suffix}",
        "wrong suffix": out / ("labels.nii.gz" if suffix == ".png" else "labels.png"),
    }[target]  # fmt: skip
    (out / f"old{suffix}").write_bytes(b"old output")
    argv = ["predict", *paths, "-o", o]
    if confidence is not None:
        c = {"new": out / f"conf{suffix}", "same as -o": o, "existing file": out / f"old{suffix}"}[confidence]
        argv += ["--confidence", f"{out / 'conf'}/" if several else c]
    if model != "default":
        argv += ["--model", ct_model_dir if model == "ct" else rgb_model_dir]
    if batch:
        argv += ["--batch-size", batch]
    before_in, before_out = _digest(paths), _digest([out])

    code, stdout, err = run_cli(argv, capsys)

    assert code in (0, 2), (code, err)
    if code == 0:
        assert err == "", err
    assert _digest(paths) == before_in  # inputs never change
    assert _hidden([root]) == []  # no temporary or staging files anywhere
    if code == 2:
        check_refusal("predict", err, [*paths, Path(str(o)), out, root / "nope", out / "conf",
                                       Path(ct_model_dir), Path(rgb_model_dir)])  # fmt: skip
        assert {p: d for p, d in _digest([out]).items() if p in before_out} == before_out
        return
    assert stdout.count(" -> ") == len(paths)
    for line, path in zip(stdout.strip().splitlines(), paths, strict=True):
        written = [Path(t) for t in line.split(" -> ", 1)[1].rsplit(" (", 1)[0].split(", ")]
        source = read_image(path)
        images = [f for f in written if not f.name.endswith((".ctbl", "_itksnap.txt"))]  # colour tables beside labels
        assert len(written) - len(images) == (0 if source.is_2d else 2)
        for file in images:
            result = read_image(file)
            assert result.spatial_shape == source.spatial_shape, (file, path)
            if not source.is_2d:
                np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)


# --- evaluate -----------------------------------------------------------------------------------


@given(
    image=st.one_of(images(), volumes()),
    label=st.sampled_from(["matching", "matching", "other shape", "other affine", "corrupt", "the image"]),
    model=st.sampled_from(["match", "match", "match", "ct", "rgb"]),
    as_json=st.booleans(),
)
@_settings(4)
def test_fuzz_evaluate(image, label, model, as_json, ct_model_dir, rgb_model_dir, workdir, capsys):
    root = workdir()
    model = _model_kind(model, image)
    image_path = build(image, root / "image")
    classes = 9 if model == "ct" else 2
    label_spec = Spec(image.kind, ".png" if image.kind == "image" else ".nii.gz", image.shape[:2] if image.kind ==
                      "image" else image.shape[:3], "uint8", image.seed + 1)  # fmt: skip
    if label == "other shape":
        label_spec.shape = tuple(s + 3 for s in label_spec.shape)
    if label == "corrupt":
        label_spec.damage = ("truncate", 0.5, 0)
    other = Spec(**{**image.__dict__, "affine_signs": tuple(-s for s in image.affine_signs)})
    label_path = image_path if label == "the image" else build(
        label_spec, root / "label", label_classes=classes, like=other if label == "other affine" else image)
    argv = ["evaluate", "--model", ct_model_dir if model == "ct" else rgb_model_dir, "--images", image_path,
            "--labels", label_path, "--device", "cpu", *(["--json"] if as_json else [])]  # fmt: skip
    before = _digest([root])

    code, stdout, err = run_cli(argv, capsys)

    assert code in (0, 2), (code, err)
    assert _digest([root]) == before and _hidden([root]) == []
    if code == 2:
        check_refusal("evaluate", err, [image_path, label_path, Path(ct_model_dir), Path(rgb_model_dir)])
    elif as_json:
        report = json.loads(stdout)
        assert report["n"] == 1


# --- finetune -----------------------------------------------------------------------------------


@pytest.fixture()
def two_steps(monkeypatch):
    """Each fine-tuning round stops after two steps (the contract is about inputs and outputs)."""
    from braunet.train import finetune as finetune_module

    real = finetune_module.finetune
    monkeypatch.setattr(finetune_module, "finetune", lambda *a, **k: real(*a, **{**k, "max_steps": 2}))


@given(
    pairs=st.lists(st.one_of(images(), volumes()), min_size=1, max_size=2),
    mask=st.sampled_from(["matching", "matching", "other shape", "missing"]),
    out=st.sampled_from(["library", "new", "existing file", "existing folder", "empty folder", "missing parent"]),
    model=st.sampled_from(["match", "match", "match", "ct", "rgb"]),
    holdback=st.sampled_from([None, None, None, "0.5", "0.0", "1.5"]),
)
@_settings(2)
def test_fuzz_finetune(pairs, mask, out, model, holdback, ct_model_dir, rgb_model_dir, model_library, two_steps,
                       workdir, capsys):  # fmt: skip
    from braunet.model import load_checkpoint

    root = workdir()
    model = _model_kind(model, pairs[0])
    classes = 9 if model == "ct" else 2
    images_, labels_ = [], []
    for k, spec in enumerate(pairs):
        images_.append(build(spec, root / f"image{k}"))
        label_spec = Spec(spec.kind, ".png" if spec.kind == "image" else ".nii.gz",
                          spec.shape[:2] if spec.kind == "image" else spec.shape[:3], "uint8", spec.seed + 1)  # fmt: skip
        if mask == "other shape":
            label_spec.shape = tuple(s + 2 for s in label_spec.shape)
        label = build(label_spec, root / f"mask{k}", label_classes=classes, like=spec)
        if mask == "missing":
            label.unlink()
        labels_.append(label)
    target = {"library": None, "new": root / "tuned", "existing file": root / "tuned.txt",
              "existing folder": root / "full", "empty folder": root / "empty", "missing parent": root / "no" / "x"}[out]
    (root / "tuned.txt").write_text("notes")
    (root / "full").mkdir()
    (root / "full" / "card.json").write_text("{}")
    (root / "empty").mkdir()
    argv = ["finetune", "--model", ct_model_dir if model == "ct" else rgb_model_dir, "--images", *images_,
            "--labels", *labels_, "--time-budget", "1", "--device", "cpu", "--json"]  # fmt: skip
    if target is not None:
        argv += ["--out", target]
    if holdback:
        argv += ["--holdback", holdback]
    before = _digest([root])

    code, stdout, err = run_cli(argv, capsys)

    assert code in (0, 2), (code, err)
    assert _hidden([root, model_library]) == []
    after = _digest([root])
    assert {p: d for p, d in after.items() if p in before} == before  # inputs and other files unchanged
    if code == 2:
        check_refusal("finetune", err, [*images_, *labels_, root / "tuned.txt", root / "full", root / "no" / "x",
                                        root / "tuned", root / "empty", Path(ct_model_dir), Path(rgb_model_dir)])  # fmt: skip
        return
    outcome = json.loads(stdout)
    if outcome["accepted"]:
        assert load_checkpoint(outcome["out"])[1].version == 2
    else:
        assert outcome["out"] is None and (target is None or not target.exists() or target == root / "empty")
