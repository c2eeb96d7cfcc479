"""Pre-decoded shards (`python -m stability.data prepare`): ImageNet-style images as uint8 arrays.

A shards folder (local or a `pyarrow.fs` URI such as `s3://bucket/imagenet-160`) holds
`index.json` (written last: its presence means the folder is complete) and, per split, files
`<split>-NNNNN.npy`, each an array (n, 3, S, S) of uint8 images: every image resized to short side
S and its central S x S square kept. `index.json` names each shard with its image count, byte size,
CRC-32 and labels.

Reading costs memory copies, not JPEG decoding: a local shard is memory-mapped, a remote one read
whole once. A batch is gathered from the shards as uint8 on the host, moved to the device, and
augmented there: random resized crop (scale [min_scale, 1], ratio [3/4, 4/3], as torchvision's
RandomResizedCrop draws it) and horizontal flip in one bilinear `grid_sample`, then normalised.
Validation images are the central 87.5% of the square resized to img_size (as Resize + CenterCrop).
An epoch is planned from the caller's generator (permutation, then crop boxes and flips for every
position of it), so a seed gives the same batches on every device and for every sharding.

A missing or damaged shard (absent, wrong size, CRC mismatch, not an array of the index's shape) is
a `DatasetError` naming it: checked by size before a study starts, by CRC when a shard is first read.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stability.data.base import DatasetError, check_img_size, check_options, shard_positions, steps_per_epoch
from stability.data.shard_index import HOW, check_shards, shards_folder, short, shown

DEFAULT_IMG_SIZE = 224
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 1024
OPTIONS = ("min_scale",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # validation: the central 87.5%, as Resize(size / 0.875) + CenterCrop(size)


class _Split:
    """One split's shards: labels and counts from the index, arrays opened on first use."""

    def __init__(self, root: str, shards: list[dict], size: int):
        self.root, self.shards, self.size = root, shards, size
        counts = [s["count"] for s in shards]
        self.starts = np.cumsum([0, *counts])
        self.labels = torch.tensor([label for s in shards for label in s["labels"]], dtype=torch.int64)
        self.n = int(self.starts[-1])
        self._arrays: list[np.ndarray | None] = [None] * len(shards)

    def array(self, i: int) -> np.ndarray:
        if self._arrays[i] is None:
            self._arrays[i] = _open_shard(self.root, self.shards[i], self.size)
        return self._arrays[i]

    def gather(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Images at `indices` (in that order) as one (B, 3, S, S) uint8 array (into `out` when given,
        e.g. pinned memory): one memory copy per image, no decoding."""
        if out is None:
            out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
        which = np.searchsorted(self.starts, indices, side="right") - 1
        for shard in np.unique(which):
            rows = np.nonzero(which == shard)[0]
            out[rows] = self.array(int(shard))[indices[rows] - self.starts[shard]]
        return out


def _open_shard(root: str, shard: dict, size: int) -> np.ndarray:
    """A shard's images, checked against its CRC-32 and shape; memory-mapped when local."""
    path = shards_folder(root) / shard["file"]
    name = f"shards: {shown(root)}: shard {shard['file']}"
    try:
        if isinstance(path, Path):  # a local file: mapped, its pages read by the OS as they are used
            array = np.load(path, mmap_mode="r")
            crc = _crc32_file(path)
        else:
            data = path.read_bytes()
            crc = zlib.crc32(data)
            array = np.load(io.BytesIO(data))
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{name} is missing or damaged ({short(exc)}); delete it and prepare again") from None
    if crc != shard["crc32"] or array.dtype != np.uint8 or array.shape != (shard["count"], 3, size, size):
        raise DatasetError(f"{name} is damaged (its CRC-32 or shape differs from the index); "
                           f"delete it and prepare again")
    return array


def _crc32_file(path, chunk: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def crop_boxes(n: int, generator: torch.Generator, min_scale: float, tries: int = 10) -> Tensor:
    """RandomResizedCrop boxes (x0, y0, w, h) as fractions of a square image, drawn for n images at once:
    the first of `tries` (area, ratio) draws that fits, else the whole image (torchvision's fallback
    for a square, whose ratio 1 lies inside [3/4, 4/3])."""
    area = torch.empty(n, tries).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    ratio = log_ratio.exp()
    w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
    fits = (w <= 1) & (h <= 1)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp_min(0)[:, None]
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], torch.ones(n))
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], torch.ones(n))
    u = torch.rand(n, 2, generator=generator)
    return torch.stack([u[:, 0] * (1 - w), u[:, 1] * (1 - h), w, h], dim=1)


def resized_crops(x: Tensor, boxes: Tensor, flips: Tensor | None, out: int) -> Tensor:
    """Crop each image of x (B, C, S, S) to its box (fractions), resize to out x out (bilinear) and
    mirror where `flips`: one affine `grid_sample` for the batch."""
    x0, y0, w, h = boxes.to(x.device, torch.float32).unbind(1)
    sx = w if flips is None else torch.where(flips.to(x.device), -w, w)
    theta = torch.zeros(len(boxes), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, 2 * x0 + w - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * y0 + h - 1
    grid = F.affine_grid(theta, [len(boxes), x.shape[1], out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ShardDataset:
    """Train/val shards read into batches of uint8, augmented and normalised on `device`."""

    def __init__(self, root: str | None, img_size: int | None, device: torch.device, *, min_scale: float = 0.08):
        index = check_shards(root)
        self.root, self.name, self.device = root, "shards", device
        self.img_size = check_img_size("shards", DEFAULT_IMG_SIZE if img_size is None else img_size,
                                       MIN_IMG_SIZE, MAX_IMG_SIZE)
        if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or not 0 < min_scale <= 1:
            raise DatasetError(f"shards: min_scale must be a number in (0, 1], got {min_scale!r}")
        self.min_scale = float(min_scale)
        self.classes = list(index["classes"])
        self.num_classes, self.in_chans, self.stored_size = len(self.classes), 3, int(index["size"])
        self._train = _Split(root, index["splits"]["train"], self.stored_size)
        self._val = _Split(root, index["splits"]["val"], self.stored_size)
        self.train_size, self.val_size = self._train.n, self._val.n
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def __repr__(self) -> str:
        return (f"ShardDataset({shown(self.root)!r}, img_size={self.img_size}, stored={self.stored_size}, "
                f"classes={self.num_classes}, train={self.train_size}, val={self.val_size}, device={self.device})")

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return steps_per_epoch(self.train_size, batch_size, world_size)

    def _on_device(self, split: _Split, indices: Tensor) -> tuple[Tensor, Tensor]:
        pinned = self.device.type == "cuda"  # gathered straight into page-locked memory: one copy, then DMA
        images = torch.empty((len(indices), 3, split.size, split.size), dtype=torch.uint8, pin_memory=pinned)
        split.gather(indices.numpy(), images.numpy())
        return (images.to(self.device, non_blocking=True).float(),
                split.labels[indices].to(self.device, non_blocking=True))

    def train_batches(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                      rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of full, shuffled batches; augment=False gives the validation view."""
        n = self.train_size
        positions = shard_positions(n, batch_size, rank, world_size)
        perm = torch.randperm(n, generator=generator)
        if augment:
            boxes = crop_boxes(n, generator, self.min_scale)
            flips = torch.rand(n, generator=generator) < 0.5
        for step in positions:
            x, y = self._on_device(self._train, perm[step])
            if augment:
                x = resized_crops(x, boxes[step], flips[step], self.img_size)
            else:
                x = self._center(x)
            yield self._normalize(x), y

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, self.val_size, batch_size):
            x, y = self._on_device(self._val, torch.arange(start, min(start + batch_size, self.val_size)))
            yield self._normalize(self._center(x)), y

    def _center(self, x: Tensor) -> Tensor:
        side = EVAL_CROP
        box = torch.tensor([[(1 - side) / 2, (1 - side) / 2, side, side]]).expand(len(x), 4)
        return resized_crops(x, box, None, self.img_size)

    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def load_shards(root: str | None, img_size: int | None, device: torch.device, download: bool = False,
                **options) -> ShardDataset:
    check_options("shards", options, OPTIONS)
    if download:
        raise DatasetError(f"shards cannot be downloaded; {HOW}")
    return ShardDataset(root, img_size, device, **options)
