"""ViT_P (patchify stem) and ViT_C (convolutional stem) of "Early Convolutions Help Transformers See Better".

Paper sizes (224 px, patch 16) follow Xiao et al. 2021, Table 1; the tiny/small variants are for 16-64 px
inputs with patch 4 and a 3-layer stem (3x3 s2, 3x3 s2, 1x1). In every pair ViT_C has one block
fewer than ViT_P, which the stem's cost roughly makes up for.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from stability.spec.errors import TrialSetupError

from .catalog import PAPER_SIZES, SMALL_IMAGE_SIZES, STEMS, StemSpec, ViTSize
from .registry import register_model
from .stems import conv_stem_layer, init_pycls_vit


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
        raise TrialSetupError(
            f"this ViT_C stem has total stride {stem.total_stride}; patch_size={patch_size} needs another model")
    if img_size % patch_size:
        raise TrialSetupError(f"img_size {img_size} is not divisible by the patch size {patch_size}")
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
