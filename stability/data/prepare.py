"""Write pre-decoded shards from an ImageNet-style folder (`python -m stability.data prepare`).

SRC/train/<class>/*.jpg and SRC/val/<class>/... become, under DST (a local folder or a `pyarrow.fs`
URI), `<split>-NNNNN.npy` shards of `images_per_shard` uint8 images (3, S, S): each image decoded
once (JPEG at the reduced scale its DCT allows, `PIL.Image.draft`), resized to short side S and
cropped to its central square. Files are listed in sorted order, so shard i always holds the same
images. Each shard is written atomically (a temporary name then a rename; one PUT on object
storage), then its `.json` record (count, bytes, CRC-32, labels, a hash of its sources and S); a
shard whose record matches is kept, so a run stopped part-way resumes where it stopped.
`index.json` is written last and names every shard: its presence means the folder is complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from stability.data.checks import DatasetError
from stability.data.shard_index import (FORMAT, INDEX, SPLITS, VERSION, file_sizes, shard_name, shards_folder, short,
                                        shown)
from stability.results.files import atomic_write_bytes as write_bytes

MIN_SIZE, MAX_SIZE = 8, 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Job:
    """One shard to write: its split, number and source images (path, label)."""

    split: str
    number: int
    items: tuple[tuple[str, int], ...]
    size: int

    @property
    def file(self) -> str:
        return shard_name(self.split, self.number)

    @property
    def sources(self) -> str:
        """What the shard is made of: its image paths (relative to SRC), labels and S."""
        blob = json.dumps([self.size, [(os.path.basename(os.path.dirname(p)), os.path.basename(p), y)
                                       for p, y in self.items]])
        return hashlib.sha1(blob.encode()).hexdigest()


def list_images(src: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Class names and, per split, the sorted (path, label) list; DatasetError when SRC is not
    ImageNet-style (train/ and val/ with the same class folders, each holding images)."""
    classes = None
    splits: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        folder = os.path.join(src, split)
        try:
            found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
        except OSError as exc:
            raise DatasetError(f"prepare: {folder} is not a readable folder ({short(exc)}); SRC must hold "
                               f"train/<class>/*.jpg and val/<class>/...") from None
        if not found:
            raise DatasetError(f"prepare: {folder} has no class folders; SRC must hold train/<class>/*.jpg and "
                               f"val/<class>/...")
        if classes is not None and found != classes:
            missing = sorted(set(found) ^ set(classes))
            raise DatasetError(f"prepare: train/ and val/ of {src} have different class folders "
                               f"(not in both: {', '.join(missing[:5])})")
        classes = found
        items = []
        for label, name in enumerate(classes):
            files = sorted(f for f in os.listdir(os.path.join(folder, name)) if f.lower().endswith(IMAGE_SUFFIXES))
            items += [(os.path.join(folder, name, f), label) for f in files]
        if not items:
            raise DatasetError(f"prepare: {folder} holds no images ({', '.join(IMAGE_SUFFIXES[:3])}, ...)")
        splits[split] = items
    return classes, splits


def decode(path: str, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size): short side resized to size, central square kept."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still >= size
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def write_shard(job: Job, dst: str) -> dict:
    """Decode, write the shard then its record; returns the record (what index.json lists)."""
    images = np.empty((len(job.items), 3, job.size, job.size), dtype=np.uint8)
    for i, (path, _) in enumerate(job.items):
        try:
            images[i] = decode(path, job.size)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"prepare: cannot decode {path} ({short(exc)}); remove or replace it") from None
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    data = buffer.getvalue()
    record = {"file": job.file, "count": len(job.items), "bytes": len(data), "crc32": zlib.crc32(data),
              "labels": [y for _, y in job.items], "sources": job.sources}
    folder = shards_folder(dst)
    write_bytes(folder / job.file, data)
    write_bytes(folder / (job.file[:-4] + ".json"), json.dumps(record).encode())
    return record


def _done(job: Job, dst: str, sizes: dict[str, int]) -> dict | None:
    """The shard's record when the shard is already written for these sources (else None)."""
    record_name = job.file[:-4] + ".json"
    if record_name not in sizes or job.file not in sizes:
        return None
    try:
        record = json.loads((shards_folder(dst) / record_name).read_text())
    except (OSError, ValueError):
        return None
    if record.get("sources") != job.sources or record.get("bytes") != sizes[job.file]:
        return None
    return record


def plan_jobs(splits: dict[str, list[tuple[str, int]]], size: int, images_per_shard: int) -> list[Job]:
    return [Job(split, i // images_per_shard, tuple(items[i:i + images_per_shard]), size)
            for split, items in splits.items() for i in range(0, len(items), images_per_shard)]


def prepare(src: str, size: int, dst: str, *, images_per_shard: int = 1024, workers: int = 1,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the shards of SRC under DST (keeping those already written) and then index.json.
    `progress(done_images, total_images)` after each shard. Returns the index."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DatasetError(f"prepare: --size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    classes, splits = list_images(os.path.abspath(os.path.expanduser(src)))
    try:
        folder = shards_folder(dst)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"prepare: --out {shown(dst)}: {short(exc)}") from None
    if not hasattr(folder, "fs"):
        folder.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(splits, size, images_per_shard)
    total = sum(len(j.items) for j in jobs)
    sizes = file_sizes(dst)
    records: dict[str, dict] = {}
    done = 0
    for job in jobs:
        if (record := _done(job, dst, sizes)) is not None:
            records[job.file] = record
            done += record["count"]
    if progress is not None:
        progress(done, total)
    todo = [job for job in jobs if job.file not in records]
    with ProcessPoolExecutor(workers) if workers > 1 and len(todo) > 1 else _Inline() as pool:
        for job, record in zip(todo, pool.map(write_shard, todo, [dst] * len(todo))):
            records[job.file] = record
            done += record["count"]
            if progress is not None:
                progress(done, total)
    index = {"format": FORMAT, "version": VERSION, "size": size, "classes": classes,
             "splits": {split: [_entry(records[job.file]) for job in jobs if job.split == split] for split in splits}}
    write_bytes(folder / INDEX, json.dumps(index).encode())
    return index


def _entry(record: dict) -> dict:
    return {k: record[k] for k in ("file", "count", "bytes", "crc32", "labels")}


class _Inline:
    """One process: `map` runs in this one, lazily (a ProcessPoolExecutor's stand-in)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @staticmethod
    def map(fn, *iterables):
        return map(fn, *iterables)
