"""BRAU-Net++ in PyTorch: the network, its configs and presets, official checkpoints, routing capture.

Examples::

    from braunet.model import BRAUNet, get_preset, load_official, record_routing
    model = BRAUNet(get_preset("tiny")).eval()
    with record_routing(model) as routes:
        logits = model(images)            # (N, classes, 128, 128)
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
