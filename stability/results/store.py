"""Results store: schema-v1 Parquet datasets under `<storage>/<study>/`, written atomically.

Layout (docs/architecture.md, "The study folder"):
    <storage>/<study>/study.yaml                 resolved spec, package versions
    <storage>/<study>/trials.parquet/<id>.parquet one row per finished trial (as the sweep writes it)
    <storage>/<study>/curves.parquet/<id>.parquet one row per epoch of that trial

The sweep writes one file per trial, to a hidden temporary name renamed into place, so a reader
never sees a half-written file, concurrent finishes never lose a row, and re-writing a trial
replaces it instead of duplicating it. Reading is wider than writing (`stability.results.tables`):
any readable Parquet file with the key columns is data, whatever its name or row count (a
compacted folder, files written by pandas, DuckDB or Polars), and a trial id in two files counts
once (the newest file wins). `pandas.read_parquet(<dir>/trials.parquet)` reads the same table.

Damaged files are never trusted: a file that does not read as Parquet or lacks the key columns
is damaged; the sweep moves it to `<study>/damaged/` (kept, never deleted) and runs again every
trial no sound file holds, and `read_study` reads the sound files only and lists the others in
`StudyResults.skipped`.

The study folder may be on an object store (`--storage s3://bucket/runs`: `storage.ObjectPath`):
each file is then written in one PUT instead of temporary name + rename, read through the store's
pyarrow filesystem, and moved aside by copy + delete (stability/results/storage.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from stability.cli import first_line
from stability.results.files import atomic_path, atomic_write_text
from stability.results.tables import (
    CURVE_KEYS,
    TRIAL_KEYS,
    TableFile,
    checked,
    conform,
    duplicate_note,
    newest_rows,
    say_once,
    scan,
    table_files,
    trial_ids,
)
from stability.results.schema import (
    CURVE_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    cell,
    curve_schema,
    knob_column,
    recover_positions,
    trial_schema,
)
from stability.results.storage import (
    ObjectPath,
    StoragePath,
    arrow_source,
    delete_tree,
    location,
    move,
)
from stability.spec import SpecError, StudySpec, parse_path, parse_spec

DAMAGED_DIR = "damaged"


class StoreError(ValueError):
    """A study folder whose content cannot be trusted (e.g. a damaged study.yaml); one line that
    names the file and what to do."""


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


@dataclass
class ResultsStore:
    """Writer and reader of one study's folder."""

    root: StoragePath  # a Path, or an ObjectPath for a URI (`storage.location`)
    extra_columns: dict[str, pa.DataType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = location(self.root)

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def curves_dir(self) -> Path:
        return self.root / "curves.parquet"

    @property
    def spec_path(self) -> Path:
        return self.root / "study.yaml"

    def trial_schema(self) -> pa.Schema:
        return trial_schema(self.extra_columns)

    @property
    def damaged_dir(self) -> Path:
        return self.root / DAMAGED_DIR

    def finished_ids(self, planned: set[str] | None = None) -> set[str]:
        """Ids of the trials some sound trials file holds (footers only, plus the `trial_id` column of
        multi-row files). A damaged `curves.parquet/<id>.parquet` takes `trials.parquet/<id>.parquet`
        aside with it (a row implies its curve), so that trial runs again.

        For the store's one writer (the sweep, holding the study lock): a damaged file is moved to
        `<study>/damaged/` (kept for inspection, said on stderr), so every trial no sound file holds
        runs again and its files are written afresh. `planned`, the ids of the study's plan, lets
        that message say whether the file named a trial of the study."""
        torn = set()  # trials whose own curves file is damaged: they run again
        for file, _, why in checked(table_files(self.curves_dir), CURVE_KEYS):
            if why is not None:
                self.move_aside(file.path, why, planned)
                torn.add(file.path.name)
        holders: dict[str, list[TableFile]] = {}
        for file, meta, why in checked(table_files(self.trials_dir), TRIAL_KEYS):
            if why is None and file.path.name in torn and file.path.parent == self.trials_dir:
                why = "its curve was damaged"
            if why is not None:
                self.move_aside(file.path, why, planned)
                continue
            for trial_id in trial_ids(file, meta):
                holders.setdefault(trial_id, []).append(file)
        note = duplicate_note(self.trials_dir, holders)
        if note:
            say_once(note)
        return set(holders)

    def move_aside(self, path: StoragePath, why: str, planned: set[str] | None = None) -> None:
        """Move a damaged file to damaged/<table>/ under a free name; never delete it."""
        table = next(t for t in (self.trials_dir, self.curves_dir)
                     if str(arrow_source(path)[0]).startswith(f"{arrow_source(t)[0]}/") or path == t)
        folder = self.damaged_dir / table.name
        folder.mkdir(parents=True, exist_ok=True)
        dest, n = folder / path.name, 0
        while dest.exists():
            n += 1
            dest = folder / f"{path.name}.{n}"
        try:
            move(path, dest)  # an object store: copy then delete
            where = f"moved to {dest}"
        except FileNotFoundError:
            return
        except OSError as exc:  # left in place; the re-run replaces it
            where = f"could not be moved to {dest} ({exc.strerror or exc})"
        if planned is None or path.stem in planned:
            then = "its trial runs again"
        else:
            then = "its name is no trial of this study; any trial of the plan that no sound file holds runs again"
        print(f"warning: {path} is damaged ({why}); {where}; {then}", file=sys.stderr)

    def check_layout(self) -> None:
        """StoreError (one line) when the sweep could not add its one file per trial: a table that is
        a single Parquet file (as pandas or DuckDB may write it) instead of a folder."""
        for table in (self.trials_dir, self.curves_dir):
            if table.is_file():
                raise StoreError(f"{table} is one Parquet file; the sweep adds a file per trial to a folder: run "
                                 f"`python -m stability.results compact {self.root}` to make it one, then run again")

    def write_trial(self, row: dict[str, Any], curve: list[dict[str, Any]]) -> None:
        """Write one finished trial: its curve first, then its row (a row implies its curve)."""
        if row.get("status") not in STATUSES:
            raise ValueError(f"trial status must be one of {STATUSES}, got {row.get('status')!r}")
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        self.curves_dir.mkdir(parents=True, exist_ok=True)
        trial_id = row["trial_id"]
        curve_rows = [{**point, "study": row["study"], "trial_id": trial_id} for point in curve]
        curve_table = pa.Table.from_pylist(
            [{c.name: cell(r.get(c.name), c.type) for c in CURVE_COLUMNS} for r in curve_rows], schema=curve_schema()
        )
        _atomic_write_table(curve_table, self.curves_dir / f"{trial_id}.parquet")
        schema = self.trial_schema()
        record = {f.name: cell(row.get(f.name), f.type) for f in schema}
        _atomic_write_table(pa.Table.from_pylist([record], schema=schema), self.trials_dir / f"{trial_id}.parquet")

    # --- what a running study keeps beside its results ---------------------------------------

    @property
    def checkpoints_dir(self) -> Path:
        """`checkpoints/<key>/`: the latest mid-trial state of each running trial (or fused group)."""
        return self.root / "checkpoints"

    def remove_checkpoint(self, key: str) -> None:
        delete_tree(self.checkpoints_dir / key)

    @property
    def running_path(self) -> Path:
        return self.root / "running.json"

    def write_running(self, trials: dict[str, dict[str, Any]]) -> None:
        """`running.json`: the trials running now, each with its last finished epoch (rewritten atomically)."""
        atomic_write_text(self.running_path, json.dumps({"updated": time.time(), "trials": trials}, indent=1))

    def read_running(self) -> dict[str, dict[str, Any]]:
        """The running trials by id; empty when the file is missing or unreadable (it is advisory)."""
        try:
            trials = json.loads(self.running_path.read_text()).get("trials")
        except (OSError, ValueError, AttributeError):
            return {}
        return trials if isinstance(trials, dict) else {}

    @property
    def groups_path(self) -> Path:
        return self.root / "groups.json"

    def read_groups(self) -> list[list[str]]:
        """The fused groups (trial ids) of the last run, so a resume rebuilds the same groups."""
        try:
            groups = json.loads(self.groups_path.read_text())
        except (OSError, ValueError):
            return []
        valid = isinstance(groups, list) and all(isinstance(g, list) and all(isinstance(i, str) for i in g) for g in groups)
        return groups if valid else []

    def write_groups(self, groups: list[list[str]]) -> None:
        if groups or self.groups_path.exists():
            atomic_write_text(self.groups_path, json.dumps(groups))

    def write_spec(self, spec: StudySpec, versions: dict[str, str]) -> None:
        """study.yaml: the resolved spec, every sampled knob with its column and bounds, the versions."""
        record = {"schema_version": SCHEMA_VERSION, "spec": spec.resolved(), "knobs": knob_records(spec),
                  "versions": versions}
        atomic_write_text(self.spec_path, yaml.safe_dump(record, sort_keys=False))

    def read_spec(self) -> dict[str, Any] | None:
        """study.yaml as written (None when there is none); files written before `knobs` existed get
        them from their saved spec. The one reader of study.yaml: StoreError (one line) when it is
        not a file, not readable, not YAML or not a mapping holding a `spec` mapping."""
        path = self.spec_path
        if not path.exists():
            return None
        fix = "restore it, or move the folder away to start the study afresh"
        if not path.is_file():
            raise StoreError(f"{path}: is not a file; {fix}")
        try:
            record = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or first_line(exc)}); {fix}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise StoreError(f"{path}: damaged (not valid YAML{where}); {fix}") from None
        if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
            raise StoreError(f"{path}: damaged (not a mapping with a `spec` mapping, as the sweep writes it); {fix}")
        if "knobs" not in record:
            try:
                record["knobs"] = knob_records(parse_spec(yaml.safe_dump(record["spec"]), str(self.spec_path)))
            except SpecError:  # a spec this version no longer accepts: its knobs stay unknown
                record["knobs"] = []
        return record


def knob_records(spec: StudySpec) -> list[dict[str, Any]]:
    """Each sampled knob of the spec (per optimizer and model) with its result column."""
    return [{"column": knob_column(parse_path(knob["path"])), **knob} for knob in spec.sampled_knobs()]


@dataclass
class StudyResults:
    """What a finished (or partial) study folder holds, as pandas frames."""

    path: StoragePath
    trials: Any  # pandas.DataFrame
    curves: Any  # pandas.DataFrame
    spec: dict[str, Any] | None  # study.yaml: schema_version, spec, knobs, versions
    skipped: list[str] = field(default_factory=list)  # damaged result files left out (paths)

    @property
    def knobs(self) -> list[dict[str, Any]]:
        """The sampled knobs (column, optimizer, model, path, kind, values); empty without study.yaml."""
        return list((self.spec or {}).get("knobs") or [])


def read_table(table: StoragePath, keys: tuple[str, ...]) -> tuple[pa.Table | None, list[str]]:
    """The sound files of a table as one table (None when there are none), one row per key (the
    newest file's), and the damaged files left out (paths)."""
    data, damaged = read_sound(table, keys)
    return data, sorted(str(file.path) for file, _ in damaged)


def read_sound(table: StoragePath, keys: tuple[str, ...],
               files: list[TableFile] | None = None) -> tuple[pa.Table | None, list[tuple[TableFile, str]]]:
    """`read_table`, with each damaged file and why (`files`: the table's, when listed already)."""
    good, schemas, damaged = [], [], []
    for file, meta, why in checked(table_files(table) if files is None else files, keys):
        if why is None:
            good.append(file)
            schemas.append(meta.schema.to_arrow_schema())
        else:
            damaged.append((file, why))
    if not good:
        return None, damaged
    try:  # one scan of every sound file (threaded)
        data, origin = scan(good, schemas, table)
    except (OSError, pa.ArrowException):  # a sound footer over a damaged page: find it file by file
        readable = []
        for file, schema in zip(good, schemas):
            try:
                where, fs = arrow_source(file.path)
                pq.read_table(where, filesystem=fs)
                readable.append((file, schema))
            except (OSError, pa.ArrowException) as exc:
                damaged.append((file, first_line(exc)))
        if not readable:
            return None, damaged
        good, schemas = map(list, zip(*readable))
        data, origin = scan(good, schemas, table)
    if len(good) > 1 and "epoch" not in keys:  # said for the trials table; curves follow it
        holders: dict[str, list[TableFile]] = {}
        for trial_id, i in zip(data.column("trial_id").to_pylist(), origin):
            files = holders.setdefault(trial_id, [])
            if not files or files[-1] is not good[i]:
                files.append(good[i])
        note = duplicate_note(table, holders)
        if note:
            say_once(note)
    data = newest_rows(data, origin, good, ["trial_id", "epoch"] if "epoch" in keys else ["trial_id"])
    return conform(data), damaged


def read_study(path: str | os.PathLike | ObjectPath) -> StudyResults:
    """Read a study folder (trials, curves, resolved spec), its sound files only: damaged ones are
    listed in `skipped`. Raises FileNotFoundError if empty, StoreError for a damaged study.yaml."""
    import pandas as pd

    path = location(path)  # a local folder or a pyarrow.fs URI
    store = ResultsStore(path)
    if not store.trials_dir.exists():
        raise FileNotFoundError(f"no results in {path}: expected {store.trials_dir}")
    table, skipped = read_table(store.trials_dir, TRIAL_KEYS)
    trials = (table if table is not None else store.trial_schema().empty_table()).to_pandas()
    table, skipped_curves = read_table(store.curves_dir, CURVE_KEYS) if store.curves_dir.exists() else (None, [])
    if table is not None:
        curves = table.to_pandas()
    else:
        curves = pd.DataFrame({c.name: pd.Series(dtype="object") for c in CURVE_COLUMNS})
    spec = store.read_spec()
    study_seed = ((spec or {}).get("spec") or {}).get("seed") if isinstance(spec, dict) else None
    trials = recover_positions(trials, study_seed)
    return StudyResults(path=path, trials=trials, curves=curves, spec=spec, skipped=skipped + skipped_curves)
