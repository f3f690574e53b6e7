"""Inference engine benchmark: end-to-end overhead, peak memory on a large CT, slices/s per preset.

Prints JSON lines (one per measurement) on stdout:

* ``e2e_vs_model``: read -> preprocess -> infer -> restore geometry -> write for the shared CT
  (case01, 122x101x112) against the network alone on the same preprocessed slices and batch size,
  in the same process. Target: ratio <= 1.1.
* ``large_volume``: the same CT resampled to 512x512xDEPTH (default 300) and written as NIfTI in a
  temporary folder, segmented end to end in a fresh subprocess; peak resident memory (ru_maxrss)
  and its growth over the resident size after start-up, plus the end-to-end time (read, predict,
  write) against the network alone for the same slices, measured after it in the same process.
* ``preset_speed``: network slices/s for the cpu-ct, synapse and tiny presets at batch 8.

Times are the best of ``--repeats`` runs after a warm-up, end-to-end and network runs alternating.
Wall-clock ratios are only meaningful on an idle machine; on a shared one the CPU-time ratio
(``time.process_time``, all threads of this process) is steadier. The load average is printed with
every line so that noisy figures can be recognised.

Usage: ``python bench/bench_infer.py [--device auto] [--depth 300] [--repeats 3] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BRAUNET_DATA_DIR") or REPO.parent / "shared" / "data")
CT = DATA / "totalseg_ct" / "case01_ct.nii.gz"


def emit(record: dict) -> None:
    record.update(load_avg=round(os.getloadavg()[0], 2), torch_threads=torch.get_num_threads())
    print(json.dumps(record), flush=True)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: kernel selection, caches, lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def get_model(device: torch.device):
    """The bundled CT model if installed, else a random cpu-ct network (same cost)."""
    from braunet.classes import SYNAPSE8_CLASSES
    from braunet.infer import official_preprocessing
    from braunet.model import BRAUNet, ModelCard, get_preset
    from braunet.zoo import list_models, load_model

    if "ct-abdomen-8" in list_models():
        return load_model("ct-abdomen-8", device)
    config = get_preset("cpu-ct")
    card = ModelCard("cpu-ct-random", config, list(SYNAPSE8_CLASSES), official_preprocessing("ct"))
    return BRAUNet(config).to(device).eval(), card


def model_only_runner(model, card, volume, batch_size: int):
    """A callable running the network alone on every axial slice, preprocessed beforehand; and the count."""
    from braunet.infer import preprocess_slices, to_view
    from braunet.io import to_canonical

    canonical, _ = to_canonical(volume)
    device = next(model.parameters()).device
    view = card.recipe.view
    depth = canonical.shape[2]
    batches = [
        preprocess_slices(to_view(canonical, range(k, min(k + batch_size, depth)), view), card.recipe,
                          model.config.img_size, device=device)
        for k in range(0, depth, batch_size)
    ]  # fmt: skip

    def run() -> None:
        with torch.inference_mode():
            for x in batches:
                model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run, depth


def model_only_time(model, card, volume, batch_size: int, repeats: int) -> tuple[float, int]:
    """Seconds for the network alone on every axial slice (best of ``repeats``), and the count."""
    run, depth = model_only_runner(model, card, volume, batch_size)
    return best_of(run, repeats), depth


def end_to_end(model, card, path: Path, out: Path, batch_size: int) -> dict[str, float]:
    """Read, predict (preprocess, network, geometry), write; returns the seconds of each part."""
    from braunet.infer import predict
    from braunet.io import read_image, write_labels

    start = time.perf_counter()
    volume = read_image(path)
    read = time.perf_counter()
    prediction = predict(model, card, volume, batch_size=batch_size)
    predicted = time.perf_counter()
    write_labels(prediction.labels, volume, out)
    written = time.perf_counter()
    return {"read_s": read - start, "predict_s": predicted - read, "write_s": written - predicted}


def bench_e2e(device: torch.device, batch_size: int, repeats: int) -> None:
    from braunet.io import read_image

    model, card = get_model(device)
    network, slices = model_only_runner(model, card, read_image(CT), batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.nii.gz"
        pipeline = lambda: end_to_end(model, card, CT, out, batch_size)  # noqa: E731
        pipeline(), network()  # warm-up
        e2e = model_s = e2e_cpu = model_cpu = float("inf")
        for _ in range(repeats):  # reason: alternate, so both see the same load on a shared machine
            wall, cpu = _timed(pipeline)
            e2e, e2e_cpu = min(e2e, wall), min(e2e_cpu, cpu)
            wall, cpu = _timed(network)
            model_s, model_cpu = min(model_s, wall), min(model_cpu, cpu)
    emit({
        "bench": "e2e_vs_model", "volume": f"{CT.name} {read_image(CT).shape}", "model": card.name,
        "device": str(device), "batch_size": batch_size, "slices": slices, "e2e_s": round(e2e, 3),
        "model_only_s": round(model_s, 3), "ratio": round(e2e / model_s, 3),
        "e2e_cpu_s": round(e2e_cpu, 3), "model_only_cpu_s": round(model_cpu, 3),
        "cpu_ratio": round(e2e_cpu / model_cpu, 3),
        "e2e_slices_per_s": round(slices / e2e, 2), "target_ratio": 1.1,
    })  # fmt: skip


def make_large_volume(folder: Path, depth: int) -> Path:
    """The shared CT resampled (linear) to 512 x 512 x depth, HU int16, same field of view."""
    import nibabel as nib
    from scipy import ndimage

    source = nib.load(CT)
    data = np.asarray(source.dataobj).astype(np.float32)
    shape = (512, 512, depth)
    factors = [n / s for n, s in zip(shape, data.shape, strict=True)]
    large = ndimage.zoom(data, factors, order=1, output=np.float32)
    large = np.round(large).astype(np.int16)
    affine = source.affine @ np.diag([1 / factors[0], 1 / factors[1], 1 / factors[2], 1])
    path = folder / f"case01_{shape[0]}x{shape[1]}x{shape[2]}.nii.gz"
    nib.save(nib.Nifti1Image(large, affine), path)
    return path


def child_large(path: str, device: str, batch_size: int) -> None:
    """Subprocess body: RSS after start-up, one end-to-end run, its peak RSS, then the network alone
    on the same slices in the same process (so both times see the same machine); one JSON object."""
    import braunet.infer  # noqa: F401  (imports before the baseline, as a real run has them)
    from braunet.io import read_image

    model, card = get_model(torch.device(device))
    baseline = _rss_now()
    with tempfile.TemporaryDirectory() as tmp:
        parts: dict[str, float] = {}
        seconds, cpu = _timed(lambda: parts.update(end_to_end(model, card, Path(path), Path(tmp) / "l.nii.gz", batch_size)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # reason: Linux reports KiB
    network, _ = model_only_runner(model, card, read_image(path), batch_size)
    model_s, model_cpu = _timed(network)
    print(json.dumps({"e2e_s": seconds, "e2e_cpu_s": cpu, **parts, "model_only_s": model_s, "model_only_cpu_s": model_cpu,
                      "baseline_rss": baseline, "peak_rss": peak}))  # fmt: skip


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_large(device: torch.device, batch_size: int, depth: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = make_large_volume(Path(tmp), depth)
        result = subprocess.run(
            [sys.executable, __file__, "--child-large", str(path), "--device", str(device), "--batch-size", str(batch_size)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        child = json.loads(result.stdout.strip().splitlines()[-1])
        size_mb = path.stat().st_size / 2**20
    gib = 2**30
    emit({
        "bench": "large_volume", "shape": [512, 512, depth], "file_mib": round(size_mb, 1),
        "model": get_model(device)[1].name, "device": str(device), "batch_size": batch_size,
        "e2e_s": round(child["e2e_s"], 2), "read_s": round(child["read_s"], 2),
        "predict_s": round(child["predict_s"], 2), "write_s": round(child["write_s"], 2),
        "model_only_s": round(child["model_only_s"], 2), "ratio": round(child["e2e_s"] / child["model_only_s"], 3),
        "e2e_cpu_s": round(child["e2e_cpu_s"], 2), "model_only_cpu_s": round(child["model_only_cpu_s"], 2),
        "cpu_ratio": round(child["e2e_cpu_s"] / child["model_only_cpu_s"], 3),
        "peak_rss_gib": round(child["peak_rss"] / gib, 3),
        "rss_growth_gib": round((child["peak_rss"] - child["baseline_rss"]) / gib, 3),
        "int16_volume_gib": round(512 * 512 * depth * 2 / gib, 3), "limit_gib": 4.0,
    })  # fmt: skip


def bench_presets(device: torch.device, batch_size: int, repeats: int) -> None:
    from braunet.model import BRAUNet, get_preset

    for name in ("tiny", "cpu-ct", "synapse"):
        config = get_preset(name)
        model = BRAUNet(config).to(device).eval()
        x = torch.randn(batch_size, 1, config.img_size, config.img_size, device=device)

        def run() -> None:
            with torch.inference_mode():
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()

        seconds = best_of(run, repeats if name != "synapse" else 1)
        emit({
            "bench": "preset_speed", "preset": name, "img_size": config.img_size, "device": str(device),
            "batch_size": batch_size, "slices_per_s": round(batch_size / seconds, 2),
            "ms_per_slice": round(1000 * seconds / batch_size, 1),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--depth", type=int, default=300, help="slices of the large 512x512 volume")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the large-volume run")
    parser.add_argument("--child-large", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_large:
        child_large(args.child_large, args.device, args.batch_size)
        return
    from braunet.infer import resolve_device

    device = resolve_device(args.device)
    bench_e2e(device, args.batch_size, args.repeats)
    if not args.quick:
        bench_large(device, args.batch_size, args.depth)
    bench_presets(device, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
