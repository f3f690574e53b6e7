"""Pick the compute device and the mixed-precision type for inference.

``auto`` prefers CUDA, then Apple's MPS, then the CPU. Mixed precision (AMP) only pays off on GPUs:
on CPUs bfloat16 autocast is slower than float32 for this network and changes the answers, so
:func:`amp_dtype` returns ``None`` there and the engine runs in float32.
"""

from __future__ import annotations

import torch

from braunet.errors import InputError

__all__ = ["DEVICE_CHOICES", "amp_dtype", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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
