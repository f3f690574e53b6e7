"""Architecture configuration of BRAU-Net++ and the named presets.

The fields mirror the keyword arguments of the official ``BRAUnetSystem`` constructor (GitHub
Caipengzhou/BRAU-Netplusplus) so that an official build can be described exactly; everything the
official wrapper hard-codes (head_dim 32, widths 96..768, depths, top-k) is a default here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["BRAUNetConfig", "PRESETS", "get_preset", "list_presets"]


def _tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_field_type(name: str, value: Any, default: Any) -> None:
    """Raise ValueError unless ``value`` has the JSON type of the field's ``default``.

    reason: a card edited by hand (``"img_size": "224"``, ``224.0``) would otherwise fail deep
    inside torch with a message that names neither the card nor the field.
    """
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = _is_int(value), "an integer"
    elif isinstance(default, float):
        ok, expected = _is_number(value), "a number"
    else:  # the per-stage tuples; an MLP ratio may be fractional
        entry = _is_number if name == "mlp_ratios" else _is_int
        ok = isinstance(value, (list, tuple)) and all(entry(v) for v in value)
        expected = "a list of numbers" if name == "mlp_ratios" else "a list of integers"
    if not ok:
        raise ValueError(f"BRAUNetConfig.{name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class BRAUNetConfig:
    """Hyper-parameters of a BRAU-Net++ build.

    Four-entry tuples are per encoder stage (1/4, 1/8, 1/16, 1/32 resolution); the decoder reuses
    them in reverse order. The fourth stage (the bottleneck transformer blocks) is built so that
    official checkpoints load, but, as in the official code, it is only executed when
    ``bottleneck_blocks`` is true (the paper's description, not the released model).
    """

    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 9
    n_win: int = 7  # windows per side in every bi-level routing attention
    embed_dim: tuple[int, ...] = (96, 192, 384, 768)
    qk_dims: tuple[int, ...] = (96, 192, 384, 768)
    head_dim: int = 32  # heads per stage = qk_dims[i] // head_dim
    depth: tuple[int, ...] = (2, 2, 8, 2)
    depths_decoder: tuple[int, ...] = (2, 8, 2, 2)  # entry 0 is unused, as in the official code
    topks: tuple[int, ...] = (2, 4, 8, -2)  # regions routed per query region; -2 = global attention
    mlp_ratios: tuple[int, ...] = (3, 3, 3, 3)
    drop_path_rate: float = 0.2
    side_dwconv: int = 5  # kernel of the LePE depthwise conv inside BRA
    before_attn_dwconv: int = 3  # kernel of the block's positional depthwise conv
    use_sccsa: bool = True  # False = the paper's ablation: plain concat + Linear on the skips
    bottleneck_blocks: bool = False  # True = run stages[3] (paper), False = official forward

    def __post_init__(self) -> None:
        for name in ("embed_dim", "qk_dims", "depth", "depths_decoder", "topks", "mlp_ratios"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
            if len(getattr(self, name)) != 4:
                raise ValueError(f"BRAUNetConfig.{name} needs 4 entries, got {getattr(self, name)!r}")
        # reason: zero or negative sizes reach the modulo checks below or torch's layer constructors
        sizes = {name: getattr(self, name) for name in
                 ("img_size", "in_chans", "num_classes", "n_win", "head_dim", "side_dwconv", "before_attn_dwconv")}
        for name in ("embed_dim", "qk_dims", "mlp_ratios"):
            sizes.update({f"{name}[{i}]": v for i, v in enumerate(getattr(self, name))})
        bad = [name for name, value in sizes.items() if not value > 0]
        bad += [f"{name}[{i}]" for name in ("depth", "depths_decoder")
                for i, v in enumerate(getattr(self, name)) if v < 0]  # fmt: skip
        if bad:
            raise ValueError(f"BRAUNetConfig: {', '.join(bad)} must be positive (depths: zero or more)")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"BRAUNetConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.img_size % 32 or (self.img_size // 16) % self.n_win:
            raise ValueError(
                f"BRAUNetConfig: img_size {self.img_size} must be a multiple of 32 and img_size/16 a "
                f"multiple of n_win {self.n_win} (every attention map is split into n_win x n_win windows)"
            )
        for i, (qk, dim) in enumerate(zip(self.qk_dims, self.embed_dim, strict=False)):
            if qk % self.head_dim or dim % (qk // self.head_dim):
                raise ValueError(
                    f"BRAUNetConfig: stage {i} qk_dim {qk} and dim {dim} must split into heads of "
                    f"head_dim {self.head_dim}"
                )
        for i, k in enumerate(self.topks[:3]):
            if not 0 < k <= self.n_win**2:
                raise ValueError(f"BRAUNetConfig: topks[{i}] = {k} must be in 1..n_win^2 = {self.n_win**2}")

    @property
    def num_heads(self) -> tuple[int, ...]:
        return tuple(qk // self.head_dim for qk in self.qk_dims)

    def replace(self, **changes: Any) -> BRAUNetConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BRAUNetConfig:
        """Build from JSON data (a card's ``config``), checking every field's type.

        Raises:
            ValueError: not an object, unknown fields, a field of the wrong type or an invalid build.
        """
        if not isinstance(data, dict):
            raise ValueError(f"BRAUNetConfig: expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise ValueError(f"BRAUNetConfig: unknown fields {unknown}")
        for name, value in data.items():
            _check_field_type(name, value, fields[name].default)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> BRAUNetConfig:
        return cls.from_dict(json.loads(text))


# The official builds (the official wrapper fixes everything but img_size, num_classes and n_win).
_SYNAPSE = BRAUNetConfig(img_size=224, num_classes=9, n_win=7)
_ISIC = BRAUNetConfig(img_size=256, num_classes=1, n_win=8)

PRESETS: dict[str, BRAUNetConfig] = {
    "synapse": _SYNAPSE,
    "isic": _ISIC,
    # Same as the official builds without SCCSA on the skips (the paper's 31.40 M ablation).
    "synapse-nosccsa": _SYNAPSE.replace(use_sccsa=False),
    # CPU presets: same architecture, a third of the width and fewer blocks, and no never-run
    # bottleneck blocks (depth[3] = 0); chosen by measurement for 2 CPU cores (models/README.md).
    "cpu-ct": _SYNAPSE.replace(
        embed_dim=(32, 64, 128, 256), qk_dims=(32, 64, 128, 256), head_dim=16,
        depth=(1, 1, 2, 0), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.1,
    ),
    "cpu-rgb": _ISIC.replace(
        embed_dim=(32, 64, 128, 256), qk_dims=(32, 64, 128, 256), head_dim=16,
        depth=(1, 1, 2, 0), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.1, num_classes=1,
    ),
    # Test-sized build, as the official fixture's "small" model (128 px, 4 x 4 windows).
    "tiny": BRAUNetConfig(
        img_size=128, num_classes=4, n_win=4, embed_dim=(16, 32, 64, 128), qk_dims=(16, 32, 64, 128),
        head_dim=8, depth=(1, 1, 2, 1), depths_decoder=(1, 2, 1, 1), drop_path_rate=0.0,
    ),
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> BRAUNetConfig:
    """Return the preset ``name`` with ``overrides`` applied (e.g. ``num_classes=2``)."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return config.replace(**overrides) if overrides else config
