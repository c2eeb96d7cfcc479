"""CIFAR-10 / CIFAR-100 in torchvision's on-disk format, held whole on the device as uint8.

Files are read with `torchvision.datasets.CIFAR10/100` (which verifies their md5 sums and,
only when the caller passes download=True, downloads them). The decoded arrays are cached
in-process (one dataset) so that trials reusing a worker process do not re-read and
re-verify 170 MB per trial.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.datasets import CIFAR10, CIFAR100

from stability.data.base import DatasetError, DeviceDataset, check_img_size, check_options, default_root

CIFAR_CLASSES = {"cifar10": CIFAR10, "cifar100": CIFAR100}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
DEFAULT_IMG_SIZE = 32
MIN_IMG_SIZE, MAX_IMG_SIZE = 8, 256


def _files(name: str) -> list[str]:
    cls = CIFAR_CLASSES[name]
    return [entry[0] for entry in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _how_to_get(name: str) -> str:
    return f"set dataset.download: true or fetch it from {URL}"


def check_cifar(name: str, root: str | None) -> None:
    """Every file torchvision will open exists and is readable (no checksum: that is slow)."""
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    folder = os.path.join(root, CIFAR_CLASSES[name].base_folder)
    for filename in _files(name):
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise DatasetError(f"{name} not found under {root}: expected {path}; {_how_to_get(name)}")
        if not os.access(path, os.R_OK):
            raise DatasetError(f"{name} under {root}: {path} is not readable (check its permissions)")


def _read(name: str, root: str, download: bool) -> tuple[np.ndarray, ...]:
    cls = CIFAR_CLASSES[name]
    folder = os.path.join(root, cls.base_folder)
    if not download:
        check_cifar(name, root)
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=False)
    except RuntimeError as exc:  # torchvision: missing file or md5 mismatch
        raise DatasetError(f"{name} under {root}: {folder} is missing or corrupted ({exc}); {_how_to_get(name)}") from None
    except OSError as exc:  # unreadable file, or a failed download (URLError is an OSError)
        what = "could not be downloaded" if download else "could not be read"
        raise DatasetError(f"{name} under {root}: {folder} {what} ({exc}); fetch it from {URL}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
        raise DatasetError(f"{name} under {root}: {folder} is not in torchvision's CIFAR format ({exc!r}); "
                           f"{_how_to_get(name)}") from None

    def nchw(data: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(data.transpose(0, 3, 1, 2))  # stored HWC by torchvision

    return (nchw(train.data), np.asarray(train.targets, np.int64),
            nchw(test.data), np.asarray(test.targets, np.int64))


@lru_cache(maxsize=1)
def _read_cached(name: str, root: str, stamp: tuple) -> tuple[np.ndarray, ...]:
    return _read(name, root, download=False)


def _stamp(name: str, root: str) -> tuple:
    """Sizes and mtimes of the files: a changed file invalidates the in-process cache."""
    folder = os.path.join(root, CIFAR_CLASSES[name].base_folder)
    out = []
    for filename in _files(name):
        try:
            st = os.stat(os.path.join(folder, filename))
            out.append((filename, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((filename, None, None))
    return tuple(out)


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W) images (antialiased when shrinking), back to uint8."""
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8, device=x.device)
    shrink = size < x.shape[-1]
    for start in range(0, x.shape[0], chunk):
        part = F.interpolate(x[start:start + chunk].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=shrink)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def load_cifar(name: str, root: str | None, img_size: int | None, device: torch.device,
               download: bool = False, **options) -> DeviceDataset:
    check_options(name, options, ())
    size = check_img_size(name, DEFAULT_IMG_SIZE if img_size is None else img_size, MIN_IMG_SIZE, MAX_IMG_SIZE)
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    if download:
        arrays = _read(name, root, download=True)
    else:
        check_cifar(name, root)
        arrays = _read_cached(name, root, _stamp(name, root))
    train_x, train_y, val_x, val_y = (torch.from_numpy(a).to(device) for a in arrays)
    if size != train_x.shape[-1]:
        train_x, val_x = _resize_uint8(train_x, size), _resize_uint8(val_x, size)
    translate = max(1, round(4 * size / 32))
    return DeviceDataset(name, train_x, train_y, val_x, val_y, NUM_CLASSES[name],
                         translate=translate, flip=True, pad_mode="reflect", device=device)
