"""The built-in models by name, and the tables they are built from, without importing torch or timm.

The sweep driver validates a study with these names before any trial runs (`--dry-run` too), so
it never pays torch's import; `stability.models.registry` builds each name from the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StemSpec:
    """Layout of the 3x3 conv + BN + ReLU layers; a 1x1 conv to the embedding width follows."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    channels: tuple[int, ...]

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)


@dataclass(frozen=True)
class ViTSize:
    """Transformer shape of one ViT_P model; the matching ViT_C uses `depth - 1` blocks."""

    depth: int
    width: int
    heads: int
    mlp_ratio: float
    patch_size: int


PAPER_SIZES: dict[str, ViTSize] = {
    "1gf": ViTSize(depth=12, width=192, heads=3, mlp_ratio=3.0, patch_size=16),
    "4gf": ViTSize(depth=12, width=384, heads=6, mlp_ratio=3.0, patch_size=16),
    "18gf": ViTSize(depth=12, width=768, heads=12, mlp_ratio=4.0, patch_size=16),
    "36gf": ViTSize(depth=14, width=1024, heads=16, mlp_ratio=4.0, patch_size=16),
}

# tiny: sized for CPU studies on 16-px digits (16 tokens); small: between tiny and 1GF.
SMALL_IMAGE_SIZES: dict[str, ViTSize] = {
    "tiny": ViTSize(depth=4, width=64, heads=2, mlp_ratio=3.0, patch_size=4),
    "small": ViTSize(depth=8, width=128, heads=4, mlp_ratio=3.0, patch_size=4),
}

_DEEP_STEM = dict(kernels=(3, 3, 3, 3, 3, 3), strides=(2, 2, 1, 2, 1, 2), channels=(64, 128, 128, 256, 256, 512))

STEMS: dict[str, StemSpec] = {
    "1gf": StemSpec(kernels=(3, 3, 3, 3), strides=(2, 2, 2, 2), channels=(24, 48, 96, 192)),
    "4gf": StemSpec(kernels=(3, 3, 3, 3), strides=(2, 2, 2, 2), channels=(48, 96, 192, 384)),
    "18gf": StemSpec(**_DEEP_STEM),
    "36gf": StemSpec(**_DEEP_STEM),
    "tiny": StemSpec(kernels=(3, 3), strides=(2, 2), channels=(48, 96)),
    "small": StemSpec(kernels=(3, 3), strides=(2, 2), channels=(96, 192)),
}


DEIT_VARIANTS = {
    "deit_tiny": ("deit_tiny_patch16_224", 16),
    "deit_small": ("deit_small_patch16_224", 16),
    "deit_base": ("deit_base_patch16_224", 16),
    "deit_tiny_distilled": ("deit_tiny_distilled_patch16_224", 16),
    "deit_small_distilled": ("deit_small_distilled_patch16_224", 16),
    "deit_base_distilled": ("deit_base_distilled_patch16_224", 16),
    "deit_tiny_p4": ("deit_tiny_patch16_224", 4),
    "deit_small_p4": ("deit_small_patch16_224", 4),
    "deit_tiny_distilled_p4": ("deit_tiny_distilled_patch16_224", 4),
}

CAIT_VARIANTS = {
    "cait_xxs24": ("cait_xxs24_224", 16, 24),
    "cait_s24": ("cait_s24_224", 16, 24),
    "cait_xxs24_p4": ("cait_xxs24_224", 4, 24),
    "cait_xxs12_p4": ("cait_xxs24_224", 4, 12),
}

REGNETY_VARIANTS = {
    "regnety_1gf": "regnety_016",
    "regnety_4gf": "regnety_040",
    "regnety_16gf": "regnety_160",
}


def _names() -> dict[str, bool]:
    """Every built-in model name -> whether it has transformer patch tokens."""
    vits = {f"vit_{kind}_{label}": True for label in [*PAPER_SIZES, *SMALL_IMAGE_SIZES] for kind in ("p", "c")}
    return {**vits, **dict.fromkeys([*DEIT_VARIANTS, *CAIT_VARIANTS], True), **dict.fromkeys(REGNETY_VARIANTS, False)}


_MODELS = _names()


def list_models() -> list[str]:
    """Built-in model names, sorted."""
    return sorted(_MODELS)


def has_patch_tokens(name: str) -> bool:
    """Whether the model has transformer patch tokens (over-smoothing metric and losses)."""
    return _MODELS.get(name, False)
