"""ViT_P (patchify stem) and ViT_C (convolutional stem) of "Early Convolutions Help Transformers See Better".

Paper sizes (224 px, patch 16) follow REFERENCE.md Table 1; the tiny/small variants are for 16-64 px
inputs with patch 4 and a 3-layer stem (3x3 s2, 3x3 s2, 1x1). In every pair ViT_C has one block
fewer than ViT_P, which the stem's cost roughly makes up for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn
from timm.models.vision_transformer import VisionTransformer

from .registry import register_model
from .stems import StemSpec, conv_stem_layer, init_pycls_vit


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


def build_vit(
    size: ViTSize,
    stem: StemSpec | None,
    *,
    num_classes: int,
    img_size: int,
    **overrides: Any,
) -> VisionTransformer:
    """timm VisionTransformer (class token, LayerNorm eps 1e-6) with pycls init; `stem` None = patchify."""
    patch_size = overrides.pop("patch_size", size.patch_size)
    if stem is not None and patch_size != stem.total_stride:
        raise ValueError(
            f"this ViT_C stem has total stride {stem.total_stride}; patch_size={patch_size} needs another model")
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not divisible by the patch size {patch_size}")
    kwargs: dict[str, Any] = dict(
        img_size=img_size,
        patch_size=patch_size,
        num_classes=num_classes,
        embed_dim=size.width,
        depth=size.depth if stem is None else size.depth - 1,
        num_heads=size.heads,
        mlp_ratio=size.mlp_ratio,
        class_token=True,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    if stem is not None:
        kwargs["embed_layer"] = conv_stem_layer(stem)
    kwargs.update(overrides)
    model = VisionTransformer(**kwargs)
    init_pycls_vit(model)
    return model


def _register_family() -> None:
    for label, size in {**PAPER_SIZES, **SMALL_IMAGE_SIZES}.items():
        register_model(f"vit_p_{label}")(partial(build_vit, size, None))
        register_model(f"vit_c_{label}")(partial(build_vit, size, STEMS[label]))


_register_family()
