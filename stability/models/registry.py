"""Name -> constructor registry (timm style): `@register_model("name")` on a builder function.

The names themselves, and whether a model has patch tokens, are in the torch-free `catalog`;
every catalog name has a builder here (tests/test_models.py checks both ways)."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from stability.spec.errors import TrialSetupError

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register `builder(num_classes, img_size, **overrides) -> nn.Module` under `name`."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def registered_models() -> list[str]:
    """Names with a builder, sorted."""
    return sorted(_BUILDERS)


def build_model(name: str, num_classes: int, img_size: int, **overrides: Any) -> nn.Module:
    """Build a freshly initialised model (never pretrained); `overrides` go to the timm constructor."""
    if name not in _BUILDERS:
        raise TrialSetupError(f"unknown model {name!r}; choose from: {', '.join(registered_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TrialSetupError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise TrialSetupError(f"img_size must be a positive integer, got {img_size!r}")
    if overrides.pop("pretrained", False):
        raise TrialSetupError("pretrained weights are not supported: models are always built from scratch")
    return _BUILDERS[name](num_classes=num_classes, img_size=img_size, **overrides)
