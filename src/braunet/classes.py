"""Class lists (label value = list index) and their display colours, defined once for the package.

* ``SYNAPSE8_CLASSES`` - the Synapse / TransUNet / BRAU-Net++ order of the 8 abdominal organs, used
  by the official Synapse checkpoints, the ``ct-abdomen-8`` model and the CT sample.
* ``LESION_CLASSES`` - the official ISIC and CVC-ClinicDB binary models (and ``skin-lesion``).
* ``POLYP_CLASSES`` - the ``polyp`` model and the colonoscopy sample.

The colours are one distinct, colour-blind-friendlier colour per class (Okabe-Ito based); napari
draws background transparent whatever its colour. Lists, not tuples, because cards and layers
compare and store class names as lists.
"""

from __future__ import annotations

__all__ = [
    "LESION_CLASSES",
    "LESION_COLORS",
    "POLYP_CLASSES",
    "POLYP_COLORS",
    "SYNAPSE8_CLASSES",
    "SYNAPSE8_COLORS",
]

SYNAPSE8_CLASSES = [
    "background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach",
]
SYNAPSE8_COLORS = [
    "#000000", "#d55e00", "#009e73", "#56b4e9", "#0072b2", "#e69f00", "#f0e442", "#cc79a7", "#8f63c8",
]
LESION_CLASSES = ["background", "lesion"]
LESION_COLORS = ["#000000", "#e69f00"]
POLYP_CLASSES = ["background", "polyp"]
POLYP_COLORS = ["#000000", "#56b4e9"]
