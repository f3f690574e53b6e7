"""A plain, obviously correct bi-level routing attention: the reference our fast BRA is tested against.

It is the speed baseline's :func:`bench.reference_braunet.gather_bra`, the official algorithm step by
step with explicit tensors: window means, routing logits, top-k, then an explicit gather of the routed
windows' keys and values for every query window (materialising the (N, p^2, topk, hw, C) copies our
implementation avoids), an explicit softmax attention matrix and the LePE conv on V. It shares only the
parameters with the module under test.
"""

from __future__ import annotations

from bench.reference_braunet import gather_bra
from torch import Tensor

from braunet.model.bra import BiLevelRoutingAttention


def oracle_bra(module: BiLevelRoutingAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """x: (N, H, W, C) -> (output (N, H, W, C), routing indices (N, p^2, topk))."""
    return gather_bra(
        x, module.qkv.weight, module.qkv.bias, module.lepe.weight, module.lepe.bias, module.wo.weight, module.wo.bias,
        n_win=module.n_win, topk=module.topk, num_heads=module.num_heads, qk_dim=module.qk_dim,
    )
