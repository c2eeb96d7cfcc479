"""Im2col for the fused ViT_C stem on the CPU: a strided convolution's input windows, stacked
channels-last, so the convolution becomes one batched matmul (`FusedViT._conv_stem_matmul`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def im2col(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Channels-last (K, B, H, W, C) -> (K, B, H', W', kh*kw*C): the input window of every output
    position of `conv` (zero padding, no dilation: `check_fusable`), ordered (kh, kw, C) like
    `FusedViT._conv_weight`."""
    if (*conv.kernel_size, *conv.stride, *conv.padding) == (1, 1, 1, 1, 0, 0):
        return x
    return Im2Col.apply(x, conv.kernel_size, conv.stride, conv.padding)


class Im2Col(torch.autograd.Function):
    """The windows of a strided convolution, stacked; see `im2col`. A Function because autograd
    through kh*kw strided slices allocates a zero tensor of the whole input per slice in backward;
    here the backward adds each slice's gradient into one buffer (col2im)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]):
        (kh, kw), (ph, pw) = kernel, padding
        padded = F.pad(x, (0, 0, pw, pw, ph, ph))
        ctx.geometry = (x.shape, padded.shape, kernel, stride, padding)
        return torch.stack([padded[_window(padded.shape, kernel, stride, i, j)]
                            for i in range(kh) for j in range(kw)], dim=-2).flatten(-2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape, padded_shape, (kh, kw), stride, (ph, pw) = ctx.geometry
        grad = grad.unflatten(-1, (kh * kw, shape[-1]))
        padded = grad.new_zeros(padded_shape)
        for n, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
            padded[_window(padded_shape, (kh, kw), stride, i, j)] += grad[..., n, :]
        return padded[:, :, ph:ph + shape[2], pw:pw + shape[3]], None, None, None


def _window(padded_shape, kernel, stride, i: int, j: int) -> tuple[slice, ...]:
    """Index of the input elements that kernel offset (i, j) sees, over all output positions."""
    (kh, kw), (sh, sw) = kernel, stride
    out_h, out_w = (padded_shape[2] - kh) // sh + 1, (padded_shape[3] - kw) // sw + 1
    return (slice(None), slice(None), slice(i, i + sh * (out_h - 1) + 1, sh), slice(j, j + sw * (out_w - 1) + 1, sw))
