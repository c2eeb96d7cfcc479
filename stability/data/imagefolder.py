"""ImageNet-style folders (root/train/<class>/*.jpg, root/val/<class>/...) streamed from disk.

Images are decoded and augmented by DataLoader workers as uint8 tensors (a quarter of the
bytes of float32 to copy and to move), then moved to the device and normalised there.

Determinism: an epoch is planned in the main process from the caller's generator (the
permutation plus one seed per permutation position); each image's transform runs under its
own seed, so a given seed gives the same batches whatever num_workers, rank or world size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from stability.data.base import (DatasetError, check_img_size, check_options, shard_positions,
                                 steps_per_epoch)

DEFAULT_IMG_SIZE = 224
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 1024
OPTIONS = ("num_workers", "auto_augment", "min_scale")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUT = "expected {root}/train/<class>/*.jpg|png and {root}/val/<class>/..."
HOW = "arrange the images one folder per class (ImageNet style) and point dataset.root at their parent"


def _is_image(filename: str) -> bool:
    return filename.lower().endswith(IMG_EXTENSIONS)


def _check_split(root: str, split: str) -> None:
    folder = os.path.join(root, split)
    where = LAYOUT.format(root=root)
    if not os.path.isdir(folder):
        raise DatasetError(f"imagefolder not found under {root}: {where} (no {folder}); {HOW}")
    try:
        classes = [e for e in os.scandir(folder) if e.is_dir()]
    except OSError as exc:
        raise DatasetError(f"imagefolder under {root}: {folder} is not readable ({exc}); {HOW}") from None
    if not classes:
        raise DatasetError(f"imagefolder not found under {root}: {where} ({folder} has no class folders); {HOW}")
    for entry in classes:
        try:
            with os.scandir(entry.path) as files:
                found = any(f.is_file() and _is_image(f.name) for f in files)
        except OSError as exc:
            raise DatasetError(f"imagefolder under {root}: {entry.path} is not readable ({exc}); {HOW}") from None
        if not found:
            raise DatasetError(f"imagefolder under {root}: class folder {entry.path} has no images "
                               f"({', '.join(IMG_EXTENSIONS[:4])}, ...); {HOW}")


def check_imagefolder(root: str | None) -> None:
    """root/train and root/val exist and every class folder holds at least one image."""
    if not root:
        raise DatasetError("imagefolder needs dataset.root: a folder holding train/<class>/ and val/<class>/ image folders")
    root = os.path.abspath(os.path.expanduser(root))
    for split in ("train", "val"):
        _check_split(root, split)


class _SeededImages(torch.utils.data.Dataset):
    """ImageFolder samples keyed by (index, seed): the random transform runs under that seed;
    a seed of None selects the deterministic evaluation transform."""

    def __init__(self, folder: ImageFolder, random_tf, eval_tf):
        self.samples, self.loader = folder.samples, folder.loader
        self.random_tf, self.eval_tf = random_tf, eval_tf

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[Tensor, int]:
        index, seed = key
        path, target = self.samples[index]
        image = self.loader(path)
        if seed is None:
            return self.eval_tf(image), target
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.random_tf(image), target


class _PlanSampler:
    """A batch sampler whose batches are replaced before each epoch (lets workers persist)."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageFolderDataset:
    """Train/val image folders read by DataLoader workers; batches land on `device`."""

    def __init__(self, root: str | None, img_size: int | None, device: torch.device, *,
                 num_workers: int | None = None, auto_augment: bool = False, min_scale: float = 0.08):
        check_imagefolder(root)
        self.root = os.path.abspath(os.path.expanduser(root))
        self.name = "imagefolder"
        self.device = device
        self.img_size = check_img_size("imagefolder", DEFAULT_IMG_SIZE if img_size is None else img_size,
                                       MIN_IMG_SIZE, MAX_IMG_SIZE)
        try:
            train = ImageFolder(os.path.join(self.root, "train"))
            val = ImageFolder(os.path.join(self.root, "val"))
        except (OSError, RuntimeError) as exc:
            raise DatasetError(f"imagefolder under {self.root}: could not list images ({exc}); {HOW}") from None
        if train.classes != val.classes:
            missing = sorted(set(train.classes) ^ set(val.classes))
            raise DatasetError(f"imagefolder under {self.root}: train/ and val/ have different class folders "
                               f"(not in both: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        self.classes = train.classes
        self.num_classes, self.in_chans = len(train.classes), 3
        self.train_size, self.val_size = len(train), len(val)

        size = self.img_size
        train_tf = [T.RandomResizedCrop(size, scale=(float(min_scale), 1.0)), T.RandomHorizontalFlip()]
        if auto_augment:
            train_tf.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
        train_tf.append(T.PILToTensor())
        val_tf = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size), T.PILToTensor()])

        workers = min(4, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        if workers < 0:
            raise DatasetError(f"imagefolder: num_workers must be >= 0, got {num_workers}")
        self._train_sampler, self._val_sampler = _PlanSampler(), _PlanSampler()
        common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        self._train_images = _SeededImages(train, T.Compose(train_tf), val_tf)
        self._train_loader = DataLoader(self._train_images, batch_sampler=self._train_sampler, **common)
        self._train_streams = 0  # epochs being read now (a fused group of trials with their own data seeds)
        self._val_loader = DataLoader(_SeededImages(val, val_tf, val_tf), batch_sampler=self._val_sampler, **common)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({self.root!r}, img_size={self.img_size}, classes={self.num_classes}, "
                f"train={self.train_size}, val={self.val_size}, device={self.device})")

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        return steps_per_epoch(self.train_size, batch_size, world_size)

    def plan_epoch(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                   rank: int = 0, world_size: int = 1) -> list[list[tuple[int, int | None]]]:
        """This rank's batches of (image index, transform seed); seed None when not augmenting."""
        n = self.train_size
        positions = shard_positions(n, batch_size, rank, world_size)
        perm = torch.randperm(n, generator=generator)
        if not augment:
            return [[(i, None) for i in perm[p].tolist()] for p in positions]
        seeds = torch.randint(0, 2**62, (n,), generator=generator)
        return [list(zip(perm[p].tolist(), seeds[p].tolist())) for p in positions]

    def _to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        return (x.float() - self.mean) / self.std, y

    def train_batches(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                      rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of full, shuffled batches; augment=False uses the validation transform."""
        plan = self.plan_epoch(batch_size, generator, augment=augment, rank=rank, world_size=world_size)
        loader = self._train_loader
        if self._train_streams:  # persistent workers serve one epoch at a time: a second one gets its own loader
            sampler = _PlanSampler()
            loader = DataLoader(self._train_images, batch_sampler=sampler, num_workers=loader.num_workers,
                                pin_memory=loader.pin_memory)
        else:
            sampler = self._train_sampler
        sampler.batches = plan
        self._train_streams += 1
        try:
            for x, y in loader:
                yield self._to_device(x, y)
        finally:
            self._train_streams -= 1

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._val_sampler.batches = [[(i, None) for i in range(s, min(s + batch_size, self.val_size))]
                                     for s in range(0, self.val_size, batch_size)]
        for x, y in self._val_loader:
            yield self._to_device(x, y)


def load_imagefolder(root: str | None, img_size: int | None, device: torch.device,
                     download: bool = False, **options) -> ImageFolderDataset:
    check_options("imagefolder", options, OPTIONS)
    if download:
        raise DatasetError("imagefolder cannot be downloaded: point dataset.root at local train/ and val/ folders")
    return ImageFolderDataset(root, img_size, device, **options)
