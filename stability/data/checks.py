"""Dataset checks that need no torch: the error type, the default root, option and size checks, and
what is known of each dataset before it is loaded (image sizes, options, training-set size, shape).

Kept apart from `base` so that validating a study (the sweep driver, `--dry-run`) does not import torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


class DatasetError(ValueError):
    """A dataset is missing, unreadable or misconfigured; the message is one line."""


def default_root() -> str:
    """Where datasets are looked for when no root is given: $STABILITY_DATA or ~/data."""
    return os.path.abspath(os.path.expanduser(os.environ.get("STABILITY_DATA", "~/data")))


def check_options(name: str, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise DatasetError(f"{name}: unknown dataset option(s) {', '.join(unknown)}; valid: {valid}")


def check_img_size(name: str, img_size: int, lo: int, hi: int) -> int:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or not lo <= img_size <= hi:
        raise DatasetError(f"{name}: img_size must be an integer in [{lo}, {hi}], got {img_size!r}")
    return img_size


@dataclass(frozen=True)
class DatasetFacts:
    """What a dataset's loader will do, known without loading it (tests/test_validation.py compares
    these with the loaders). None: known only once the files are read."""

    img_size: int  # default input resolution
    min_img_size: int
    max_img_size: int
    options: tuple[str, ...]  # loader options (dataset.options)
    train_size: int | None  # images in the training split
    num_classes: int | None
    in_chans: int


SYNTHETIC_OPTIONS = ("train_size", "val_size", "num_classes", "in_chans", "dtype", "seed")
DATASET_FACTS: dict[str, DatasetFacts] = {
    # digits: 1797 images, a fixed stratified 20% validation split leaves 1438 to train on
    "digits": DatasetFacts(16, 8, 64, (), 1438, 10, 1),
    "cifar10": DatasetFacts(32, 8, 256, (), 50000, 10, 3),
    "cifar100": DatasetFacts(32, 8, 256, (), 50000, 100, 3),
    "synthetic": DatasetFacts(224, 8, 1024, SYNTHETIC_OPTIONS, 2048, 1000, 3),
    "imagefolder": DatasetFacts(224, 8, 1024, ("num_workers", "auto_augment", "min_scale"), None, None, 3),
    "shards": DatasetFacts(224, 8, 1024, ("min_scale",), None, None, 3),
}


def _facts(name: str) -> DatasetFacts | None:
    return DATASET_FACTS.get(name)


def resolve_img_size(name: str, img_size: int | None) -> int | None:
    """The input resolution a trial will train at: dataset.img_size, else the dataset's default.
    DatasetError naming dataset.img_size when the dataset does not take it (None: unknown dataset)."""
    facts = _facts(name)
    if facts is None:
        return img_size
    if img_size is None:
        return facts.img_size
    try:
        return check_img_size(name, img_size, facts.min_img_size, facts.max_img_size)
    except DatasetError:
        raise DatasetError(f"dataset.img_size: {name} takes {facts.min_img_size} to {facts.max_img_size} px, "
                           f"got {img_size!r}") from None


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """dataset.options must be options of this dataset's loader."""
    facts = _facts(name)
    if facts is None:
        return
    try:
        check_options(name, options, facts.options)
    except DatasetError as exc:
        raise DatasetError(f"dataset.options: {exc}") from None


def _option(options: dict[str, Any], key: str, default: int | None) -> int | None:
    """An integer option as the loader will read it; None when it is not a positive integer (the
    loader reports that itself)."""
    value = options.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def data_shape(name: str, img_size: int | None, options: dict[str, Any]) -> dict[str, int | None]:
    """num_classes, img_size and in_chans of the data a trial will see (None where unknown)."""
    facts = _facts(name)
    if facts is None:
        return {"num_classes": None, "img_size": img_size, "in_chans": None}
    if name == "synthetic":
        return {"num_classes": _option(options, "num_classes", facts.num_classes), "img_size": img_size,
                "in_chans": _option(options, "in_chans", facts.in_chans)}
    return {"num_classes": facts.num_classes, "img_size": img_size, "in_chans": facts.in_chans}


def train_images(name: str, options: dict[str, Any]) -> int | None:
    """Images in the training split, when known without reading the files (else None)."""
    facts = _facts(name)
    if facts is None:
        return None
    if name == "synthetic":
        return _option(options, "train_size", facts.train_size)
    return facts.train_size


def check_batch_size(name: str, options: dict[str, Any], batch_size: int, workers: int = 1) -> None:
    """train.batch_size must split evenly over the workers and leave every worker at least one full
    batch of training images per epoch (skipped where the training-set size is unknown)."""
    if workers > 1 and batch_size % workers:
        raise DatasetError(f"train.batch_size: {batch_size} is not divisible by resources.workers_per_trial={workers}")
    n = train_images(name, options)
    if n is not None and (n // workers) // (batch_size // workers) < 1:
        raise DatasetError(f"train.batch_size: {batch_size} exceeds the {n} training images of {name}; "
                           f"use at most {n - n % workers}")
