"""Input pipeline per CPU core, side by side in one run, and the CPU cores one H200 needs each way.

Writes a JPEG folder (N images of 500x375, quality 90, smooth content of ImageNet-like file size),
prepares shards from it (`stability.data.prepare`), then measures training images delivered per
CPU-second (process CPU time, one torch thread, no worker processes: a per-core figure that a busy
machine's other load does not inflate) for:

  today        the imagefolder loader: JPEG decode + RandomResizedCrop + flip per image, per trial
               (a fused group of K today decodes its own copy for each member)
  once (K)     the same loader read once per fused group of K members with one data seed
               (`data_order: repeat`): each decoded batch trains K trials
  shards       pre-decoded uint8 shards: the host gathers batches (memory copies); the crop, resize and
               flip run on the trial's device (timed apart here, on the CPU, as `shards+aug (cpu)`)
  shards, once (K)  both

and projects the CPU cores needed to feed one H200 at the 40% MFU target for vit_p_1gf and vit_p_4gf
(about 52,000 and 13,000 images/s: 40% of an H200's ~790 TFLOP/s dense bf16 over ~24 GFLOP per image
of vit_p_4gf forward+backward, and four times that for the 1 GF model). Prints `ratio shards/today per core: X`.

    python -m benchmarks.input_pipeline            # 192 JPEGs, 224 px crops from 256 px shards, K = 8
    (or: python -m benchmarks input ...)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.table import print_table

H200_IMAGES_PER_S = {"vit_p_1gf": 52_000, "vit_p_4gf": 13_000}  # 40% MFU of one H200 (docstring)


def write_jpegs(root: Path, n: int, classes: int = 4, width: int = 500, height: int = 375, seed: int = 0) -> float:
    """n JPEGs under root/{train,val}/<class>/ (val: one per class); returns their mean size in KB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    sizes = []
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            folder = root / split / f"class_{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            f = rng.uniform(2, 12, (3, 2))  # smooth waves plus grain: the size of a natural photo's JPEG
            phase = rng.uniform(0, 6.3, 3)
            waves = np.stack([np.sin(f[c, 0] * xx * 6.3 + phase[c]) * np.cos(f[c, 1] * yy * 6.3) for c in range(3)], -1)
            pixels = 127 + 90 * waves + rng.normal(0, 14, (height, width, 3))
            path = folder / f"{split}_{i:05d}.jpg"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1024


def cpu_rate(epoch, images: int, repeats: int) -> float:
    """Median of `repeats` timings of `epoch()` (after one untimed warm-up) as images per CPU-second."""
    epoch()
    rates = []
    for _ in range(repeats):
        start = time.process_time()
        epoch()
        rates.append(images / (time.process_time() - start))
    return statistics.median(rates)


def measure(src: Path, shards: Path, img_size: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Distinct training images per CPU-second of each way of reading (before K multiplies them)."""
    from stability.data.imagefolder import ImageFolderDataset
    from stability.data.shards import ShardDataset

    cpu = torch.device("cpu")
    folder = ImageFolderDataset(str(src), img_size, cpu, num_workers=0)
    stored = ShardDataset(str(shards), img_size, cpu)
    steps = folder.steps_per_epoch(batch_size)
    images = steps * batch_size
    generator = torch.Generator().manual_seed(0)

    def jpeg_epoch():
        for _ in folder.train_batches(batch_size, generator):
            pass

    def shard_host_epoch():  # what the host does when the augmentation runs on the GPU: plan, gather, labels
        perm = torch.randperm(stored.train_size, generator=generator)
        for step in range(steps):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            torch.from_numpy(stored._train.gather(idx.numpy())), stored._train.labels[idx]

    def shard_cpu_epoch():  # the whole path with the augmentation on the CPU (a CPU-only trial)
        for _ in stored.train_batches(batch_size, generator):
            pass

    return {"jpeg": cpu_rate(jpeg_epoch, images, repeats), "shards": cpu_rate(shard_host_epoch, images, repeats),
            "shards_cpu_aug": cpu_rate(shard_cpu_epoch, images, repeats)}


def rows(rates: dict[str, float], k: int) -> list[tuple[str, float]]:
    """(way, training images per CPU-second) for each way."""
    return [("today (imagefolder, a decode per trial)", rates["jpeg"]),
            (f"decode once per group (K = {k})", rates["jpeg"] * k),
            ("shards (host: gather; augmentation on the device)", rates["shards"]),
            (f"shards, once per group (K = {k})", rates["shards"] * k),
            ("shards+aug (cpu: augmentation on the CPU too)", rates["shards_cpu_aug"])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="training JPEGs to write (default 192)")
    parser.add_argument("--img-size", type=int, default=224, help="training crop size (default 224)")
    parser.add_argument("--shard-size", type=int, default=256, help="short side S of the shards (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("-k", type=int, default=8, help="members of a fused group (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per way; the median is shown")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.images, args.img_size, args.shard_size, args.batch_size, args.k, args.repeats) < 1:
        print("error: every option must be a positive integer", file=sys.stderr)
        return 2
    if args.batch_size > args.images:
        print(f"error: --batch-size {args.batch_size} exceeds --images {args.images}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # per core
    from stability.data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="input-bench-") as tmp:
        src, shards = Path(tmp) / "jpeg", Path(tmp) / "shards"
        kb = write_jpegs(src, args.images)
        start = time.process_time()
        prepare(str(src), args.shard_size, str(shards), images_per_shard=64, workers=1)
        prepare_rate = (args.images + 4) / (time.process_time() - start)
        rates = measure(src, shards, args.img_size, args.batch_size, args.repeats)
    table = rows(rates, args.k)
    today = table[0][1]
    print(f"{args.images} JPEGs of 500x375 ({kb:.0f} KB mean, quality 90) -> {args.img_size} px crops, batch "
          f"{args.batch_size}; shards at {args.shard_size} px (prepared once at {prepare_rate:.0f} images per "
          f"CPU-second); one torch thread, CPU time of this process; {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {datetime.date.today()}")
    header = ("way", "images/s per core", "x today", *(f"cores per H200, {m}" for m in H200_IMAGES_PER_S))
    print_table("Input pipeline per CPU core", header,
                [(way, f"{rate:,.0f}", f"{rate / today:.1f}x",
                  *(f"{need / rate:,.1f}" for need in H200_IMAGES_PER_S.values())) for way, rate in table])
    print(f"ratio shards/today per core: {rates['shards'] / today:.1f}x (target >= 10x)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": "python -m benchmarks.input_pipeline " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": str(datetime.date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "jpeg_kb": kb, "prepare_images_per_cpu_s": prepare_rate, "images_per_cpu_s": dict(table),
            "cores_per_h200": {m: {way: need / rate for way, rate in table} for m, need in H200_IMAGES_PER_S.items()},
        }, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
