"""Random images and labels made on the device: benchmarks at any size without a dataset on disk.

Images are uniform noise (uint8 0..255 by default, or float32 in [0, 1)) and labels are uniform
over `num_classes`; nothing is learnable. The data go through the same `DeviceDataset` path as
CIFAR (per-batch translation, flips and normalisation on the device), so training on them costs
what a real small dataset held on the device costs. Drawn from a seeded generator on the device
itself, so no host-to-device copy of the whole set is needed.
"""

from __future__ import annotations

import torch

from stability.data.base import DatasetError, DeviceDataset, check_img_size, check_options

DEFAULT_IMG_SIZE = 224
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 1024
OPTIONS = ("train_size", "val_size", "num_classes", "in_chans", "dtype", "seed")
DTYPES = ("uint8", "float32")


def _positive_int(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise DatasetError(f"synthetic: {name} must be an integer >= {lo}, got {value!r}")
    return value


def _images(n: int, chans: int, size: int, dtype: str, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    shape = (n, chans, size, size)
    if dtype == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator, device=device)
    return torch.rand(shape, generator=generator, device=device)


def load_synthetic(img_size: int | None, device: torch.device, *, train_size: int = 2048, val_size: int = 256,
                   num_classes: int = 1000, in_chans: int = 3, dtype: str = "uint8", seed: int = 0,
                   **options) -> DeviceDataset:
    """A `DeviceDataset` of random images; options: train_size, val_size, num_classes, in_chans, dtype, seed."""
    check_options("synthetic", options, OPTIONS)
    size = check_img_size("synthetic", DEFAULT_IMG_SIZE if img_size is None else img_size, MIN_IMG_SIZE, MAX_IMG_SIZE)
    train_size, val_size = _positive_int("train_size", train_size), _positive_int("val_size", val_size)
    num_classes, in_chans = _positive_int("num_classes", num_classes, 2), _positive_int("in_chans", in_chans)
    seed = _positive_int("seed", seed, 0)
    if dtype not in DTYPES:
        raise DatasetError(f"synthetic: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    generator = torch.Generator(device).manual_seed(seed)
    train_x = _images(train_size, in_chans, size, dtype, generator, device)
    val_x = _images(val_size, in_chans, size, dtype, generator, device)
    train_y = torch.randint(0, num_classes, (train_size,), generator=generator, device=device)
    val_y = torch.randint(0, num_classes, (val_size,), generator=generator, device=device)
    return DeviceDataset("synthetic", train_x, train_y, val_x, val_y, num_classes,
                         translate=max(1, size // 8), flip=True, pad_mode="constant", device=device)
