"""stability.data on real data: sklearn's digits, small CIFAR files in torchvision's pickle
format, and a tiny PNG image folder, all local (nothing is downloaded).

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
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from stability.data import DatasetError, check_dataset, list_datasets, load_dataset

# --------------------------------------------------------------------------- helpers


def epoch(ds, batch_size, seed, **kw):
    gen = torch.Generator().manual_seed(seed)
    return list(ds.train_batches(batch_size, gen, **kw))


def plan(ds, batch_size, seed, **kw):
    return ds.plan_epoch(batch_size, torch.Generator().manual_seed(seed), **kw)


def translate_reference(raw: torch.Tensor, dy: int, dx: int, pad: int, mode: str) -> torch.Tensor:
    """One image (C, H, W), padded then cropped at (dy, dx): the slow, obvious way."""
    h, w = raw.shape[-2:]
    padded = F.pad(raw[None].float(), (pad, pad, pad, pad), mode=mode)[0]
    return padded[:, dy:dy + h, dx:dx + w]


def assert_one_line_naming(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


# --------------------------------------------------------------------------- registry


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "shards", "synthetic"]


def test_unknown_dataset_lists_choices():
    for call in (lambda: check_dataset("mnist"), lambda: load_dataset("mnist")):
        with pytest.raises(DatasetError) as exc:
            call()
        assert_one_line_naming(exc, "mnist", *list_datasets())


def test_unknown_option_and_bad_img_size():
    with pytest.raises(DatasetError, match="auto_augment"):
        load_dataset("digits", auto_augment=True)
    with pytest.raises(DatasetError, match="img_size"):
        load_dataset("digits", img_size=4)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_sizes_and_shapes(digits):
    ds = digits
    assert (ds.name, ds.num_classes, ds.in_chans, ds.img_size) == ("digits", 10, 1, 16)
    assert ds.train_size + ds.val_size == 1797
    assert 0.19 < ds.val_size / 1797 < 0.21
    x, y = next(iter(ds.train_batches(32, torch.Generator().manual_seed(0))))
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    big = load_dataset("digits", img_size=32)
    x, _ = next(iter(big.train_batches(8, torch.Generator().manual_seed(0))))
    assert x.shape == (8, 1, 32, 32)
    assert torch.equal(big.train_y, ds.train_y)


def test_digits_matches_sklearn_and_resizes_bilinear():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", img_size=8)  # no resize: the raw 0..16 pixels
    bunch = load_digits()
    all_x = torch.cat([ds.train_x, ds.val_x])[:, 0].numpy()
    assert sorted(map(bytes, all_x.astype(np.float64))) == sorted(map(bytes, bunch.images))
    assert ds.train_x.min() == 0 and ds.train_x.max() == 16


def test_digits_split_fixed_and_stratified(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.train_x, again.train_x) and torch.equal(digits.val_x, again.val_x)
    assert torch.equal(digits.train_y, again.train_y) and torch.equal(digits.val_y, again.val_y)
    train_counts = torch.bincount(digits.train_y, minlength=10).float()
    val_counts = torch.bincount(digits.val_y, minlength=10).float()
    frac = val_counts / (train_counts + val_counts)
    assert ((frac - 0.2).abs() < 0.01).all(), frac


def test_digits_normalised_with_train_stats(digits):
    train = digits.normalize(digits.train_x)
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1) < 1e-3
    val = torch.cat([x for x, _ in digits.val_batches(100)])
    assert abs(val.mean().item()) < 0.1 and abs(val.std().item() - 1) < 0.1


def test_digits_val_batches_in_order(digits):
    batches = list(digits.val_batches(100))
    assert [len(y) for _, y in batches] == [100, 100, 100, digits.val_size - 300]
    assert torch.equal(torch.cat([y for _, y in batches]), digits.val_y)
    assert torch.equal(torch.cat([x for x, _ in batches]), digits.normalize(digits.val_x))


def test_digits_epoch_full_batches_each_index_once(digits):
    steps = digits.steps_per_epoch(128)
    assert steps == digits.train_size // 128
    p = plan(digits, 128, 0)
    assert p.indices.shape == (steps, 128)
    flat = p.indices.flatten()
    assert flat.unique().numel() == flat.numel() and flat.max() < digits.train_size
    batches = epoch(digits, 128, 0)
    assert len(batches) == steps and all(len(y) == 128 and len(x) == 128 for x, y in batches)
    assert torch.equal(torch.cat([y for _, y in batches]), digits.train_y[flat])


def test_digits_seeds(digits):
    a, b, c = epoch(digits, 64, 7), epoch(digits, 64, 7), epoch(digits, 64, 8)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    gen = torch.Generator().manual_seed(7)  # consecutive epochs draw fresh permutations
    first, second = (list(digits.train_batches(64, gen)) for _ in range(2))
    assert not torch.equal(first[0][1], second[0][1])


def test_digits_augment_false_is_unshifted(digits):
    p = plan(digits, 64, 3, augment=False)
    assert p.shifts is None and p.flips is None
    for (x, y), idx in zip(epoch(digits, 64, 3, augment=False), p.indices):
        assert torch.equal(x, digits.normalize(digits.train_x[idx]))
        assert torch.equal(y, digits.train_y[idx])


def test_digits_augment_translates_without_flip(digits):
    p = plan(digits, 64, 5)
    pad = digits.img_size // 8
    assert p.flips is None and p.shifts is not None
    assert p.shifts.min() >= 0 and p.shifts.max() <= 2 * pad and p.shifts.unique().numel() == 2 * pad + 1
    x, _ = epoch(digits, 64, 5)[0]
    for i in range(16):
        dy, dx = p.shifts[0, i].tolist()
        ref = translate_reference(digits.train_x[p.indices[0, i]], dy, dx, pad, "constant")
        assert torch.allclose(x[i], digits.normalize(ref[None])[0], atol=1e-6)


def test_digits_rank_shards_disjoint(digits):
    world, bs = 3, 32
    plans = [plan(digits, bs, 11, rank=r, world_size=world) for r in range(world)]
    flat = torch.cat([p.indices.flatten() for p in plans])
    assert flat.unique().numel() == flat.numel()
    assert all(p.steps == digits.steps_per_epoch(bs, world) == (digits.train_size // world) // bs for p in plans)
    for r in range(world):
        batches = epoch(digits, bs, 11, rank=r, world_size=world)
        assert torch.equal(torch.cat([y for _, y in batches]), digits.train_y[plans[r].indices.flatten()])
    # a sample's augmentation depends on its place in the permutation, not on the sharding
    single = plan(digits, 1, 11)
    pos = {int(i): k for k, i in enumerate(single.indices.flatten())}
    for p in plans:
        for i, shift in zip(p.indices.flatten().tolist(), p.shifts.reshape(-1, 2)):
            assert torch.equal(shift, single.shifts.reshape(-1, 2)[pos[i]])
    with pytest.raises(ValueError):
        plan(digits, bs, 0, rank=3, world_size=3)


# --------------------------------------------------------------------------- cifar

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


# --------------------------------------------------------------------------- imagefolder


def write_imagefolder(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(20, 30)), int(rng.integers(20, 30))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))


def test_imagefolder_loads(folder_root):
    check_dataset("imagefolder", str(folder_root))
    ds = load_dataset("imagefolder", root=str(folder_root), img_size=16, num_workers=0)
    assert (ds.num_classes, ds.in_chans, ds.img_size, ds.train_size, ds.val_size) == (2, 3, 16, 8, 4)
    batches = epoch(ds, 3, 0)
    assert len(batches) == ds.steps_per_epoch(3) == 2
    for x, y in batches:
        assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, epoch(ds, 3, 0)))
    assert not torch.equal(batches[0][0], epoch(ds, 3, 1)[0][0])
    val = list(ds.val_batches(3))
    assert [len(y) for _, y in val] == [3, 1]
    assert torch.cat([y for _, y in val]).tolist() == [0, 0, 1, 1]
    assert next(iter(ds.train_batches(2, torch.Generator(), augment=False)))[0].shape == (2, 3, 16, 16)


def test_imagefolder_same_batches_with_workers_and_shards(folder_root):
    serial = load_dataset("imagefolder", root=str(folder_root), img_size=16, num_workers=0, auto_augment=True)
    workers = load_dataset("imagefolder", root=str(folder_root), img_size=16, num_workers=2, auto_augment=True)
    a, b = epoch(serial, 2, 4), epoch(workers, 2, 4)
    assert len(a) == len(b) == 4
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    shards = [plan(serial, 2, 4, rank=r, world_size=2) for r in range(2)]
    flat = [i for s in shards for batch in s for i, _ in batch]
    assert len(flat) == len(set(flat)) == 8


def test_imagefolder_missing(tmp_path):
    for call in (lambda: check_dataset("imagefolder", str(tmp_path)),
                 lambda: load_dataset("imagefolder", root=str(tmp_path))):
        with pytest.raises(DatasetError) as exc:
            call()
        assert_one_line_naming(exc, "imagefolder", str(tmp_path), "train")
    with pytest.raises(DatasetError, match="root"):
        check_dataset("imagefolder", None)


def test_imagefolder_bad_layouts(tmp_path):
    root = write_imagefolder(tmp_path / "a", train_per_class=1, val_per_class=1)
    (root / "val" / "bird").mkdir()
    with pytest.raises(DatasetError) as exc:
        check_dataset("imagefolder", str(root))
    assert_one_line_naming(exc, str(root / "val" / "bird"), "no images")
    Image.new("RGB", (4, 4)).save(root / "val" / "bird" / "0.png")
    check_dataset("imagefolder", str(root))
    with pytest.raises(DatasetError, match="different class folders"):
        load_dataset("imagefolder", root=str(root), num_workers=0)
