"""The headless core loads neither napari nor Qt, so ``pip install napari-braunet`` on a server needs no display stack.

Each check runs in a fresh interpreter whose imports of the GUI stack are refused and recorded: a module that
imports napari or Qt, even inside ``try: ... except ImportError``, is named in the failure.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The napari extra and what it brings: none of these may load outside braunet.napari.
GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "npe2")

_PROBE = """
import importlib, importlib.abc, json, pkgutil, sys

GUI = set(sys.argv[1].split(","))
attempts = []


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in GUI:
            attempts.append(name)
            raise ImportError(f"{name}: refused, the headless core must not import the GUI stack")
        return None


sys.meta_path.insert(0, Refuse())


def walk(package):
    # pkgutil.walk_packages would import braunet.napari to look inside it; this skips it first.
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if info.name in ("braunet.napari", "braunet.__main__"):
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            walk(module)


for name in sys.argv[2:]:
    if name == "ALL":
        walk(importlib.import_module("braunet"))
    else:
        importlib.import_module(name)
print(json.dumps({"attempts": attempts, "loaded": sorted(m for m in sys.modules if m.partition(".")[0] in GUI)}))
"""


def _import_in_fresh_interpreter(*modules: str) -> dict[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, ",".join(GUI_PACKAGES), *modules],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("modules", [
    ("braunet.io", "braunet.model", "braunet.infer", "braunet.train"),
    ("ALL",),  # every module but braunet.napari: the command line, zoo, samples, reproduction kit
], ids=["core-packages", "every-headless-module"])  # fmt: skip
def test_headless_modules_load_no_gui_package(modules):
    report = _import_in_fresh_interpreter(*modules)
    assert report == {"attempts": [], "loaded": []}
