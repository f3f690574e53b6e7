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

from collections.abc import Sequence

from braunet.errors import InputError

__all__ = [
    "class_names_for",
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


def class_names_for(
    num_classes: int,
    given: Sequence[str] | None = None,
    *,
    kind: str | None = None,
    binary: Sequence[str] = ("background", "foreground"),
    generic: bool = True,
    source: str = "class names",
) -> list[str]:
    """Class names, background first, for a network with ``num_classes`` outputs (1 = binary).

    ``given`` names are checked against the count; otherwise the defaults are Synapse's 8 organs
    for 9 classes (unless ``kind`` says the model is not CT), ``binary`` for a one-logit model, and
    ``class_1 ...`` when ``generic`` (else the caller must name them).

    Raises:
        InputError: ``given`` of the wrong length, or no default and ``generic`` False; the
            message starts with ``source``.
    """
    count = max(num_classes, 2)
    if given:
        if len(given) != count:
            raise InputError(f"{source}: --class-names has {len(given)} names, the model has {count} classes")
        return list(given)
    if num_classes == 1:
        return list(binary)
    if num_classes == 9 and kind in (None, "ct"):
        return list(SYNAPSE8_CLASSES)
    if generic:
        return ["background"] + [f"class_{i}" for i in range(1, count)]
    raise InputError(f"{source}: {num_classes} output classes; name them with --class-names (background first)")
