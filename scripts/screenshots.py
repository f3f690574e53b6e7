#!/usr/bin/env python
"""Screenshots of the napari plugin for the docs: each widget run on the bundled samples.

    python scripts/screenshots.py [--out docs] [--data-dir ../shared/data]

Needs a display: without ``$DISPLAY`` it starts its own Xvfb (``apt install xvfb``) at 1600x1000x24,
so it runs on a headless machine as is (``xvfb-run -a -s "-screen 0 1600x1000x24" python ...`` works
too). Writes ``napari_segment_ct.png``, ``napari_routing_ct.png``, ``napari_finetune_ct.png``,
``napari_segment_polyp.png`` and ``napari_segment_skin.png``. Uses the bundled models
(``ct-abdomen-8``, ``polyp``, ``skin-lesion``); look at the images before committing them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1600, 1000)


def start_xvfb() -> subprocess.Popen | None:
    """Start Xvfb on a free display number unless a display is already there."""
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        sys.exit("no $DISPLAY and no Xvfb: install xvfb or run under xvfb-run")
    for number in range(90, 110):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    process = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", f"{SIZE[0]}x{SIZE[1]}x24", "-nolisten", "tcp"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{number}"
    os.environ.pop("QT_QPA_PLATFORM", None)  # xcb on Xvfb renders the GL canvas; offscreen does not
    return process


def wait(predicate, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > end:
            raise TimeoutError("gave up waiting")
        QApplication.processEvents()
        time.sleep(0.01)
    for _ in range(20):  # let the canvas redraw
        QApplication.processEvents()
        time.sleep(0.01)


def run_job(job) -> None:
    if job is None:
        raise RuntimeError("the widget did not start")
    wait(lambda: not job.running)


def new_viewer():
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    return viewer


def shoot(viewer, path: Path) -> None:
    from PIL import Image

    wait(lambda: True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    # 256 colours are plenty for a GUI screenshot and keep the repository small.
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path}")


def show_slice(viewer, layer, k: int) -> None:
    viewer.dims.set_point(0, layer.data_to_world((k, 0, 0))[0])


def ct_screens(out: Path) -> None:
    import numpy as np

    # Segment: the whole CT with the bundled model; the reference labels hidden.
    viewer = new_viewer()
    viewer.open_sample("napari-braunet", "ct_abdomen")
    image, reference = viewer.layers
    reference.visible = False
    segment_dock, segment = viewer.window.add_plugin_dock_widget("napari-braunet", "Segment")
    segment.model.value = "ct-abdomen-8"
    segment.slice_mode.value = "all slices"
    run_job(segment.run())
    show_slice(viewer, image, 95)
    viewer.reset_view()
    shoot(viewer, out / "napari_segment_ct.png")

    # Routing explorer: a click in the liver on the same slice, an encoder block.
    segment_dock.setVisible(False)
    _, routing = viewer.window.add_plugin_dock_widget("napari-braunet", "Routing explorer")
    viewer.layers["CT abdomen segmentation"].visible = False
    routing.block.value = list(routing.block.choices)[2]
    liver = np.argwhere(reference.data[95] == 5)
    point = liver[len(liver) // 2]
    routing.inspect_world(image.data_to_world((95, *point)))
    wait(lambda: "query" in routing.last)
    viewer.reset_view()
    shoot(viewer, out / "napari_routing_ct.png")
    viewer.close()

    # Fine-tune: correct slices of the upper abdomen with the reference labels, train, compare Dice.
    viewer = new_viewer()
    viewer.open_sample("napari-braunet", "ct_abdomen")
    image, reference = viewer.layers
    reference.visible = False
    segment_dock, segment = viewer.window.add_plugin_dock_widget("napari-braunet", "Segment")
    segment.model.value = "ct-abdomen-8"
    segment.slice_mode.value = "slice range"
    segment.first.value, segment.last.value = 84, 111
    run_job(segment.run())
    segment_dock.setVisible(False)
    _, finetune = viewer.window.add_plugin_dock_widget("napari-braunet", "Fine-tune")
    labels = viewer.layers["CT abdomen segmentation"]
    finetune.corrected.value = labels
    corrected = list(range(84, 109, 4))  # as an annotator would: fix every 4th slice
    for k in corrected:
        wrong = np.nonzero(labels.data[k] != reference.data[k])
        labels.data_setitem((np.full(wrong[0].size, k),) + wrong, reference.data[k][wrong])
    wait(lambda: len(finetune.slices.value) == len(corrected))
    finetune.time_budget.value = 600.0
    finetune.max_steps.value = 12
    run_job(finetune.train())
    show_slice(viewer, image, 104)
    viewer.reset_view()
    shoot(viewer, out / "napari_finetune_ct.png")
    viewer.close()


def image_screen(out: Path, sample: str, model: str, name: str) -> None:
    viewer = new_viewer()
    viewer.open_sample("napari-braunet", sample)
    viewer.layers[1].visible = False
    _, segment = viewer.window.add_plugin_dock_widget("napari-braunet", "Segment")
    segment.image.value = viewer.layers[0]
    segment.model.value = model
    segment.confidence.value = False
    run_job(segment.run())
    viewer.reset_view()
    shoot(viewer, out / name)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                        help="offline sample data (BRAUNET_DATA_DIR); '' downloads them")  # fmt: skip
    parser.add_argument("--only", nargs="*", choices=("ct", "polyp", "skin"), default=("ct", "polyp", "skin"),
                        help="which screenshots to make (default: all)")  # fmt: skip
    args = parser.parse_args()
    if str(args.data_dir) and args.data_dir.is_dir():
        os.environ["BRAUNET_DATA_DIR"] = str(args.data_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb()
    try:
        from qtpy.QtWidgets import QApplication  # noqa: F401  (Qt before napari's viewer)

        if "ct" in args.only:
            ct_screens(args.out)
        if "polyp" in args.only:
            image_screen(args.out, "colonoscopy", "polyp", "napari_segment_polyp.png")
        if "skin" in args.only:
            image_screen(args.out, "dermoscopy", "skin-lesion", "napari_segment_skin.png")
    finally:
        if xvfb is not None:
            xvfb.terminate()


if __name__ == "__main__":
    main()
