"""Name -> constructor registry (timm style): `@register_model("name")` on a builder function."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}
_WITHOUT_PATCH_TOKENS: set[str] = set()


def register_model(name: str, patch_tokens: bool = True) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(num_classes, img_size, **overrides) -> nn.Module` under `name`;
    `patch_tokens=False` for models without transformer patch tokens (convnets)."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        if not patch_tokens:
            _WITHOUT_PATCH_TOKENS.add(name)
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def has_patch_tokens(name: str) -> bool:
    """Whether the model has transformer patch tokens (over-smoothing metric and losses)."""
    return name in _BUILDERS and name not in _WITHOUT_PATCH_TOKENS


def build_model(name: str, num_classes: int, img_size: int, **overrides: Any) -> nn.Module:
    """Build a freshly initialised model (never pretrained); `overrides` go to the timm constructor."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive integer, got {img_size!r}")
    if overrides.pop("pretrained", False):
        raise ValueError("pretrained weights are not supported: models are always built from scratch")
    return _BUILDERS[name](num_classes=num_classes, img_size=img_size, **overrides)
