"""Pick the compute device and the precision for inference.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Two ways to choose the precision:

* :func:`amp_dtype` (the ``amp`` flag of internal callers): autocast on GPUs, never on CPUs;
* :func:`resolve_precision` (the user's ``--precision auto|fp32|bf16``): ``auto`` is bfloat16
  autocast only where the hardware runs it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with
  bf16) *and* the model's card records that bf16 was validated for it (:func:`bf16_validated`);
  float32 otherwise. An explicit ``bf16`` runs anywhere (emulated bf16 is slower) with one warning.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from braunet.errors import InputError

__all__ = [
    "BF16_MAX_DICE_CHANGE", "BF16_MIN_AGREEMENT", "DEVICE_CHOICES", "PRECISION_CHOICES", "amp_dtype",
    "bf16_native", "bf16_validated", "resolve_device", "resolve_precision",
]  # fmt: skip

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16")
BF16_MIN_AGREEMENT = 0.995  # share of voxels whose bf16 label equals the fp32 one
BF16_MAX_DICE_CHANGE = 0.005  # largest per-class |Dice(bf16) - Dice(fp32)| against the reference labels


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a device into a torch.device.

    Raises:
        InputError: the device is unknown or not available in this PyTorch build, naming what is.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device {device!r}: unknown device; choose one of {', '.join(DEVICE_CHOICES)}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r}: CUDA is not available (PyTorch {torch.__version__}); use --device cpu or auto"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif resolved.type == "mps" and not _mps_available():
        raise InputError(f"device {device!r}: Apple MPS is not available here; use --device cpu or auto")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r}: unsupported device type; choose one of {', '.join(DEVICE_CHOICES)}")
    return resolved


def amp_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for float32.

    ``amp=None`` means "on where it helps": bfloat16 on CUDA GPUs that support it (same exponent
    range as float32, so logits never overflow), float16 on older CUDA GPUs and on MPS. CPUs always
    get None, even with ``amp=True``.
    """
    if amp is False or device.type == "cpu":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


@functools.cache
def _cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX), from /proc/cpuinfo or PyTorch's ISA probe."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = cpuinfo.read().split()
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            return True
    except OSError:
        pass
    # reason: without cpuinfo (macOS, Windows) PyTorch's capability only says AVX512/AMX, not bf16 for sure
    return torch.backends.cpu.get_cpu_capability() == "AMX"


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: a CPU with AVX512-BF16/AMX, or a CUDA GPU with bf16."""
    if device.type == "cpu":
        return _cpu_bf16_native()
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def bf16_validated(extra: Mapping[str, Any]) -> bool:
    """Whether a card's ``extra["bf16_validated"]`` shows bf16 agreeing with fp32 within the bounds.

    The record is ``{"label_agreement": a, "max_dice_change": d, "split": ..., "date": ...}`` as
    written by ``scripts/validate_bf16.py --write``; it passes when ``a >= 0.995`` and ``d <= 0.005``.
    """
    record = extra.get("bf16_validated")
    if not isinstance(record, Mapping):
        return False
    try:
        agreement, change = float(record["label_agreement"]), float(record["max_dice_change"])
    except (KeyError, TypeError, ValueError):
        return False
    return agreement >= BF16_MIN_AGREEMENT and change <= BF16_MAX_DICE_CHANGE


_warned_emulated: set[str] = set()


def resolve_precision(precision: str, device: torch.device, validated: bool = False) -> str:
    """``"auto"``, ``"fp32"`` or ``"bf16"`` on ``device`` -> the precision that runs, ``"fp32"`` or ``"bf16"``.

    ``validated``: the model's card records a passing bf16 validation (:func:`bf16_validated`).
    An explicit ``bf16`` where the hardware has no native bf16 still runs, slower, warning once per device type.

    Raises:
        InputError: an unknown precision.
    """
    choice = precision.strip().lower()
    if choice not in PRECISION_CHOICES:
        raise InputError(f"precision {precision!r}: choose one of {', '.join(PRECISION_CHOICES)}")
    native = bf16_native(device)
    if choice == "auto":
        return "bf16" if native and validated else "fp32"
    if choice == "bf16" and not native and device.type not in _warned_emulated:
        _warned_emulated.add(device.type)
        warnings.warn(f"bf16 on {device.type}: this hardware has no native bfloat16, so it runs emulated and "
                      "slower than fp32", RuntimeWarning, stacklevel=2)  # fmt: skip
    return choice
