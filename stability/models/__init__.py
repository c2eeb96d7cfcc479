"""Model registry: ViT_P/ViT_C (paper and small-image sizes), DeiT, CaiT and RegNetY, all built on timm.

Importing the package is cheap: the names (`list_models`, `has_patch_tokens`) come from the
torch-free `catalog`; the builders and analysis helpers load torch and timm on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .catalog import has_patch_tokens, list_models

_NEEDS_TORCH = {"block_patch_tokens": "analysis", "model_info": "analysis", "patch_cosine_similarity": "analysis",
                "build_model": "registry", "register_model": "registry", "registered_models": "registry"}

__all__ = ["has_patch_tokens", "list_models", *_NEEDS_TORCH]


def __getattr__(name: str) -> Any:
    module = _NEEDS_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import timm_families, vit  # noqa: F401  (importing registers the builders)

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
