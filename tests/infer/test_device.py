"""Device choice and mixed precision."""

from __future__ import annotations

import pytest
import torch

from braunet.errors import InputError
from braunet.infer import amp_dtype, resolve_device


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("braunet.infer.device._mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr("braunet.infer.device._mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_unavailable_or_unknown_devices_give_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("braunet.infer.device._mps_available", lambda: False)
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu9")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_amp_only_on_gpus(monkeypatch):
    assert amp_dtype(torch.device("cpu"), True) is None
    assert amp_dtype(torch.device("cpu"), None) is None
    assert amp_dtype(torch.device("mps"), None) is torch.float16
    assert amp_dtype(torch.device("cuda"), False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(torch.device("cuda"), None) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda"), True) is torch.float16
