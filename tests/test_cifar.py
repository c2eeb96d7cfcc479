"""stability.data on small CIFAR files in torchvision's pickle format, written here (nothing is
downloaded).

CIFAR checksums: torchvision's CIFAR10/CIFAR100 verify each file against the md5 listed in
the class attributes `train_list`, `test_list` and `meta`. The fixtures write small batches
in exactly torchvision's format and patch those class attributes (pytest's monkeypatch,
undone after each test) with the md5 sums of the files they wrote, so the library's real
code path (torchvision.datasets.CIFAR10/100 reading the pickles) is what gets tested. A test
without the patch shows that a checksum mismatch becomes a DatasetError.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from stability.data import DatasetError, check_dataset, load_dataset
from test_data import assert_one_line_naming, epoch, plan, translate_reference

CIFAR_TRAIN_PER_FILE = 4


def _dump(path: Path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G, B


def write_cifar10(root: Path, rng: np.random.Generator):
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    train_list, data, labels = [], [], []
    for name, _ in CIFAR10.train_list:
        x, y = _images(rng, CIFAR_TRAIN_PER_FILE), rng.integers(0, 10, CIFAR_TRAIN_PER_FILE).tolist()
        train_list.append([name, _dump(folder / name, {"batch_label": name, "labels": y, "data": x})])
        data.append(x)
        labels += y
    x, y = _images(rng, 6), rng.integers(0, 10, 6).tolist()
    test_list = [["test_batch", _dump(folder / "test_batch", {"batch_label": "test", "labels": y, "data": x})]]
    meta = {"filename": "batches.meta", "key": "label_names",
            "md5": _dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})}
    return train_list, test_list, meta, (np.concatenate(data), np.array(labels), x, np.array(y))


def write_cifar100(root: Path, rng: np.random.Generator):
    folder = root / CIFAR100.base_folder
    folder.mkdir(parents=True)
    arrays = {}
    lists = {}
    for split, n in (("train", 12), ("test", 5)):
        x, y = _images(rng, n), rng.integers(0, 100, n).tolist()
        entry = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": split,
                 "fine_labels": y, "coarse_labels": [v // 5 for v in y], "data": x}
        lists[split] = [[split, _dump(folder / split, entry)]]
        arrays[split] = (x, np.array(y))
    meta = {"filename": "meta", "key": "fine_label_names",
            "md5": _dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                           "coarse_label_names": [f"k{i}" for i in range(20)]})}
    return lists["train"], lists["test"], meta, (*arrays["train"], *arrays["test"])


def _cifar_root(tmp_path, monkeypatch, writer, cls, seed):
    """Write tiny CIFAR files and point torchvision's md5 table at them."""
    train_list, test_list, meta, arrays = writer(tmp_path, np.random.default_rng(seed))
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    monkeypatch.setattr(cls, "meta", meta)
    return tmp_path, arrays


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    return _cifar_root(tmp_path, monkeypatch, write_cifar10, CIFAR10, seed=0)


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    return _cifar_root(tmp_path, monkeypatch, write_cifar100, CIFAR100, seed=1)


def _nchw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32))


def test_cifar10_loads_like_the_files(cifar10_root):
    root, (train_x, train_y, val_x, val_y) = cifar10_root
    check_dataset("cifar10", str(root))
    ds = load_dataset("cifar10", root=str(root))
    assert (ds.name, ds.num_classes, ds.in_chans, ds.img_size) == ("cifar10", 10, 3, 32)
    assert (ds.train_size, ds.val_size) == (5 * CIFAR_TRAIN_PER_FILE, 6)
    assert ds.train_x.dtype == torch.uint8
    assert torch.equal(ds.train_x, _nchw(train_x)) and torch.equal(ds.train_y, torch.from_numpy(train_y))
    raw_val = _nchw(val_x).double()
    mean = _nchw(train_x).double().mean(dim=(0, 2, 3), keepdim=True)
    std = _nchw(train_x).double().std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    x, y = zip(*ds.val_batches(4))
    assert [len(v) for v in y] == [4, 2]
    assert torch.allclose(torch.cat(x).double(), (raw_val - mean) / std, atol=1e-4)
    assert torch.equal(torch.cat(y), torch.from_numpy(val_y))


def test_cifar10_augmentation_crops_and_flips(cifar10_root):
    root, _ = cifar10_root
    ds = load_dataset("cifar10", root=str(root))
    p = plan(ds, 8, 2)
    assert p.flips is not None and p.flips.any() and not p.flips.all()
    assert p.shifts.max() <= 8
    batches = epoch(ds, 8, 2)
    assert len(batches) == ds.steps_per_epoch(8) == 2
    for step, (x, _) in enumerate(batches):
        for i in range(8):
            dy, dx = p.shifts[step, i].tolist()
            ref = translate_reference(ds.train_x[p.indices[step, i]], dy, dx, 4, "reflect")
            if p.flips[step, i]:
                ref = ref.flip(-1)
            assert torch.allclose(x[i], ds.normalize(ref[None])[0], atol=1e-5)
    same = epoch(ds, 8, 2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, same))
    plain = epoch(ds, 8, 2, augment=False)
    idx = plan(ds, 8, 2, augment=False).indices[0]
    assert torch.equal(plain[0][0], ds.normalize(ds.train_x[idx]))


def test_cifar10_resized(cifar10_root):
    root, _ = cifar10_root
    ds = load_dataset("cifar10", root=str(root), img_size=16)
    assert ds.img_size == 16 and ds.translate == 2
    x, y = next(iter(ds.train_batches(4, torch.Generator().manual_seed(0))))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,)
    assert next(iter(ds.val_batches(100)))[0].shape == (6, 3, 16, 16)


def test_cifar100_loads(cifar100_root):
    root, (train_x, train_y, val_x, val_y) = cifar100_root
    check_dataset("cifar100", str(root))
    ds = load_dataset("cifar100", root=str(root))
    assert (ds.num_classes, ds.train_size, ds.val_size) == (100, 12, 5)
    assert torch.equal(ds.train_x, _nchw(train_x)) and torch.equal(ds.val_y, torch.from_numpy(val_y))
    x, y = epoch(ds, 4, 0)[0]
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64


def test_cifar_checksum_mismatch_is_a_dataset_error(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))  # torchvision's real md5 sums: no match
    check_dataset("cifar10", str(tmp_path))  # the fast check only looks for the files
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", root=str(tmp_path))
    assert_one_line_naming(exc, "cifar10", str(tmp_path), "corrupted")


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing(tmp_path, name, folder):
    for call in (lambda: check_dataset(name, str(tmp_path)), lambda: load_dataset(name, root=str(tmp_path))):
        with pytest.raises(DatasetError) as exc:
            call()
        assert_one_line_naming(exc, name, str(tmp_path), folder, "download", "https://www.cs.toronto.edu/~kriz/cifar.html")


def test_cifar_partial_folder_names_missing_file(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    with pytest.raises(DatasetError) as exc:
        check_dataset("cifar10", str(tmp_path))
    assert_one_line_naming(exc, "data_batch_2")
