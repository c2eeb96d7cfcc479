"""stability.data on real data: sklearn's digits and a tiny PNG image folder, all local (nothing
is downloaded). CIFAR in torchvision's format: tests/test_cifar.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

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
