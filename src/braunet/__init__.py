"""napari-braunet: BRAU-Net++ segmentation of CT volumes and endoscopy/dermoscopy images.

The package is headless at its core (``braunet.model``, ``braunet.io``, ``braunet.infer``,
``braunet.train``); only ``braunet.napari`` imports napari or Qt.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-braunet")
except PackageNotFoundError:  # reason: running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
