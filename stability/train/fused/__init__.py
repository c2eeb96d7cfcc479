"""Fused trials: K sampled configurations of one model trained in one forward/backward.

`rules` (which trials may be fused) needs no torch; the model and the engine load it on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .rules import check_fusable_configs, shared_settings, supported_models

_NEEDS_TORCH = {"FusedViT": "model", "check_fusable": "model", "run_fused_trials": "engine"}

__all__ = ["check_fusable_configs", "shared_settings", "supported_models", *_NEEDS_TORCH]


def __getattr__(name: str) -> Any:
    module = _NEEDS_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
