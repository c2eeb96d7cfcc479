"""A results table (trials or curves) read as the open format it is: every readable Parquet file
under the table's folder (or the table as one file), whatever its name, row count or writer.

The sweep writes one file per trial (`<trial_id>.parquet`); `python -m stability.results compact`
writes a few large ones; pandas, DuckDB (partitioned `key=value/` folders included) or Polars may
have written others. All are data. A file is damaged only when it cannot be read as Parquet or
lacks the table's key columns (`TRIAL_KEYS`, `CURVE_KEYS`). Files and folders whose names start
with "." or "_" are skipped, as every Parquet reader skips them (temporary files being written).

A row present in two files counts once: the newest file's (modification time, then name) wins,
row by row (trials by `trial_id`, curves by `trial_id` and `epoch`), and that is said once on
stderr. So a crash half-way through a compaction, which leaves both the old and the new files,
reads the same as before it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stability.cli import first_line
from stability.results.schema import CURVE_COLUMNS, TRIAL_COLUMNS
from stability.results.storage import ObjectPath, StoragePath, arrow_source

TRIAL_KEYS = tuple(c.name for c in TRIAL_COLUMNS if c.role == "key")  # study, trial_id
CURVE_KEYS = tuple(c.name for c in CURVE_COLUMNS if c.role == "key")  # study, trial_id, epoch
KNOWN_TYPES = {c.name: c.type for c in (*TRIAL_COLUMNS, *CURVE_COLUMNS)}

_said: set[str] = set()
T = TypeVar("T")


def say_once(message: str) -> None:
    """A warning on stderr, once per process (a sweep reads its store several times)."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr)


@dataclass(frozen=True)
class TableFile:
    """One file of a table, with what its listing tells."""

    path: StoragePath
    mtime: float
    partition: dict[str, str] = field(default_factory=dict)  # hive `key=value` folders above it

    def __hash__(self) -> int:
        return hash(str(self.path))


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _partition(parts: Iterable[str]) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in parts if "=" in part)
    return {key: unquote(value) for key, value in pairs}


def table_files(table: StoragePath) -> list[TableFile]:
    """The files of a table: the table itself when it is one file, else every file at any depth
    under its folder that is not hidden, sorted by path (none when it does not exist)."""
    if isinstance(table, ObjectPath):
        info = table.info()
        if info.type == pafs.FileType.File:
            return [TableFile(table, _stamp(info))]
        infos = table.fs.get_file_info(pafs.FileSelector(table.path, allow_not_found=True, recursive=True))
        found = []
        for item in infos:
            parts = item.path[len(table.path):].strip("/").split("/")
            if item.type == pafs.FileType.File and not any(map(_hidden, parts)):
                found.append(TableFile(table / "/".join(parts), _stamp(item), _partition(parts[:-1])))
        return sorted(found, key=lambda f: f.path.path)
    if table.is_file():
        return [TableFile(table, table.stat().st_mtime)]
    found = []
    for folder, dirs, names in os.walk(table):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        parts = Path(folder).relative_to(table).parts
        for name in names:
            path = Path(folder) / name
            if not _hidden(name) and path.is_file():
                found.append(TableFile(path, path.stat().st_mtime, _partition(parts)))
    return sorted(found, key=lambda f: str(f.path))


def _stamp(info: pafs.FileInfo) -> float:
    return info.mtime.timestamp() if info.mtime is not None else 0.0


def check_file(file: TableFile, keys: tuple[str, ...]) -> tuple[pq.FileMetaData | None, str | None]:
    """Whether a file of a table is data, reading its footer only: (footer, None) when sound,
    (None, why) when damaged: unreadable as Parquet (empty, truncated, not Parquet) or without one of
    the key columns (in the file or in its `key=value` folders)."""
    try:
        where, fs = arrow_source(file.path)
        meta = pq.read_metadata(where, filesystem=fs)
    except (OSError, pa.ArrowException) as exc:
        return None, first_line(exc)
    missing = [key for key in keys if key not in meta.schema.names and key not in file.partition]
    if missing:
        return None, f"no {', '.join(missing)} column"
    return meta, None


def per_file(fn: Callable[[Any], T], items: list[Any]) -> list[T]:
    """`fn` of every item, in order, by a pool of threads once there are a few: on an object store
    each call is a request, and one after another a study of 10,000 trials waits on 20,000."""
    if len(items) < 8:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(16, len(items))) as pool:
        return list(pool.map(fn, items))


def checked(files: list[TableFile], keys: tuple[str, ...]) -> list[tuple[TableFile, pq.FileMetaData | None, str | None]]:
    """`check_file` of every file, in the files' order (footers read by `per_file`'s threads)."""
    return [(f, *result) for f, result in zip(files, per_file(lambda f: check_file(f, keys), files))]


def trial_ids(file: TableFile, meta: pq.FileMetaData) -> set[str]:
    """The `trial_id` values of a sound file: from its folder name or, for a one-row file, its footer's
    statistics (no data page read), else from reading that one column."""
    if "trial_id" in file.partition:
        return {file.partition["trial_id"]}
    if meta.num_rows == 0:
        return set()
    if meta.num_rows == 1 and meta.num_row_groups == 1:
        group = meta.row_group(0)
        column = next(group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema == "trial_id")
        stats = column.statistics
        if stats is not None and stats.has_min_max and stats.min == stats.max:
            return {str(stats.min)}
    where, fs = arrow_source(file.path)
    values = pq.read_table(where, columns=["trial_id"], filesystem=fs).column(0).drop_null()
    return {str(v) for v in values.to_pylist()}


def duplicate_note(table: StoragePath, files_by_id: dict[str, list[TableFile]]) -> str | None:
    """The one line that says which trial ids more than one file holds (None when none does)."""
    shared = sorted(i for i, files in files_by_id.items() if len(files) > 1)
    if not shared:
        return None
    example = ", ".join(str(f.path) for f in files_by_id[shared[0]])
    return (f"warning: {table}: {len(shared)} trial id(s) are in more than one file (e.g. {shared[0]} in {example}); "
            f"the newest file's row counts")


def conform(table: pa.Table) -> pa.Table:
    """The columns the schema knows, cast to its types where another writer chose another one
    (large strings, 32-bit integers, dictionaries); a column that does not cast stays as it is. A
    pandas index saved as a column (`__index_level_0__`) is no data and is dropped, as pandas does."""
    table = table.drop_columns([n for n in table.column_names if n.startswith("__index_level_")])
    for i, column in enumerate(table.schema):
        wanted = KNOWN_TYPES.get(column.name)
        if wanted is not None and column.type != wanted:
            try:
                table = table.set_column(i, pa.field(column.name, wanted), table.column(i).cast(wanted))
            except (pa.ArrowException, ValueError):
                pass
    return table


def scan(files: list[TableFile], schemas: list[pa.Schema], base: StoragePath) -> tuple[pa.Table, list[int]]:
    """Sound files as one table (columns: the union of theirs and of their partition keys, a column a
    file lacks is null there) and, per row, the index in `files` of the file it came from."""
    keys = sorted({key for f in files for key in f.partition})
    schema = pa.unify_schemas([*schemas, pa.schema([(k, pa.string()) for k in keys if not any(k in s.names for s in schemas)])],
                              promote_options="permissive")
    fs = arrow_source(files[0].path)[1]
    names = [str(arrow_source(f.path)[0]) for f in files]
    partitioning = ds.partitioning(pa.schema([(k, schema.field(k).type) for k in keys]), flavor="hive") if keys else None
    dataset = ds.dataset(names, schema=schema, format="parquet", filesystem=fs, partitioning=partitioning,
                         partition_base_dir=str(arrow_source(base)[0]) if keys else None)
    index = {name: i for i, name in enumerate(names)}
    batches, origin = [], []
    for tagged in dataset.scanner(use_threads=True).scan_batches():
        batches.append(tagged.record_batch)
        origin += [index[tagged.fragment.path]] * tagged.record_batch.num_rows
    return pa.Table.from_batches(batches, schema=schema).combine_chunks(), origin  # one chunk: filters are fast


def newest_rows(table: pa.Table, origin: list[int], files: list[TableFile], keys: list[str]) -> pa.Table:
    """One row per key: the row of the newest file holding that key (the last one within a file)."""
    import numpy as np
    import pandas as pd

    rank = {i: r for r, i in enumerate(sorted(range(len(files)), key=lambda i: (files[i].mtime, str(files[i].path))))}
    frame = pd.DataFrame({k: table.column(k).to_pandas() for k in keys})
    frame["_rank"] = np.array([rank[i] for i in origin], dtype=np.int64)
    newest = frame["_rank"] == frame.groupby(keys, dropna=False, sort=False)["_rank"].transform("max")
    keep = newest & ~frame[newest].duplicated(keys, keep="last").reindex(frame.index, fill_value=True)
    return table.filter(pa.array(keep.to_numpy()))
