"""Model size/cost and patch-token statistics (over-smoothing)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from timm.models.cait import Cait
from timm.models.vision_transformer import VisionTransformer


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own train/eval flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def _count_flops(model: nn.Module, x: torch.Tensor, state: dict[str, torch.Tensor] | None) -> int:
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        if state is None:
            model(x)
        else:
            functional_call(model, state, (x,), strict=False)
    return counter.get_total_flops()


def model_info(model: nn.Module, img_size: int, in_chans: int = 3) -> dict[str, float | int]:
    """`params` (all parameters) and `gflops` (giga multiply-adds for one image, the pycls convention).

    The forward runs on meta tensors standing in for the weights, so it costs no compute and leaves the
    model's parameters, buffers and train/eval flags untouched.
    """
    params = sum(p.numel() for p in model.parameters())
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta_state = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    try:
        flops = _count_flops(model, torch.zeros(1, in_chans, img_size, img_size, device="meta"), meta_state)
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: measure on real tensors
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        flops = _count_flops(model, torch.zeros(1, in_chans, img_size, img_size, device=device), None)
    return {"params": int(params), "gflops": flops / 2 / 1e9}


def prefix_tokens(model: nn.Module) -> int:
    """Tokens ahead of the patches in the outputs of `model.blocks` (CaiT's blocks carry patches only)."""
    if isinstance(model, Cait):
        return 0
    return int(getattr(model, "num_prefix_tokens", 0))


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The self-attention blocks whose outputs are patch tokens; empty for models without them."""
    if isinstance(model, (VisionTransformer, Cait)):
        return list(model.blocks)
    return []


def block_patch_tokens(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Patch tokens (B, N, D) after each transformer block, in order, computed in eval mode without grad."""
    blocks = transformer_blocks(model)
    if not blocks:
        return []
    skip = prefix_tokens(model)
    outputs: list[torch.Tensor] = []

    def keep_patches(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        outputs.append(output[:, skip:].detach())

    handles = [block.register_forward_hook(keep_patches) for block in blocks]
    try:
        with eval_mode(model), torch.no_grad():
            forward = getattr(model, "forward_features", model)
            forward(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def patch_cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of patch tokens (B, N, D), i != j, averaged over the batch.

    Uses sum_{i!=j} cos(h_i, h_j) = ||sum_i h^_i||^2 - N with h^ the unit-length tokens (float32);
    differentiable, so it also serves as a penalty.
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected tokens of shape (batch, patches, dim), got {tuple(tokens.shape)}")
    n = tokens.shape[1]
    if n < 2:
        raise ValueError("need at least two patch tokens")
    unit = F.normalize(tokens.float(), dim=-1)
    summed = unit.sum(dim=1)
    per_image = (summed.pow(2).sum(dim=-1) - n) / (n * (n - 1))
    return per_image.mean()
