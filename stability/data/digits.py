"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), no download."""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from stability.data.base import DatasetError, DeviceDataset, check_img_size, check_options

DEFAULT_IMG_SIZE = 16
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 64
VAL_FRACTION = 0.2


def _bundled_csv() -> str | None:
    """Path of the CSV that sklearn.datasets.load_digits() reads, found without importing
    scikit-learn (its import costs seconds, a large share of a small digits trial)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = os.path.join(base, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float32 in 0..16, labels int64): the data of load_digits()."""
    path = _bundled_csv()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    try:  # an unusual install layout: go through the public function
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError(f"digits needs scikit-learn (pip install scikit-learn): {exc}") from None
    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def fixed_split(labels: np.ndarray, val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split that depends on nothing but the labels' order (no seed).

    Within each class, round(val_fraction * n) samples evenly spaced through the class's
    samples (in file order) go to validation; the rest train. Returns sorted index arrays.
    """
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        k = int(round(val_fraction * len(members)))
        picks = ((np.arange(k) + 0.5) * len(members) / k).astype(np.int64)
        val.append(members[picks])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def load_digits_dataset(img_size: int | None, device: torch.device, **options) -> DeviceDataset:
    check_options("digits", options, ())
    size = check_img_size("digits", DEFAULT_IMG_SIZE if img_size is None else img_size, MIN_IMG_SIZE, MAX_IMG_SIZE)
    images, labels = _raw()
    x = torch.from_numpy(images).unsqueeze(1).to(device)  # (N, 1, 8, 8), values 0..16
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels).to(device)
    train_idx, val_idx = (torch.from_numpy(i).to(device) for i in fixed_split(labels))
    return DeviceDataset("digits", x[train_idx], y[train_idx], x[val_idx], y[val_idx], 10,
                         translate=size // 8, flip=False, pad_mode="constant", device=device)
