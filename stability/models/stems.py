"""Convolutional stem (ViT_C) usable as a timm patch-embedding layer, and pycls initialisation."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from timm.layers import PatchEmbed, to_2tuple
from torch import nn

from stability.spec.errors import TrialSetupError

from .catalog import StemSpec


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return tuple(int(v) for v in to_2tuple(value))  # timm's helper; ints so sizes compare as plain tuples


class ConvStemEmbed(nn.Module):
    """Stack of 3x3 conv/BN/ReLU layers ending in a 1x1 conv with bias, turning an image into tokens.

    Written here rather than using timm's HybridEmbed/ConvStem because HybridEmbed runs its backbone
    once at construction to infer the feature size (costly for the 224-px stems and awkward on the meta
    device) and neither applies the pycls initialisation; this class implements the small interface
    timm's VisionTransformer and Cait expect of a patch embedding (num_patches, grid_size, feat_ratio,
    dynamic_feat_size, output_fmt).
    """

    def __init__(
        self,
        spec: StemSpec,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        output_fmt: str | None = None,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        norm_layer: Any = None,
        device: Any = None,
        dtype: Any = None,
        **_ignored: Any,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if dynamic_img_pad or norm_layer is not None:
            raise TrialSetupError("the conv stem supports neither dynamic_img_pad nor an embedding norm_layer")
        if _pair(patch_size) != (spec.total_stride, spec.total_stride):
            raise TrialSetupError(f"conv stem strides multiply to {spec.total_stride}, but patch_size={patch_size}")
        if output_fmt not in (None, "NHWC", "NLC", "NCHW"):
            raise TrialSetupError(f"unsupported output_fmt {output_fmt!r}")
        self.patch_size = _pair(patch_size)
        self.img_size = _pair(img_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.output_fmt = output_fmt
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = False

        layers: list[nn.Module] = []
        width_in = in_chans
        for kernel, stride, width in zip(spec.kernels, spec.strides, spec.channels):
            layers += [
                nn.Conv2d(width_in, width, kernel, stride, padding=kernel // 2, bias=False, **factory),
                nn.BatchNorm2d(width, **factory),
                nn.ReLU(inplace=True),
            ]
            width_in = width
        layers.append(nn.Conv2d(width_in, embed_dim, kernel_size=1, bias=bias, **factory))
        self.proj = nn.Sequential(*layers)
        self.init_weights()

    def init_weights(self) -> None:
        """pycls: 3x3 convs N(0, sqrt(2/fan_out)), BN (1, 0); final 1x1 N(0, sqrt(1/out_ch)), bias 0."""
        convs = [m for m in self.proj if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv in convs[:-1]:
                fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
                conv.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            for norm in self.proj:
                if isinstance(norm, nn.BatchNorm2d):
                    norm.reset_parameters()
            last = convs[-1]
            last.weight.normal_(0.0, math.sqrt(1.0 / last.out_channels))
            if last.bias is not None:
                last.bias.zero_()

    def set_input_size(self, img_size: int | tuple[int, int] | None = None, patch_size: Any = None) -> None:
        """Adopt a new input size (timm's `VisionTransformer.set_input_size`); the stride is fixed."""
        if patch_size is not None and _pair(patch_size) != self.patch_size:
            raise TrialSetupError("a conv stem cannot change its patch size")
        if img_size is not None:
            self.img_size = _pair(img_size)
            self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
            self.num_patches = self.grid_size[0] * self.grid_size[1]

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return max(self.patch_size) if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.strict_img_size and (height, width) != self.img_size:
            raise TrialSetupError(f"input size {height}x{width} does not match the model's {self.img_size[0]}x{self.img_size[1]}")
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise TrialSetupError(f"input size {height}x{width} is not divisible by the patch size {self.patch_size[0]}")
        x = self.proj(x)
        if self.output_fmt == "NCHW":
            return x
        if self.output_fmt == "NHWC":
            return x.permute(0, 2, 3, 1)
        return x.flatten(2).transpose(1, 2)


def conv_stem_layer(spec: StemSpec) -> partial:
    """A timm `embed_layer` / `patch_layer` factory building a fresh stem of this layout per model."""
    return partial(ConvStemEmbed, spec)


def init_pycls_vit(model: nn.Module) -> None:
    """pycls ViT init on top of timm's: patchify conv trunc-normal sqrt(1/fan_in), head zero, pos-embed 0.02."""
    with torch.no_grad():
        embed = getattr(model, "patch_embed", None)
        if isinstance(embed, PatchEmbed):
            conv = embed.proj
            fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in))
            if conv.bias is not None:
                conv.bias.zero_()
        pos_embed = getattr(model, "pos_embed", None)
        if isinstance(pos_embed, nn.Parameter):
            nn.init.trunc_normal_(pos_embed, std=0.02)
        head = getattr(model, "head", None)
        if isinstance(head, nn.Linear):
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
