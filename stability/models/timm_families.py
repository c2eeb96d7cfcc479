"""DeiT, CaiT and RegNetY built from timm's own definitions (never pretrained)."""

from __future__ import annotations

from functools import partial
from typing import Any

import timm
from torch import nn

from stability.spec.errors import TrialSetupError

from .catalog import CAIT_VARIANTS, DEIT_VARIANTS, REGNETY_VARIANTS
from .registry import register_model


def _check_divisible(img_size: int, patch_size: int) -> None:
    if img_size % patch_size:
        raise TrialSetupError(f"img_size {img_size} is not divisible by the patch size {patch_size}")


def build_deit(variant: str, patch_size: int, *, num_classes: int, img_size: int, **overrides: Any) -> nn.Module:
    """timm DeiT (`VisionTransformer`, or `VisionTransformerDistilled` for the distilled variants)."""
    patch_size = overrides.pop("patch_size", patch_size)
    _check_divisible(img_size, patch_size)
    return timm.create_model(variant, pretrained=False, num_classes=num_classes, img_size=img_size,
                             patch_size=patch_size, **overrides)


def cait_layer_scale_init(depth: int) -> float:
    """CaiT's LayerScale initial value: 0.1 up to 18 blocks, 1e-5 up to 24, 1e-6 deeper."""
    if depth <= 18:
        return 0.1
    if depth <= 24:
        return 1e-5
    return 1e-6


def build_cait(
    variant: str, patch_size: int, depth: int, *, num_classes: int, img_size: int, **overrides: Any
) -> nn.Module:
    """timm CaiT (talking-heads self-attention blocks, then `depth_token_only` class-attention blocks)."""
    patch_size = overrides.pop("patch_size", patch_size)
    depth = overrides.pop("depth", depth)
    _check_divisible(img_size, patch_size)
    init_values = overrides.pop("init_values", cait_layer_scale_init(depth))
    return timm.create_model(variant, pretrained=False, num_classes=num_classes, img_size=img_size,
                             patch_size=patch_size, depth=depth, init_values=init_values, **overrides)


def build_regnety(variant: str, *, num_classes: int, img_size: int, **overrides: Any) -> nn.Module:
    """timm RegNetY; global average pooling makes it work at any input size (img_size is not needed)."""
    del img_size
    return timm.create_model(variant, pretrained=False, num_classes=num_classes, **overrides)


def _register_families() -> None:
    for name, (variant, patch) in DEIT_VARIANTS.items():
        register_model(name)(partial(build_deit, variant, patch))
    for name, (variant, patch, depth) in CAIT_VARIANTS.items():
        register_model(name)(partial(build_cait, variant, patch, depth))
    for name, variant in REGNETY_VARIANTS.items():
        register_model(name)(partial(build_regnety, variant))


_register_families()
