"""The input pipeline at scale: pre-decoded shards written from a real JPEG folder and read back
(augmented on the device), damaged or missing shards refused in one line, and decode once per fused
group (members with one data seed share each batch and still equal their trials run alone)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from stability.sweep.__main__ import main as sweep_main

try:  # the S3-compatible server of the object-storage tests (moto), for the shards read from a URI
    from test_object_storage import s3  # noqa: F401
except pytest.skip.Exception:
    pass
from stability.data import DatasetError, check_dataset, load_dataset
from stability.data.prepare import prepare
from stability.data.shards import _Split, crop_boxes, resized_crops
from stability.sampling import plan_trials
from stability.spec import load_spec
from stability.spec.trial import TrialConfig
from stability.train.engine import run_trial
from stability.train.fused import run_fused_trials

COLORS = {"blue": (20, 40, 220), "green": (30, 200, 60), "red": (220, 30, 30)}  # one per class, sorted names
SIZE = 16


def _write_jpegs(root, per_class: dict[str, int]) -> None:
    """ImageNet-style folders of real JPEGs: each class a colour plus noise, sizes and aspects varied."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for label, (name, color) in enumerate(COLORS.items()):
            os.makedirs(root / split / name, exist_ok=True)
            for i in range(n):
                h, w = 18 + 3 * i, 24 + 2 * label
                pixels = np.clip(np.array(color) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"img_{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("input")
    _write_jpegs(root / "src", {"train": 8, "val": 2})
    prepare(str(root / "src"), SIZE, str(root / "shards"), images_per_shard=5)
    return root / "src", root / "shards"


def test_prepare_decodes_every_image_once_into_labelled_uint8_shards(folders):
    _, shards = folders
    index = json.loads((shards / "index.json").read_text())
    assert index["classes"] == sorted(COLORS) and index["size"] == SIZE
    assert [s["count"] for s in index["splits"]["train"]] == [5, 5, 5, 5, 4]  # 24 images, 5 per shard
    data = load_dataset("shards", root=str(shards), img_size=SIZE)
    assert (data.train_size, data.val_size, data.num_classes) == (24, 6, 3)
    images = data._train.gather(np.arange(24))
    labels = data._train.labels
    assert images.dtype == np.uint8 and images.shape == (24, 3, SIZE, SIZE)
    for image, label in zip(images, labels.tolist()):  # each image is its class's colour: labels follow folders
        color = np.array(COLORS[sorted(COLORS)[label]])
        assert np.abs(image.reshape(3, -1).mean(1) - color).max() < 12


def test_prepare_resumes_writing_only_the_missing_shards(folders, tmp_path):
    src, _ = folders
    out = tmp_path / "shards"
    first = prepare(str(src), SIZE, str(out), images_per_shard=5)
    (out / "index.json").unlink()  # a run stopped before its end: no index yet
    (out / "train-00002.npy").unlink()
    (out / "train-00003.npy").write_bytes(b"half a shard")  # a stray write (shards are atomic; records are not checked)
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in ("train-00002.npy", "train-00003.npy")}
    with pytest.raises(DatasetError, match="no readable index.json"):
        check_dataset("shards", str(out))
    seen = []
    again = prepare(str(src), SIZE, str(out), images_per_shard=5, progress=lambda done, total: seen.append(done))
    assert again == first
    assert seen[0] == 30 - 10 and seen[-1] == 30  # the 20 images kept, then the 2 shards written again
    for name, mtime in kept.items():
        if not name.startswith(("train-00002", "train-00003")):
            assert (out / name).stat().st_mtime_ns == mtime, name
    check_dataset("shards", str(out))


def _study_yaml(tmp_path, shards) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(f"""name: on_shards
dataset: {{name: shards, root: {shards}, img_size: 8}}
models: [vit_p_tiny]
optimizers: {{adamw: {{lr: 1.0e-3, weight_decay: 0.05}}}}
samples: 1
epochs: 1
train: {{batch_size: 4}}
""")
    return str(path)


@pytest.mark.parametrize("damage, message", [
    ("index", "no readable index.json under"),
    ("missing", "shard train-00001.npy is missing"),
    ("truncated", "shard train-00001.npy is damaged"),
])
def test_damaged_or_missing_shards_are_one_line_exit_2_before_anything_is_written(folders, tmp_path, damage, message):
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(folders[1], shards)
    target = shards / ("index.json" if damage == "index" else "train-00001.npy")
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
    else:
        target.unlink()
    storage = tmp_path / "runs"
    result = run_main(sweep_main, _study_yaml(tmp_path, shards), "--storage", storage)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (storage / "on_shards").exists()


def test_a_shard_damaged_in_place_is_named_when_it_is_first_read(folders, tmp_path):
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(folders[1], shards)
    target = shards / "train-00001.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # same size, one pixel changed: only the CRC-32 sees it
    target.write_bytes(bytes(data))
    check_dataset("shards", str(shards))  # sizes are right
    dataset = load_dataset("shards", root=str(shards), img_size=8)
    with pytest.raises(DatasetError, match="shard train-00001.npy is damaged"):
        for _ in dataset.train_batches(4, torch.Generator().manual_seed(0)):
            pass


def test_device_augmentation_is_a_seeded_random_resized_crop_and_flip(folders):
    data = load_dataset("shards", root=str(folders[1]), img_size=12)
    a, b, c = (list(data.train_batches(4, torch.Generator().manual_seed(seed))) for seed in (1, 1, 2))
    assert len(a) == 6 and a[0][0].shape == (4, 3, 12, 12) and a[0][0].dtype == torch.float32
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))
    assert not all(torch.equal(x, y) for (x, _), (y, _) in zip(a, c))
    boxes = crop_boxes(20000, torch.Generator().manual_seed(0), 0.08)
    area, aspect = boxes[:, 2] * boxes[:, 3], boxes[:, 2] / boxes[:, 3]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 1 + 1e-6).all()
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    torch.manual_seed(0)  # the same distribution as torchvision's RandomResizedCrop draws
    from torchvision.transforms import RandomResizedCrop

    draws = [RandomResizedCrop.get_params(torch.zeros(3, 200, 200), (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)]
    theirs = torch.tensor([h * w / 200**2 for _, _, h, w in draws])
    assert float(area.mean()) == pytest.approx(float(theirs.mean()), abs=0.03)  # about 3.5 standard errors
    assert aspect.min() >= 3 / 4 - 1e-5 and aspect.max() <= 4 / 3 + 1e-5
    x = torch.rand(3, 3, 10, 10)
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(3, 4)
    torch.testing.assert_close(resized_crops(x, whole, None, 10), x)  # the whole image at its size: itself
    torch.testing.assert_close(resized_crops(x, whole, torch.tensor([True, False, True]), 10),
                               torch.stack([x[0].flip(-1), x[1], x[2].flip(-1)]))
    top_left = torch.tensor([[0.0, 0.0, 0.5, 0.5]]).expand(3, 4)  # a quarter at half the size: its pixels
    torch.testing.assert_close(resized_crops(x, top_left, None, 5), x[:, :, :5, :5])


def test_data_order_repeat_gives_every_trial_of_a_repeat_one_data_seed():
    plan = plan_trials(load_spec("default", ["data_order=repeat"]))
    by_repeat: dict[int, set] = {}
    for cfg in plan:
        by_repeat.setdefault(cfg.repeat, set()).add(cfg.batches_seed)
    assert len({cfg.model for cfg in plan}) > 1 and len({cfg.point for cfg in plan}) > 1
    assert all(len(seeds) == 1 for seeds in by_repeat.values()) and len(by_repeat) == 2
    assert len({next(iter(s)) for s in by_repeat.values()}) == 2
    default = plan_trials(load_spec("default", []))
    assert all(cfg.data_seed is None and cfg.batches_seed == cfg.seed for cfg in default)


def _group(name: str, root: str, data_seed: int | None, **options) -> list[TrialConfig]:
    return [TrialConfig(model="vit_p_tiny", optimizer="adamw", lr=lr, weight_decay=0.05, seed=seed, epochs=2,
                        data_seed=data_seed, dataset={"name": name, "root": root, "img_size": 8, "options": options},
                        train={"batch_size": 4, "warmup_epochs": 1})
            for lr, seed in ((1e-3, 1), (3e-3, 2), (2e-3, 3))]


@pytest.mark.parametrize("dataset", ["shards", "imagefolder"])
def test_a_fused_group_with_one_data_seed_reads_each_batch_once_and_equals_its_trials_alone(
        folders, monkeypatch, dataset):
    src, shards = folders
    options = {"num_workers": 0} if dataset == "imagefolder" else {}
    cfgs = _group(dataset, str(shards if dataset == "shards" else src), data_seed=11, **options)
    reads = []
    if dataset == "shards":
        gather = _Split.gather
        monkeypatch.setattr(_Split, "gather", lambda self, idx, out=None: reads.append(len(idx)) or gather(self, idx, out))
    else:
        from stability.data.imagefolder import _SeededImages

        item = _SeededImages.__getitem__
        monkeypatch.setattr(_SeededImages, "__getitem__", lambda self, key: reads.append(key[1] is not None)
                            or item(self, key))
    fused = run_fused_trials(cfgs, device="cpu")
    train_reads = sum(reads) if dataset == "imagefolder" else sum(n for n in reads if n == 4)
    assert train_reads == 2 * 24  # 2 epochs of the 24 training images, once for the 3 members
    alone = [run_trial(cfg, device="cpu") for cfg in cfgs]
    for f, a in zip(fused, alone):
        assert f["status"] == a["status"] == "ok"
        assert f["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert [p["train_loss"] for p in f["curve"]] == pytest.approx([p["train_loss"] for p in a["curve"]], rel=1e-6)
        assert f["top1_err"] == a["top1_err"]
    other = run_trial(cfgs[0].model_copy(update={"data_seed": 12}), device="cpu")
    assert other["curve"][0]["train_loss"] != pytest.approx(alone[0]["curve"][0]["train_loss"], rel=1e-6)


def test_shards_on_object_storage_read_as_the_local_ones(folders, request):
    """Prepared straight to an S3 URI (a real S3-compatible server on localhost), then read back:
    the same batches as the local shards; a missing object is named in one line."""
    pytest.importorskip("moto")
    s3 = request.getfixturevalue("s3")
    src, local = folders
    prefix = f"stability-test/shards-{os.getpid()}"
    remote = f"s3://{prefix}?{s3['query']}"
    prepare(str(src), SIZE, remote, images_per_shard=5, workers=2)
    check_dataset("shards", remote)
    here, there = (load_dataset("shards", root=root, img_size=8) for root in (str(local), remote))
    for (x, y), (u, v) in zip(here.train_batches(4, torch.Generator().manual_seed(3)),
                              there.train_batches(4, torch.Generator().manual_seed(3))):
        assert torch.equal(x, u) and torch.equal(y, v)
    s3["fs"].delete_file(f"{prefix}/val-00001.npy")
    with pytest.raises(DatasetError, match=r"shard val-00001.npy is missing") as info:
        check_dataset("shards", remote)
    assert "\n" not in str(info.value)


def test_imagefolder_epochs_read_at_once_with_worker_processes_each_get_their_own_batches(folders):
    """A fused group whose members have their own data seeds reads K epochs at once from one loader;
    its persistent worker served one epoch at a time (the second epoch took over the first's)."""
    from stability.data.imagefolder import ImageFolderDataset

    data = ImageFolderDataset(str(folders[0]), 8, torch.device("cpu"), num_workers=1)
    alone = [[x for x, _ in data.train_batches(4, torch.Generator().manual_seed(seed))] for seed in (1, 2)]
    together = list(zip(*(data.train_batches(4, torch.Generator().manual_seed(seed)) for seed in (1, 2))))
    assert len(together) == len(alone[0]) == 6
    for step, pair in enumerate(together):
        assert torch.equal(pair[0][0], alone[0][step]) and torch.equal(pair[1][0], alone[1][step])
    assert not torch.equal(alone[0][0], alone[1][0])
