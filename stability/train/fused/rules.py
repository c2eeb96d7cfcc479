"""What may be fused, decided without torch: the sweep driver groups trials with these rules.

Trials can train together when they use a supported model (ViT_P, ViT_C, non-distilled DeiT) and
differ only in lr, weight decay, seed and extras, with no recipe feature the fused loop lacks.
"""

from __future__ import annotations

from typing import Any

from stability.models import list_models
from stability.spec.trial import Recipe, TrialConfig

SUPPORTED_PREFIXES = ("vit_p_", "vit_c_", "deit_")


def supported_models() -> list[str]:
    """Registered model names that can be fused: ViT_P, ViT_C and non-distilled DeiT."""
    return [n for n in list_models() if n.startswith(SUPPORTED_PREFIXES) and "distilled" not in n]


def check_model_name(name: str) -> None:
    """ValueError unless `name` is a model `FusedViT` supports."""
    if name not in supported_models():
        raise ValueError(f"model {name!r} cannot be fused; supported: {', '.join(supported_models())}")


PER_TRIAL_KEYS = ("lr", "weight_decay", "seed", "extras")
# Recipe keys the fused loop implements as run_trial does (marked FUSED in spec/trial.py); any other
# key must keep its default (mixup, cutmix, ema, drop_path, compile, distillation, patch_losses, ...).
FUSABLE_RECIPE_KEYS = Recipe.keys("fused")


def shared_settings(cfg: TrialConfig) -> dict[str, Any]:
    """What fused trials must have in common: the config without its per-trial keys."""
    return cfg.model_dump(mode="json", exclude=set(PER_TRIAL_KEYS))


def check_fusable_configs(cfgs: list[TrialConfig]) -> None:
    """ValueError unless the configs can train together (same everything but lr, weight decay, seed)."""
    if not cfgs:
        raise ValueError("run_fused_trials needs at least one trial config")
    check_model_name(cfgs[0].model)
    shared = [shared_settings(cfg) for cfg in cfgs]
    for k, dump in enumerate(shared[1:], start=1):
        differing = sorted(_differing_keys(shared[0], dump))
        if differing:
            raise ValueError(f"fused trials may differ only in lr, weight_decay and seed; "
                             f"trial {k} differs from trial 0 in {', '.join(differing)}")
    recipe = cfgs[0].train
    defaults = Recipe()
    unfusable = sorted(key for key in Recipe.model_fields
                       if key not in FUSABLE_RECIPE_KEYS and getattr(recipe, key) != getattr(defaults, key))
    if unfusable:
        them = "it" if len(unfusable) == 1 else "them"
        raise ValueError(f"fused trials do not support train.{', train.'.join(unfusable)}; "
                         f"leave {them} at the default or train the trials one by one")


def _differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _differing_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys
