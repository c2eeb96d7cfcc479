"""Compaction: a study's many small result files rewritten as a few large ones.

The sweep writes two files per trial; a study of 100,000 trials is 200,000 files or objects, and
listing and reading them is slow (and costs requests on object storage). `compact` rewrites each
table as files of at most `rows_per_file` rows (a trial's curve never split), sorted by trial id
and epoch, under names derived from what they hold (`part-<digest>-<n>.parquet`), then deletes the
files they replace. Every step keeps the folder readable with the same rows: the new files are
written whole (temporary name + rename, or one PUT) before any old one is deleted, and while both
exist the newest file wins (`stability.results.tables`); a rerun after a crash writes the same
names again. It holds the study lock, so it never runs beside a sweep of the same study. A table
that is a single file (as pandas or DuckDB may write it) becomes a folder, which the sweep can add
to. Damaged files are moved to `<study>/damaged/` as the sweep moves them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from stability.results.files import atomic_path
from stability.results.schema import SCHEMA_VERSION
from stability.results.storage import ObjectPath, StoragePath, location
from stability.results.store import ResultsStore, read_sound
from stability.results.tables import CURVE_KEYS, TRIAL_KEYS, per_file, table_files

ROWS_PER_FILE = 250_000


@dataclass
class TableCompaction:
    """What compaction did to one table."""

    name: str
    files_before: int
    files_after: int
    rows: int
    damaged: int


def _chunks(table: pa.Table, rows_per_file: int) -> list[pa.Table]:
    """Consecutive slices of a table sorted by trial id, each of at most `rows_per_file` rows unless
    one trial's rows alone are more, never splitting a trial's rows: a trial's curve is one file's."""
    import numpy as np

    ids = table.column("trial_id").to_numpy(zero_copy_only=False)
    starts = [*(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), len(ids)]  # where each trial's rows end
    chunks, begin, last = [], 0, 0
    for end in starts:
        if end - begin > rows_per_file and last > begin:
            chunks.append(table.slice(begin, last - begin))
            begin = last
        last = end
    chunks.append(table.slice(begin, len(ids) - begin))
    return chunks


def _part_name(chunk: pa.Table, n: int) -> str:
    digest = hashlib.sha256("\n".join(map(str, chunk.column("trial_id").to_pylist())).encode()).hexdigest()[:16]
    return f"part-{digest}-{n:05d}.parquet"


def _write(table: pa.Table, path: StoragePath) -> None:
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def _remove_empty_folders(table: Path) -> None:
    """Partition folders (`model=.../`) emptied by the compaction go too (local folders only)."""
    for folder, _, _ in sorted(os.walk(table), key=lambda item: -len(item[0])):
        if Path(folder) != table:
            try:
                os.rmdir(folder)
            except OSError:
                pass


def compact_table(store: ResultsStore, folder: StoragePath, keys: tuple[str, ...], rows_per_file: int) -> TableCompaction:
    """Rewrite one table of the study (trials or curves) as few files; see the module's docstring."""
    files = table_files(folder)
    data, damaged = read_sound(folder, keys, files)
    for file, why in damaged:
        store.move_aside(file.path, why)
    if data is None:
        return TableCompaction(folder.name, len(files), 0, 0, len(damaged))
    order = [("trial_id", "ascending")] + ([("epoch", "ascending")] if "epoch" in keys else [])
    data = data.sort_by(order)
    if "epoch" not in keys:
        data = data.replace_schema_metadata({"stability_schema_version": str(SCHEMA_VERSION)})
    chunks = _chunks(data, rows_per_file)
    names = [_part_name(chunk, n) for n, chunk in enumerate(chunks)]
    single = folder.is_file()
    staging = folder.parent / f".{folder.name}.compacting" if single and not isinstance(folder, ObjectPath) else folder
    for chunk, name in zip(chunks, names):
        _write(chunk, staging / name)
    if single and staging != folder:  # a local single file becomes a folder: two renames
        aside = folder.parent / f".{folder.name}.replaced"
        os.replace(folder, aside)
        os.replace(staging, folder)
        aside.unlink()
    else:
        keep = {str(folder / name) for name in names}
        per_file(lambda path: path.unlink(missing_ok=True),  # the study lock kept others from adding files
                 [file.path for file in files if str(file.path) not in keep])
        if not isinstance(folder, ObjectPath):
            _remove_empty_folders(folder)
    return TableCompaction(folder.name, len(files), len(chunks), data.num_rows, len(damaged))


def compact(root: str | os.PathLike | ObjectPath, rows_per_file: int = ROWS_PER_FILE,
            say: Callable[[str], None] = print) -> list[TableCompaction]:
    """Compact the trials and curves of the study at `root` (a folder or a pyarrow.fs URI). The
    caller holds the study lock. FileNotFoundError when it holds no trials."""
    root = location(root)
    store = ResultsStore(root)
    if not store.trials_dir.exists():
        raise FileNotFoundError(f"no results in {root}: expected {store.trials_dir}")
    done = []
    for folder, keys in ((store.trials_dir, TRIAL_KEYS), (store.curves_dir, CURVE_KEYS)):
        if not folder.exists():
            continue
        result = compact_table(store, folder, keys, rows_per_file)
        say(f"{folder}: {result.files_before} file(s) -> {result.files_after}, {result.rows} rows"
            + (f"; {result.damaged} damaged file(s) moved to {store.damaged_dir}" if result.damaged else ""))
        done.append(result)
    return done
