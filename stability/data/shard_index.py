"""The index of a shards folder, read and checked without torch (a study is validated before any
trial starts; see `stability.data.shards` for the format)."""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import pyarrow.fs as pafs

from stability.data.checks import DatasetError
from stability.results.storage import StoragePath, is_uri, location, public_uri

FORMAT, VERSION = "stability-shards", 1
INDEX = "index.json"
SPLITS = ("train", "val")
HOW = "write them with: python -m stability.data prepare SRC --size S --out DST"


def shards_folder(root: str) -> StoragePath:
    """The folder of `root`: a local path (~ expanded, made absolute) or an object store's URI."""
    return location(root if is_uri(root) else os.path.abspath(os.path.expanduser(root)))


def shown(root: str) -> str:
    """`root` as messages show it (a URI without the credentials it may carry)."""
    return public_uri(root) if is_uri(root) else root


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.npy"


def read_index(root: str | None) -> dict:
    """The index of a shards folder; DatasetError (one line) when it is missing or not ours."""
    if not root:
        raise DatasetError(f"shards needs dataset.root: a folder or URI of shards; {HOW}")
    try:
        text = (shards_folder(root) / INDEX).read_text()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"shards: no readable {INDEX} under {shown(root)} ({short(exc)}); {HOW}") from None
    try:
        index = json.loads(text)
        ok = index.get("format") == FORMAT and all(isinstance(index["splits"][s], list) for s in SPLITS)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise DatasetError(f"shards: {shown(root)}/{INDEX} is damaged or not a shards index; {HOW}")
    if index.get("version") != VERSION:
        raise DatasetError(f"shards: {shown(root)} is format version {index.get('version')!r}; this version reads "
                           f"{VERSION}; {HOW}")
    return index


def short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def check_shards(root: str | None) -> dict:
    """The index, after checking that every shard it names is there with its size (no image is read;
    one folder listing, also on object storage)."""
    index = read_index(root)
    sizes = file_sizes(root)
    for split in SPLITS:
        if not index["splits"][split]:
            raise DatasetError(f"shards: {shown(root)} holds no {split} images; {HOW}")
        for shard in index["splits"][split]:
            size = sizes.get(shard["file"])
            if size is None:
                raise DatasetError(f"shards: {shown(root)}: shard {shard['file']} is missing; prepare it again "
                                   f"(python -m stability.data prepare writes only what is missing)")
            if size != shard["bytes"]:
                raise DatasetError(f"shards: {shown(root)}: shard {shard['file']} is damaged ({size:,} bytes, "
                                   f"the index says {shard['bytes']:,}); prepare it again")
    return index


def file_sizes(root: str) -> dict[str, int]:
    """Byte size of every file directly in the folder `root` (local path or URI), by name."""
    folder = shards_folder(root)
    try:
        if isinstance(folder, Path):
            with os.scandir(folder) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
        return {posixpath.basename(i.path): i.size for i in infos if i.type == pafs.FileType.File}
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DatasetError(f"shards: cannot list {shown(root)} ({short(exc)})") from None
