"""Training objectives beyond label cross-entropy: DeiT distillation and the over-smoothing losses.

Touvron et al. 2021 and Gong et al. 2021 (docs/architecture.md, "Background"). Written here because timm has DeiT's models but not its distillation
loss, and no library has the patch-diversification losses of Gong et al. (2021):
- cosine: the mean pairwise cosine similarity of last-layer patch tokens, as a penalty;
- contrastive: each last-layer patch h_i should be closer to its own first-layer embedding e_i
  than to the mean of the other patches' embeddings (unit vectors; embeddings detached);
- mixing: with patch-aligned CutMix, the classification head labels every last-layer patch token
  with the class of the image the patch came from.
`TrainForward` exposes the tokens these need through the model's ordinary forward, so DDP and
torch.compile see one module call per step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from stability.models import patch_cosine_similarity
from stability.models.analysis import prefix_tokens, transformer_blocks
from stability.spec.errors import TrialSetupError
from stability.spec.trial import Distillation, PatchLosses


class TrainForward(nn.Module):
    """Wraps a model so one forward returns its logits and, when patch losses need them, the
    last transformer block's patch tokens, the patch embeddings and the patch logits."""

    def __init__(self, model: nn.Module, need_tokens: bool):
        super().__init__()
        self.model = model
        self.need_tokens = need_tokens
        self._captured: dict[str, torch.Tensor] = {}
        self._capturing = False
        if need_tokens:
            blocks = transformer_blocks(model)
            if not blocks:
                raise TrialSetupError(f"{type(model).__name__} has no patch tokens: patch losses need a transformer model")
            skip = prefix_tokens(model)
            blocks[-1].register_forward_hook(lambda _m, _i, out: self._keep("last", out[:, skip:]))
            model.patch_embed.register_forward_hook(lambda _m, _i, out: self._keep("embed", out))

    def _keep(self, name: str, tensor: torch.Tensor) -> None:
        if self._capturing:  # evaluation calls the bare model: nothing is kept then
            self._captured[name] = tensor

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        if not self.need_tokens:
            return {"logits": self.model(x)}
        self._capturing = True
        try:
            feats = self.model.forward_features(x)
        finally:
            self._capturing = False
        out = {"logits": self.model.forward_head(feats), "last": self._captured.pop("last"),
               "embed": self._captured.pop("embed")}
        out["patch_logits"] = self.model.head(feats[:, self.model.num_prefix_tokens:])
        return out


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, tau: float) -> torch.Tensor:
    """DeiT: soft = KL(student/tau || teacher/tau) * tau^2; hard = CE(student, teacher argmax)."""
    if kind == "hard":
        return F.cross_entropy(student, teacher.argmax(dim=1))
    log_s = F.log_softmax(student.float() / tau, dim=1)
    log_t = F.log_softmax(teacher.float() / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau


def contrastive_loss(last: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """-log( exp(h_i.e_i) / (exp(h_i.e_i) + exp(h_i.mean_{j!=i} e_j)) ), averaged over patches."""
    n = last.shape[1]
    h = F.normalize(last.float(), dim=-1)
    e = F.normalize(embed.detach().float(), dim=-1)
    others = (e.sum(dim=1, keepdim=True) - e) / (n - 1)
    positive = (h * e).sum(dim=-1)
    negative = (h * others).sum(dim=-1)
    return -(positive - torch.logsumexp(torch.stack([positive, negative]), dim=0)).mean()


def patch_cutmix(x: torch.Tensor, y: torch.Tensor, patch: int, num_classes: int, smoothing: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix whose box lies on the patch grid (alpha 1: lambda ~ U(0, 1)), pasting from the
    flipped batch as timm does. Returns mixed images, soft targets by area and, per patch, the
    label of the image it came from (B, N)."""
    b, _, height, width = x.shape
    gh, gw = height // patch, width // patch
    cut = math.sqrt(1.0 - rng.uniform())
    ch, cw = int(round(gh * cut)), int(round(gw * cut))
    top, left = int(rng.integers(0, gh - ch + 1)), int(rng.integers(0, gw - cw + 1))
    mask = torch.zeros(gh, gw, dtype=torch.bool, device=x.device)
    mask[top:top + ch, left:left + cw] = True
    pixels = mask.repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    source = y.flip(0)
    mixed = torch.where(pixels, x.flip(0), x)
    lam = 1.0 - float(ch * cw) / (gh * gw)
    off, on = smoothing / num_classes, 1.0 - smoothing + smoothing / num_classes
    target = lam * F.one_hot(y, num_classes).float() + (1 - lam) * F.one_hot(source, num_classes).float()
    target = target * (on - off) + off
    patch_labels = torch.where(mask.flatten()[None, :], source[:, None], y[:, None])
    return mixed, target, patch_labels


class Objective:
    """The training loss of one trial: label loss, distillation and patch losses, with their weights."""

    def __init__(self, *, num_classes: int, label_smoothing: float, distillation: Distillation,
                 patch_losses: PatchLosses, teacher: nn.Module | None, patch_size: int | None, seed: int):
        self.num_classes = num_classes
        self.smoothing = label_smoothing
        self.distill = distillation
        self.weights = patch_losses
        self.teacher = teacher
        self.patch_size = patch_size
        self.rng = np.random.default_rng(seed)
        self.soft_ce = SoftTargetCrossEntropy()
        if distillation.active and teacher is None:
            raise TrialSetupError("distillation needs a teacher model")
        if patch_losses.mixing > 0 and not patch_size:
            raise TrialSetupError("patch_losses.mixing needs a model with a patch grid")

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Patch-aligned CutMix when the mixing loss is on; else the batch unchanged."""
        if self.weights.mixing > 0:
            return patch_cutmix(x, y, self.patch_size, self.num_classes, self.smoothing, self.rng)
        return x, y, None

    def label_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2:  # soft targets from mixup / CutMix
            return self.soft_ce(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.smoothing)

    def __call__(self, out: dict[str, Any], x: torch.Tensor, target: torch.Tensor,
                 patch_labels: torch.Tensor | None) -> torch.Tensor:
        logits = out["logits"]
        cls_logits, dist_logits = logits if isinstance(logits, tuple) else (logits, logits)
        loss = self.label_loss(cls_logits, target)
        if self.distill.active:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            alpha = self.distill.alpha
            loss = (1 - alpha) * loss + alpha * distillation_loss(
                dist_logits, teacher_logits, self.distill.type, self.distill.tau)
        if self.weights.cosine > 0:
            loss = loss + self.weights.cosine * patch_cosine_similarity(out["last"])
        if self.weights.contrastive > 0:
            loss = loss + self.weights.contrastive * contrastive_loss(out["last"], out["embed"])
        if self.weights.mixing > 0:
            patch_logits = out["patch_logits"]
            loss = loss + self.weights.mixing * F.cross_entropy(
                patch_logits.reshape(-1, patch_logits.shape[-1]).float(), patch_labels.reshape(-1))
        return loss
