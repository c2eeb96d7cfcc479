"""Datasets for the trial engine: digits, CIFAR-10/100, synthetic (held on the device), image folders and
pre-decoded shards of them (`python -m stability.data prepare`, `stability.data.shards`).

Public API (the engine and the spec validation code against it):

- `list_datasets()` -> names; `check_dataset(name, root)` -> fast existence check (raises
  `DatasetError`); `load_dataset(name, root, img_size, device, download, **options)` -> a
  dataset with `name, num_classes, in_chans, img_size, train_size, val_size`,
  `train_batches(batch_size, generator, *, augment, rank, world_size)`,
  `val_batches(batch_size)` and `steps_per_epoch(batch_size, world_size)`.

`batch_size` is per rank: with world_size ranks each takes a disjoint shard of the epoch's
permutation (DistributedSampler style, drop_last) and yields only full batches.

Nothing is downloaded unless the caller passes download=True (CIFAR only). Without a root,
CIFAR is looked for under $STABILITY_DATA or ~/data; imagefolder and shards always need a root.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from stability.data.checks import DatasetError, default_root

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = ["DATASETS", "Dataset", "DatasetError", "DeviceDataset", "EpochPlan", "check_dataset",
           "default_root", "list_datasets", "load_dataset"]

DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "shards", "synthetic")


class Dataset(Protocol):
    """What `load_dataset` returns (DeviceDataset, ImageFolderDataset or ShardDataset)."""

    name: str
    num_classes: int
    in_chans: int
    img_size: int
    train_size: int
    val_size: int

    def train_batches(self, batch_size: int, generator: torch.Generator, *, augment: bool = True,
                      rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]: ...

    def val_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int: ...


def __getattr__(name: str) -> Any:
    """DeviceDataset and EpochPlan load torch: imported on first use, so checks stay torch-free."""
    if name in ("DeviceDataset", "EpochPlan"):
        from stability.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_datasets() -> list[str]:
    return list(DATASETS)


def _known(name: str) -> str:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    return name


def check_dataset(name: str, root: str | None = None) -> None:
    """Fast check that the dataset's files are there and readable; nothing is loaded."""
    _known(name)
    if name in ("digits", "synthetic"):
        return
    if name in ("cifar10", "cifar100"):
        from stability.data.cifar import check_cifar

        check_cifar(name, root)
    elif name == "shards":
        from stability.data.shard_index import check_shards

        check_shards(root)
    else:
        from stability.data.imagefolder import check_imagefolder

        check_imagefolder(root)


def load_dataset(name: str, root: str | None = None, img_size: int | None = None,
                 device: str | torch.device = "cpu", download: bool = False, **options) -> Dataset:
    """Load a dataset onto `device`; see the module docstring for the returned interface."""
    import torch

    _known(name)
    device = torch.device(device)
    if name == "digits":
        from stability.data.digits import load_digits_dataset

        return load_digits_dataset(img_size, device, **options)
    if name == "synthetic":
        from stability.data.synthetic import load_synthetic

        return load_synthetic(img_size, device, **options)
    if name in ("cifar10", "cifar100"):
        from stability.data.cifar import load_cifar

        return load_cifar(name, root, img_size, device, download=download, **options)
    if name == "shards":
        from stability.data.shards import load_shards

        return load_shards(root, img_size, device, download=download, **options)
    from stability.data.imagefolder import load_imagefolder

    return load_imagefolder(root, img_size, device, download=download, **options)
