"""The built-in models by name, and the tables they are built from, without importing torch or timm.

The sweep driver validates a study with these names before any trial runs (`--dry-run` too), so
it never pays torch's import; `stability.models.registry` builds each name from the same tables.
The same tables say which `model_args` each model accepts and which image sizes its patches and
stem take (`check_model_args`, `check_model_input`), so a trial that could never be built is
refused before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stability.spec.errors import TrialSetupError, did_you_mean


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


# Keyword arguments a study may give a model through `model_args`, per family: those of the timm
# constructor the family's builder passes them to (timm 1.0; tests/test_validation.py compares them
# with the installed timm's signatures). Left out: what the engine sets from the data (ENGINE_ARGS)
# and the constructors' device/dtype placement (the engine places the model).
_VIT_ARGS = (
    "patch_size", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "qk_norm",
    "scale_attn_norm", "scale_mlp_norm", "proj_bias", "init_values", "class_token", "pos_embed", "no_embed_class",
    "reg_tokens", "pre_norm", "final_norm", "fc_norm", "pool_include_prefix", "dynamic_img_size", "dynamic_img_pad",
    "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
    "weight_init", "fix_init", "embed_layer", "embed_norm_layer", "norm_layer", "act_layer", "block_fn",
    "mlp_layer", "attn_layer",
)
_CAIT_ARGS = (
    "patch_size", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "drop_rate",
    "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "block_layers", "block_layers_token",
    "patch_layer", "norm_layer", "act_layer", "attn_block", "mlp_block", "init_values", "attn_block_token_only",
    "mlp_block_token_only", "depth_token_only", "mlp_ratio_token_only",
)
_REGNET_ARGS = (  # RegNet's own arguments, then the RegNetCfg fields it overlays on its variant's config
    "output_stride", "global_pool", "drop_rate", "drop_path_rate", "zero_init_last",
    "depth", "w0", "wa", "wm", "group_size", "bottle_ratio", "se_ratio", "group_min_ratio", "stem_width",
    "downsample", "linear_out", "preact", "num_features", "act_layer", "norm_layer",
)
# The DeiT and CaiT builders receive their variant's patch size (and CaiT's depth) as a positional
# argument of the same name, so a model_args value for it collides with that (a TypeError when the
# model is built): refused until the builders take them (tests/test_validation.py notices when they do).
BUILDER_FIXED: dict[str, tuple[str, ...]] = {"deit": ("patch_size",), "cait": ("patch_size", "depth")}
MODEL_ARGS: dict[str, tuple[str, ...]] = {
    family: tuple(a for a in args if a not in BUILDER_FIXED.get(family, ()))
    for family, args in {"vit": _VIT_ARGS, "deit": _VIT_ARGS, "cait": _CAIT_ARGS, "regnety": _REGNET_ARGS}.items()
}
ENGINE_ARGS = {"num_classes": "the dataset's classes", "img_size": "dataset.img_size",
               "in_chans": "the dataset's channels", "pretrained": "models are always built from scratch"}


def model_family(name: str) -> str | None:
    """vit (ViT_P/ViT_C), deit, cait or regnety; None for a name the catalog does not know."""
    if name not in _MODELS:
        return None
    if name.startswith("vit_"):
        return "vit"
    if name in DEIT_VARIANTS:
        return "deit"
    if name in CAIT_VARIANTS:
        return "cait"
    return "regnety"


def accepted_model_args(name: str) -> tuple[str, ...]:
    """The `model_args` keys model `name` accepts (empty for an unknown name)."""
    family = model_family(name)
    return MODEL_ARGS[family] if family else ()


def check_model_args(name: str, model_args: dict[str, Any]) -> None:
    """TrialSetupError naming the first `model_args` key the model's builder does not accept."""
    accepted = accepted_model_args(name)
    for key in model_args:
        if key in ENGINE_ARGS:
            raise TrialSetupError(f"model_args.{key}: set by the engine ({ENGINE_ARGS[key]}), not by model_args")
        if key not in accepted:
            raise TrialSetupError(f"model_args.{key}: {name} does not accept it{did_you_mean(key, accepted)}; "
                                  f"valid: {', '.join(accepted)}")


def _patch_size(name: str) -> int | None:
    """The patch size the model is built with by default (None: no patches, e.g. RegNetY)."""
    if name.startswith("vit_"):
        label = name.split("_", 2)[2]
        return {**PAPER_SIZES, **SMALL_IMAGE_SIZES}[label].patch_size
    if name in DEIT_VARIANTS:
        return DEIT_VARIANTS[name][1]
    if name in CAIT_VARIANTS:
        return CAIT_VARIANTS[name][1]
    return None


def check_model_input(name: str, img_size: int, model_args: dict[str, Any]) -> None:
    """TrialSetupError naming the key when the model cannot take `img_size`-pixel inputs: the patch
    size (`model_args.patch_size` or the model's own) must divide the image size, and a ViT_C's patch
    size is the total stride of its conv stem."""
    default = _patch_size(name)
    if default is None:
        return
    patch = model_args.get("patch_size", default)
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise TrialSetupError(f"model_args.patch_size: must be a positive integer, got {patch!r}")
    if name.startswith("vit_c_"):
        stride = STEMS[name.split("_", 2)[2]].total_stride
        if patch != stride:
            raise TrialSetupError(f"model_args.patch_size: {name}'s conv stem has total stride {stride}; "
                                  f"patch_size={patch} needs another model")
    if img_size % patch:
        fits = [s for s in (img_size - img_size % patch, img_size - img_size % patch + patch) if s > 0]
        raise TrialSetupError(f"dataset.img_size: {img_size} px is not divisible by {name}'s patch size {patch}; "
                              f"use a multiple of {patch} (e.g. {' or '.join(map(str, fits))})")
