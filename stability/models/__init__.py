"""Model registry: ViT_P/ViT_C (paper and small-image sizes), DeiT, CaiT and RegNetY, all built on timm."""

from . import timm_families, vit  # noqa: F401  (importing registers the models)
from .analysis import block_patch_tokens, model_info, patch_cosine_similarity
from .registry import build_model, has_patch_tokens, list_models, register_model

__all__ = [
    "block_patch_tokens",
    "build_model",
    "has_patch_tokens",
    "list_models",
    "model_info",
    "patch_cosine_similarity",
    "register_model",
]
