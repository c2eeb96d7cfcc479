"""What every dataset shares: the error type, epoch planning and the device-held dataset.

Small datasets (digits, CIFAR) live whole on the device as one image tensor and are
augmented there, a batch at a time, with tensor indexing only (no Python loop per image).
An epoch is planned up front from the caller's CPU `torch.Generator`: the permutation and
every random augmentation parameter are drawn on the CPU for the whole epoch and moved to
the device once, so a given seed gives identical batches on every device and for every
sharding (a sample's augmentation depends on its position in the permutation, not on the
rank that trains it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stability.data.checks import DatasetError, check_img_size, check_options, default_root  # noqa: F401 (re-exported)


def shard_positions(n: int, batch_size: int, rank: int, world_size: int) -> Tensor:
    """Positions into an epoch's permutation for one rank, shaped (steps, batch_size).

    Like torch's DistributedSampler with drop_last: the permutation is cut to a multiple of
    world_size, rank r takes positions r, r + world_size, ...; then only full batches are kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    steps = (n // world_size) // batch_size
    positions = torch.arange(rank, steps * batch_size * world_size, world_size)
    return positions.view(steps, batch_size)


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    return (n // world_size) // batch_size


@dataclass
class EpochPlan:
    """One rank's epoch: train indices (steps, B), and per-sample augmentation draws."""

    indices: Tensor
    shifts: Tensor | None = None  # (steps, B, 2): crop offsets (dy, dx) into the padded image
    flips: Tensor | None = None  # (steps, B) bool: mirror horizontally

    @property
    def steps(self) -> int:
        return self.indices.shape[0]


def random_translate(x: Tensor, shifts: Tensor, pad: int, mode: str) -> Tensor:
    """Pad by `pad`, then crop each image back to its size at its own offset (one gather)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode).flatten(2)  # (B, C, Hp * Wp)
    rows = shifts[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, flat).view(b, c, h, w)


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of (N, C, H, W) images, accumulated in float64 by chunks."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk].to(torch.float64).transpose(0, 1).reshape(c, -1)
        total += part.sum(1)
        total_sq += (part * part).sum(1)
    count = images.numel() // c
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


class DeviceDataset:
    """A dataset held whole on `device`, augmented there batch by batch.

    Images are stored raw (uint8 for CIFAR, float for digits) and normalised per batch with
    the training set's per-channel mean and std; augmentation happens before normalisation,
    in raw pixel space, so constant padding means background (digits) or black.
    """

    def __init__(self, name: str, train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor,
                 num_classes: int, *, translate: int, flip: bool, pad_mode: str, device: torch.device):
        self.name = name
        self.device = device
        self.train_x, self.train_y = train_x.to(device), train_y.to(device, torch.int64)
        self.val_x, self.val_y = val_x.to(device), val_y.to(device, torch.int64)
        self.num_classes = num_classes
        self.in_chans = train_x.shape[1]
        self.img_size = train_x.shape[-1]
        self.train_size = train_x.shape[0]
        self.val_size = val_x.shape[0]
        self.translate, self.flip, self.pad_mode = translate, flip, pad_mode
        mean, std = channel_stats(self.train_x)
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, img_size={self.img_size}, classes={self.num_classes}, "
                f"train={self.train_size}, val={self.val_size}, device={self.device})")

    def normalize(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return steps_per_epoch(self.train_size, batch_size, world_size)

    def plan_epoch(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                   rank: int = 0, world_size: int = 1) -> EpochPlan:
        """Draw one epoch (permutation, then augmentation) from `generator`; CPU tensors."""
        n = self.train_size
        positions = shard_positions(n, batch_size, rank, world_size)
        perm = torch.randperm(n, generator=generator)
        plan = EpochPlan(perm[positions])
        if augment and self.translate > 0:
            plan.shifts = torch.randint(0, 2 * self.translate + 1, (n, 2), generator=generator)[positions]
        if augment and self.flip:
            plan.flips = (torch.rand(n, generator=generator) < 0.5)[positions]
        return plan

    def train_batches(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                      rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of full, shuffled, augmented, normalised batches on the device."""
        plan = self.plan_epoch(batch_size, generator, augment=augment, rank=rank, world_size=world_size)
        dev = self.device
        indices = plan.indices.to(dev, non_blocking=True)
        shifts = plan.shifts.to(dev, non_blocking=True) if plan.shifts is not None else None
        flips = plan.flips.to(dev, non_blocking=True) if plan.flips is not None else None
        for step in range(plan.steps):
            idx = indices[step]
            x = self.train_x[idx].float()
            if shifts is not None:
                x = random_translate(x, shifts[step], self.translate, self.pad_mode)
            if flips is not None:
                x = torch.where(flips[step, :, None, None, None], x.flip(-1), x)
            yield self.normalize(x), self.train_y[idx]

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole validation set in order, normalised, no augmentation."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, self.val_size, batch_size):
            yield self.normalize(self.val_x[start:start + batch_size]), self.val_y[start:start + batch_size]
