"""K timm VisionTransformers of one architecture run as one fused forward/backward.

Written by hand because no library does it well here: `torch.func.vmap` over timm models works but
runs slower than a plain loop on the CPU (its scaled-dot-product-attention kernel has no batching
rule). `FusedViT` stacks each parameter of the K models once into a (K, ...) leaf and makes every
model's parameter a view of its slice, so each trial keeps its own parameters: a torch.optim
optimizer per trial, LambdaLR, grad clipping and the engine's `evaluate` work on each model
unchanged. The forward follows timm's `VisionTransformer` exactly (patch or conv stem, class token,
position embedding, pre-norm blocks with qkv bias and optional LayerScale, final norm, token
pooling, head): linear layers become batched matmuls over K (`BatchedLinear`), attention folds K
into the batch, and the conv stem becomes grouped convolutions (groups=K) with BatchNorm over
K x C channels, or on the CPU im2col + batched matmuls with per-model BatchNorm. The last block
runs for the class token alone (token pooling reads nothing else): the same outputs and gradients
for less work. Nothing mixes the K models, so a non-finite value in one never reaches another.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp, PatchEmbed
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from stability.models.stems import ConvStemEmbed
from stability.train.fused.im2col import im2col


def _refuse(condition: bool, what: str) -> None:
    if condition:
        raise ValueError(f"cannot fuse these models: {what}")


def _dropout_free(module: nn.Module, where: str) -> None:
    for name in ("pos_drop", "attn_drop", "proj_drop", "drop1", "drop2", "head_drop"):
        drop = getattr(module, name, None)
        _refuse(isinstance(drop, nn.Dropout) and drop.p > 0, f"dropout in {where}.{name} (set it to 0)")


def check_fusable(model: nn.Module) -> None:
    """ValueError naming the first feature of `model` that `FusedViT` does not implement."""
    _refuse(type(model) is not VisionTransformer, f"{type(model).__name__} is not a plain timm VisionTransformer")
    _refuse(model.cls_token is None or model.global_pool != "token", "only class-token pooling is supported")
    _refuse(model.reg_token is not None or model.no_embed_class or model.dynamic_img_size
            or model.pos_embed is None, "register tokens, no_embed_class, dynamic sizes or no pos_embed")
    _refuse(model.attn_pool is not None, "attention pooling")
    for name in ("patch_drop", "norm_pre", "fc_norm"):
        _refuse(not isinstance(getattr(model, name), nn.Identity), f"{name} is not Identity")
    _refuse(not isinstance(model.norm, nn.LayerNorm), "final norm is not a LayerNorm")
    _refuse(not isinstance(model.head, nn.Linear), "head is not a Linear layer")
    _dropout_free(model, "model")
    embed = model.patch_embed
    if isinstance(embed, PatchEmbed):
        _refuse(not isinstance(embed.norm, nn.Identity) or embed.dynamic_img_pad or not embed.flatten,
                "patch embedding with a norm, dynamic padding or unflattened output")
        conv = embed.proj
        _refuse(conv.kernel_size != conv.stride or conv.padding != (0, 0), "overlapping patch embedding")
    else:
        _refuse(not isinstance(embed, ConvStemEmbed), f"patch embedding {type(embed).__name__}")
        for layer in embed.proj:  # what both stem paths (grouped convolution, im2col) implement
            _refuse(isinstance(layer, nn.Conv2d) and (layer.dilation != (1, 1) or layer.padding_mode != "zeros"
                                                      or layer.groups != 1),
                    "stem convolution with dilation, groups or non-zero padding")
            _refuse(isinstance(layer, nn.BatchNorm2d) and layer.track_running_stats and layer.momentum is None,
                    "BatchNorm with momentum=None (cumulative average)")
    for i, block in enumerate(model.blocks):
        where = f"blocks.{i}"
        _refuse(type(block) is not Block or type(block.attn) is not Attention or type(block.mlp) is not Mlp,
                f"{where} is not a timm Block(Attention, Mlp)")
        for name in ("drop_path1", "drop_path2"):
            _refuse(not isinstance(getattr(block, name), nn.Identity), f"drop path in {where} (set drop_path to 0)")
        for name in ("ls1", "ls2"):
            _refuse(not isinstance(getattr(block, name), (nn.Identity, LayerScale)), f"{where}.{name}")
        attn, mlp = block.attn, block.mlp
        _refuse(getattr(attn, "gate", None) is not None, f"gated attention in {where}")
        for norm in (attn.q_norm, attn.k_norm, attn.norm, mlp.norm):
            _refuse(not isinstance(norm, nn.Identity), f"extra norm layers in {where}")
        _refuse(not isinstance(block.norm1, nn.LayerNorm) or not isinstance(block.norm2, nn.LayerNorm),
                f"{where} norms are not LayerNorm")
        _dropout_free(attn, f"{where}.attn")
        _dropout_free(mlp, f"{where}.mlp")


def _same_architecture(models: Sequence[nn.Module]) -> None:
    def signature(m: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, tuple(t.shape)) for n, t in [*m.named_parameters(), *m.named_buffers()]]

    first = signature(models[0])
    for k, model in enumerate(models[1:], start=1):
        _refuse(type(model.patch_embed) is not type(models[0].patch_embed) or signature(model) != first,
                f"model {k} differs in architecture from model 0")


class FusedViT(nn.Module):
    """K same-architecture timm `VisionTransformer`s: images (K, B, C, H, W) -> logits (K, B, classes).

    Each parameter name gets one stacked (K, ...) tensor (the "flat" parameter the fused forward
    uses); the K models' parameters are replaced by views of it, so each model still owns its own
    leaf parameters (for its optimizer, grad clipping and evaluation) and every update to them is
    seen by the fused forward without copying. After `backward`, call `grads_to_models()` to hand
    each model its slice of the stacked gradients. Build the models on their final device and dtype
    before fusing them. The fused forward equals running each model on its own slice of the input,
    in train mode (BatchNorm statistics of the conv stem included) and in eval mode.

    `conv_stem` picks how a ViT_C stem runs: "grouped" (grouped convolutions, groups=K, one BatchNorm
    over K x C channels), "matmul" (channels-last im2col by strided slicing, then the batched matmul
    of the linear layers; per-model BatchNorm), or "auto": matmul on the CPU, where oneDNN's grouped
    convolution backward is several times slower at these small sizes (docs/benchmarks.md), grouped
    elsewhere. `pack_attention` (default: on the CPU) lets images of up to 8 tokens share attention
    sequences of about 64 tokens with a block-diagonal mask (`images_per_sequence`): torch's CPU
    flash kernel pays a fixed cost per sequence and head, which dominates at a handful of tokens.
    """

    def __init__(self, models: Sequence[nn.Module], conv_stem: str = "auto", pack_attention: bool | None = None):
        super().__init__()
        _refuse(len(models) < 1, "no models given")
        if conv_stem not in ("auto", "grouped", "matmul"):
            raise ValueError(f"conv_stem must be auto, grouped or matmul, not {conv_stem!r}")
        for model in models:
            check_fusable(model)
        _same_architecture(models)
        self.models = nn.ModuleList(models)
        self._flat: dict[str, torch.Tensor] = {}
        for name, _ in models[0].named_parameters():
            self._flat[name] = _share_storage(models, name)
        self._views = {name: [m.get_parameter(name) for m in models] for name in self._flat}
        on_cpu = next(iter(self._flat.values())).device.type == "cpu"
        self.conv_stem = ("matmul" if on_cpu else "grouped") if conv_stem == "auto" else conv_stem
        self.pack_attention = on_cpu if pack_attention is None else pack_attention

    @property
    def k(self) -> int:
        return len(self.models)

    def _apply(self, fn, recurse=True):
        raise RuntimeError("FusedViT cannot be moved or cast: build the models on their device and dtype, then fuse")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the stacked gradients and the models' gradients (views of them); always sets None."""
        for name, flat in self._flat.items():
            flat.grad = None
            for param in self._views[name]:
                param.grad = None

    def grads_to_models(self) -> None:
        """Give every model's parameter its slice of the stacked gradient (a view, no copy)."""
        for name, flat in self._flat.items():
            if flat.grad is not None:
                for param, grad in zip(self._views[name], flat.grad.unbind(0)):
                    param.grad = grad

    @torch.no_grad()
    def zero_model_(self, k: int) -> None:
        """Set every parameter of model k to zero (a diverged trial: keeps its slot, stops its overflow)."""
        for flat in self._flat.values():
            flat[k].zero_()

    def _linear(self, x: torch.Tensor, prefix: str, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(K, ..., in) -> (K, ..., out) with each model's own weight (K, out, in) and bias (one batched matmul)."""
        weight = self._flat[f"{prefix}.weight"].flatten(2) if weight is None else weight
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = BatchedLinear.apply(flat, weight, self._flat.get(f"{prefix}.bias"))
        return out.view(*x.shape[:-1], out.shape[-1])

    def _layer_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """LayerNorm without affine, then each model's own gain and shift (broadcast over tokens)."""
        norm = self.models[0].get_submodule(prefix)
        x = F.layer_norm(x, norm.normalized_shape, eps=norm.eps)
        weight, bias = self._flat.get(f"{prefix}.weight"), self._flat.get(f"{prefix}.bias")
        shape = (self.k,) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        if weight is None:
            return x if bias is None else x + bias.view(shape)
        if bias is None:
            return x * weight.view(shape)
        return torch.addcmul(bias.view(shape), x, weight.view(shape))

    def _layer_scale(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        gamma = self._flat.get(f"{prefix}.gamma")
        return x if gamma is None else x * gamma.view((self.k,) + (1,) * (x.dim() - 2) + (-1,))

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """PatchEmbed: a stride == kernel conv is a linear map of each patch; (K, B, C, H, W) -> (K, B, N, D)."""
        embed = self.models[0].patch_embed
        _check_img_size(embed, x)
        k, b, c, h, w = x.shape
        ph, pw = embed.patch_size
        patches = x.reshape(k, b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4, 6)
        patches = patches.reshape(k, b, (h // ph) * (w // pw), c * ph * pw)
        return self._linear(patches, "patch_embed.proj")

    def _conv_stem(self, x: torch.Tensor) -> torch.Tensor:
        """ConvStemEmbed: grouped convolutions (groups=K), BatchNorm over K x C channels; -> (K, B, N, D)."""
        embed = self.models[0].patch_embed
        _check_img_size(embed, x)
        k, b = x.shape[:2]
        x = x.transpose(0, 1).reshape(b, -1, *x.shape[-2:])  # (B, K*C, H, W)
        for i, layer in enumerate(embed.proj):
            prefix = f"patch_embed.proj.{i}"
            if isinstance(layer, nn.Conv2d):
                bias = self._flat.get(f"{prefix}.bias")
                x = F.conv2d(x, self._flat[f"{prefix}.weight"].flatten(0, 1), None if bias is None else bias.flatten(),
                             layer.stride, layer.padding, layer.dilation, groups=k)
            elif isinstance(layer, nn.BatchNorm2d):
                x = self._batch_norm(x, prefix)
            else:
                x = layer(x)  # elementwise (ReLU)
        return x.view(b, k, -1, x.shape[-2] * x.shape[-1]).permute(1, 0, 3, 2)

    def _conv_stem_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """ConvStemEmbed in channels-last layout: each convolution is im2col + one batched matmul."""
        embed = self.models[0].patch_embed
        _check_img_size(embed, x)
        x = x.permute(0, 1, 3, 4, 2)  # (K, B, H, W, C)
        for i, layer in enumerate(embed.proj):
            prefix = f"patch_embed.proj.{i}"
            if isinstance(layer, nn.Conv2d):
                x = self._linear(im2col(x, layer), prefix, weight=self._conv_weight(prefix))
            elif isinstance(layer, nn.BatchNorm2d):
                x = self._batch_norm_per_model(x, prefix)
            else:
                x = layer(x)  # elementwise (ReLU)
        return x.flatten(2, 3)  # (K, B, N, D)

    def _conv_weight(self, prefix: str) -> torch.Tensor:
        """A stem convolution's weight (K, O, C, kh, kw) as (K, O, kh*kw*C), the order of `im2col`."""
        weight = self._flat[f"{prefix}.weight"]
        return weight.permute(0, 1, 3, 4, 2).flatten(2)

    def _batch_norm_per_model(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """BatchNorm of channels-last (K, B, H, W, C): each model's own statistics and running buffers."""
        norms = [m.get_submodule(prefix) for m in self.models]
        weight, bias = self._flat.get(f"{prefix}.weight"), self._flat.get(f"{prefix}.bias")
        rows = x.reshape(self.k, -1, x.shape[-1]).unbind(0)  # unbind, not indexing: one stack in backward
        weights = [None] * self.k if weight is None else weight.unbind(0)
        biases = [None] * self.k if bias is None else bias.unbind(0)
        outs = []
        for norm, r, w, b in zip(norms, rows, weights, biases):
            training = norm.training or norm.running_mean is None
            outs.append(F.batch_norm(r, norm.running_mean, norm.running_var, w, b, training, norm.momentum, norm.eps))
            if norm.training and norm.num_batches_tracked is not None:
                norm.num_batches_tracked.add_(1)
        return torch.stack(outs).view(x.shape)

    def _batch_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """One F.batch_norm over all models' channels; running statistics are copied back per model."""
        norms = [m.get_submodule(prefix) for m in self.models]
        first = norms[0]
        training = first.training or first.running_mean is None
        tracked = first.running_mean is not None
        mean = torch.cat([n.running_mean for n in norms]) if tracked else None
        var = torch.cat([n.running_var for n in norms]) if tracked else None
        weight, bias = self._flat.get(f"{prefix}.weight"), self._flat.get(f"{prefix}.bias")
        out = F.batch_norm(x, mean, var, None if weight is None else weight.flatten(),
                           None if bias is None else bias.flatten(), training, first.momentum, first.eps)
        if training and tracked:
            with torch.no_grad():
                for norm, m, v in zip(norms, mean.chunk(self.k), var.chunk(self.k)):
                    norm.running_mean.copy_(m)
                    norm.running_var.copy_(v)
                    norm.num_batches_tracked.add_(1)
        return out

    def _attention(self, x: torch.Tensor, i: int) -> torch.Tensor:
        attn = self.models[0].blocks[i].attn
        k, b, n, _ = x.shape
        g = images_per_sequence(b, n) if self.pack_attention else 1  # g divides B: never two models in a sequence
        qkv = self._linear(x, f"blocks.{i}.attn.qkv")  # (K, B, N, 3 * dim): g consecutive images form one sequence
        qkv = qkv.view(k * b // g, g * n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, key, v = qkv.unbind(0)
        mask = _block_diagonal(g, n, x.device) if g > 1 else None
        out = F.scaled_dot_product_attention(q, key, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(k, b, n, attn.attn_dim)
        return self._linear(out, f"blocks.{i}.attn.proj")

    def _class_attention(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Block i's attention output for the class token alone: (K, B, N, D) -> (K, B, D). Its query
        meets every token's key and value (a softmax over N scores per image and head)."""
        attn = self.models[0].blocks[i].attn
        k, b, n, _ = x.shape
        qkv = self._linear(x, f"blocks.{i}.attn.qkv").view(k, b, n, 3, attn.num_heads, attn.head_dim)
        q, key, v = qkv[:, :, :1, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # q (K, B, 1, H, hd); key, v (K, B, N, H, hd)
        weights = ((q * key).sum(-1) * attn.head_dim ** -0.5).softmax(dim=2)  # (K, B, N, H)
        out = (weights.unsqueeze(-1) * v).sum(2)  # (K, B, H, hd)
        return self._linear(out.reshape(k, b, attn.attn_dim), f"blocks.{i}.attn.proj")

    def _mlp(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"blocks.{i}"
        h = self._linear(self._layer_norm(x, f"{p}.norm2"), f"{p}.mlp.fc1")
        return self._layer_scale(self._linear(self.models[0].blocks[i].mlp.act(h), f"{p}.mlp.fc2"), f"{p}.ls2")

    def _block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"blocks.{i}"
        x = x + self._layer_scale(self._attention(self._layer_norm(x, f"{p}.norm1"), i), f"{p}.ls1")
        return x + self._mlp(x, i)

    def _last_block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The last block for the class token only, (K, B, N, D) -> (K, B, D): token pooling reads
        nothing else, so the other tokens' attention output, projection and MLP are never computed
        (the same numbers as the full block, in about a fifth of its work at 5 tokens)."""
        p = f"blocks.{i}"
        cls = x[:, :, 0] + self._layer_scale(self._class_attention(self._layer_norm(x, f"{p}.norm1"), i), f"{p}.ls1")
        return cls + self._mlp(cls, i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[0] != self.k:
            raise ValueError(f"expected images of shape ({self.k}, batch, channels, height, width), "
                             f"got {tuple(x.shape)}")
        first = self.models[0]
        if isinstance(first.patch_embed, PatchEmbed):
            x = self._patchify(x)
        else:
            x = self._conv_stem_matmul(x) if self.conv_stem == "matmul" else self._conv_stem(x)
        k, b = x.shape[:2]
        cls = self._flat["cls_token"].view(k, 1, 1, -1).expand(k, b, 1, -1)
        x = torch.cat([cls, x], dim=2) + self._flat["pos_embed"]  # (K, 1, N, D) broadcasts over the batch
        last = len(first.blocks) - 1
        for i in range(last):
            x = self._block(x, i)
        x = self._last_block(x, last) if last >= 0 else x[:, :, 0]  # token pooling: only the class token goes on
        return self._linear(self._layer_norm(x, "norm"), "head")  # the norm is per token


class BatchedLinear(torch.autograd.Function):
    """x (K, M, in) @ weight (K, out, in)^T + bias (K, out): K linear layers in one batched matmul.

    A Function rather than autograd through `baddbmm(bias, x, weight.transpose(1, 2))`: that
    copies the broadcast bias into the output before the product, and computes the weight's
    gradient transposed, then copies it into place; here the bias is added in place after the
    product and the gradient is computed as grad^T @ x, directly in the (K, out, in) layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = torch.bmm(x, weight.transpose(1, 2))
        return out if bias is None else out.add_(bias.unsqueeze(1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors  # as given; under autocast the products run in grad's dtype (bf16),
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)  # as autocast ran the forward's; autograd casts back
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _share_storage(models: Sequence[nn.Module], name: str) -> torch.Tensor:
    """Stack parameter `name` of every model into one (K, ...) leaf; make each model's parameter a view of it."""
    params = [m.get_parameter(name) for m in models]
    flat = torch.stack([p.detach() for p in params]).requires_grad_(params[0].requires_grad)
    owner_name, _, leaf = name.rpartition(".")
    for model, param, view in zip(models, params, flat.detach().unbind(0)):
        owner = model.get_submodule(owner_name) if owner_name else model
        owner._parameters[leaf] = nn.Parameter(view, requires_grad=param.requires_grad)
    return flat


PACKED_TOKENS = 64  # tokens per packed attention sequence (CPU, tiny images); see `images_per_sequence`


def images_per_sequence(images: int, tokens: int) -> int:
    """How many of one model's `images` share one attention sequence (block-diagonal mask) when
    packing: the largest divisor of `images` with at most PACKED_TOKENS tokens in all; 1 (no
    packing) from 9 tokens per image on, where packing measured slower than torch's CPU flash
    kernel per image. Masked scores are still computed, so an image whose attention scores are
    infinite or NaN spoils the images of its own sequence (of the same model): such a batch has a
    non-finite loss on its own anyway, and the trial is stopped as diverged."""
    if tokens > 8:
        return 1
    return max(g for g in range(1, PACKED_TOKENS // tokens + 1) if images % g == 0)


@functools.lru_cache(maxsize=16)
def _block_diagonal(g: int, n: int, device: torch.device) -> torch.Tensor:
    """Boolean (g*n, g*n) mask: a token attends only to the n tokens of its own image."""
    image = torch.arange(g, device=device).repeat_interleave(n)
    return image[:, None] == image[None, :]


def _check_img_size(embed: nn.Module, x: torch.Tensor) -> None:
    size = tuple(x.shape[-2:])
    if getattr(embed, "strict_img_size", True) and size != tuple(embed.img_size):
        expected = f"{embed.img_size[0]}x{embed.img_size[1]}"
        raise ValueError(f"input size {size[0]}x{size[1]} does not match the models' {expected}")
