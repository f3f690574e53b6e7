"""BRAU-Net++ in PyTorch: the network, its configs and presets, official checkpoints, routing capture.

Examples (run by .ci/run as a doctest):

    >>> import torch
    >>> from braunet.model import BRAUNet, get_preset, record_routing
    >>> model = BRAUNet(get_preset("tiny", num_classes=9)).eval()  # random weights; load_checkpoint for trained ones
    >>> images = torch.rand(2, 3, 128, 128)  # (N, in_chans or 1, img_size, img_size)
    >>> with torch.inference_mode(), record_routing(model) as routes:
    ...     logits = model(images)
    >>> tuple(logits.shape)  # (N, num_classes, img_size, img_size)
    (2, 9, 128, 128)
    >>> len(routes), routes[0].name, tuple(routes[0].indices.shape)  # one record per BRA; (N, n_win**2, topk)
    (8, 'stages.0.0.attn', (2, 16, 2))
"""

from braunet.model.bra import BiLevelRoutingAttention, RouteRecord
from braunet.model.braunet import BRAUNet
from braunet.model.checkpoint import ModelCard, load_checkpoint, read_card, save_checkpoint
from braunet.model.config import PRESETS, BRAUNetConfig, get_preset, list_presets
from braunet.model.official import convert_official_state_dict, load_official
from braunet.model.routing import record_routing

__all__ = [
    "PRESETS",
    "BRAUNet",
    "BRAUNetConfig",
    "BiLevelRoutingAttention",
    "ModelCard",
    "RouteRecord",
    "convert_official_state_dict",
    "get_preset",
    "list_presets",
    "load_checkpoint",
    "load_official",
    "read_card",
    "record_routing",
    "save_checkpoint",
]
