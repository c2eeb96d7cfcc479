"""Results store: schema-v1 Parquet datasets under `<storage>/<study>/`, written atomically.

Layout (DESIGN.md, "Results"):
    <storage>/<study>/study.yaml                 resolved spec, package versions
    <storage>/<study>/trials.parquet/<id>.parquet one row per finished trial
    <storage>/<study>/curves.parquet/<id>.parquet one row per epoch of that trial

One file per trial, written to a hidden temporary name and renamed into place, so a reader
never sees a half-written file, concurrent finishes never lose a row, and re-writing a trial
replaces it instead of duplicating it. `pandas.read_parquet(<dir>/trials.parquet)` reads the
whole table (Parquet readers skip names starting with "." or "_"). Knows Parquet, not Ray.

Damaged files are never trusted: a trial counts as finished only when its file's Parquet footer
reads and holds exactly one row of that trial (`check_file`); the sweep moves a damaged file to
`<study>/damaged/` (kept, never deleted) and runs its trial again, and `read_study` reads the
sound files only and lists the others in `StudyResults.skipped`.

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
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from stability.results.files import atomic_path, atomic_write_text
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trial_ids(path: StoragePath, meta: pq.FileMetaData) -> set[str] | None:
    """The `trial_id` values of a Parquet file, from its footer's column statistics when present (no
    data page is read), else from the column itself; None when there is no such column."""
    if "trial_id" not in meta.schema.names:
        return None
    values: set[str] = set()
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        column = next(group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema == "trial_id")
        stats = column.statistics
        if stats is None or not stats.has_min_max or column.num_values == 0:
            where, fs = arrow_source(path)
            return set(pq.read_table(where, columns=["trial_id"], filesystem=fs).column(0).drop_null().to_pylist())
        values |= {stats.min, stats.max}
    return values


def check_file(path: StoragePath, one_row: bool) -> tuple[pq.FileMetaData | None, str | None]:
    """Whether a trials (`one_row`) or curves file of the store can be trusted, reading its footer only:
    (footer, None) when sound, (None, why) when damaged. Sound: the footer reads, the trials file holds
    exactly one row, and every row's `trial_id` is the file's name."""
    try:
        where, fs = arrow_source(path)
        meta = pq.read_metadata(where, filesystem=fs)
        if one_row and meta.num_rows != 1:
            return None, f"{meta.num_rows} rows, expected 1"
        if meta.num_rows == 0:
            return meta, None
        ids = _trial_ids(path, meta)
    except (OSError, pa.ArrowException) as exc:  # empty, truncated, not Parquet, unreadable
        return None, _first_line(exc)
    if ids is None:
        return None, "no trial_id column"
    if not ids:
        return None, "no trial_id value"
    if ids != {path.stem}:
        return None, f"holds trial_id {', '.join(sorted(map(str, ids)))}, not {path.stem}"
    return meta, None


def _result_files(folder: StoragePath) -> list[StoragePath]:
    """A table folder's files (Parquet readers skip hidden names: temporary files being written)."""
    if isinstance(folder, ObjectPath):
        return [p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file())


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

    def finished_ids(self) -> set[str]:
        """Ids of the trials whose row is on disk and sound (`check_file`: footers only, no data).

        For the store's one writer (the sweep, holding the study lock): a damaged trials file, or a
        damaged curves file of a trial, is moved to `<study>/damaged/` (kept for inspection, said on
        stderr) and its trial is not counted, so it runs again and its files are written afresh."""
        finished = set()
        for path in _result_files(self.trials_dir):
            _, why = check_file(path, one_row=True)
            if why is None:
                curve = self.curves_dir / path.name
                if curve.exists():
                    _, curve_why = check_file(curve, one_row=False)
                    if curve_why is not None:
                        self._move_aside(curve, curve_why)
                        why = "its curve was damaged"
            if why is None:
                finished.add(path.stem)
            else:
                self._move_aside(path, why)
        return finished

    def _move_aside(self, path: Path, why: str) -> None:
        """Move a damaged file to damaged/<table>/ under a free name; never delete it."""
        folder = self.damaged_dir / path.parent.name
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
        print(f"warning: {path} is damaged ({why}); {where}; its trial runs again", file=sys.stderr)

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
            raise StoreError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or _first_line(exc)}); {fix}") from None
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


def _read_table(path: StoragePath, one_row: bool) -> tuple[pa.Table | None, list[str]]:
    """The sound files of a table (a folder of per-trial files, or one file) as one table (None when
    there are none; columns are the union of the files'), and the damaged files skipped."""
    if path.is_file():
        try:
            where, fs = arrow_source(path)
            return pq.read_table(where, filesystem=fs), []
        except (OSError, pa.ArrowException):
            return None, [str(path)]
    good, schemas, skipped = [], [], []
    for file in _result_files(path):
        meta, why = check_file(file, one_row)
        if why is None:
            good.append(file)
            schemas.append(meta.schema.to_arrow_schema())
        else:
            skipped.append(str(file))
    if not good:
        return None, skipped
    try:  # one scan of every sound file (threaded)
        return _scan(good, schemas), skipped
    except (OSError, pa.ArrowException):  # a sound footer over a damaged page: find it file by file
        pass
    readable = []
    for file, schema in zip(good, schemas):
        try:
            where, fs = arrow_source(file)
            pq.read_table(where, filesystem=fs)
            readable.append((file, schema))
        except (OSError, pa.ArrowException):
            skipped.append(str(file))
    if not readable:
        return None, sorted(skipped)
    return _scan(*map(list, zip(*readable))), sorted(skipped)


def _scan(files: list[StoragePath], schemas: list[pa.Schema]) -> pa.Table:
    """Files as one table whose columns are the union of theirs (a column a file lacks is null there)."""
    fs = arrow_source(files[0])[1]
    names = [str(arrow_source(f)[0]) for f in files]
    return ds.dataset(names, schema=pa.unify_schemas(schemas), format="parquet", filesystem=fs).to_table()


def read_study(path: str | os.PathLike | ObjectPath) -> StudyResults:
    """Read a study folder (trials, curves, resolved spec), its sound files only: damaged ones are
    listed in `skipped`. Raises FileNotFoundError if empty, StoreError for a damaged study.yaml."""
    import pandas as pd

    path = location(path)  # a local folder or a pyarrow.fs URI
    store = ResultsStore(path)
    if not store.trials_dir.exists():
        raise FileNotFoundError(f"no results in {path}: expected {store.trials_dir}")
    table, skipped = _read_table(store.trials_dir, one_row=True)
    trials = (table if table is not None else store.trial_schema().empty_table()).to_pandas()
    table, skipped_curves = _read_table(store.curves_dir, one_row=False) if store.curves_dir.exists() else (None, [])
    if table is not None:
        curves = table.to_pandas()
    else:
        curves = pd.DataFrame({c.name: pd.Series(dtype="object") for c in CURVE_COLUMNS})
    spec = store.read_spec()
    study_seed = ((spec or {}).get("spec") or {}).get("seed") if isinstance(spec, dict) else None
    trials = recover_positions(trials, study_seed)
    return StudyResults(path=path, trials=trials, curves=curves, spec=spec, skipped=skipped + skipped_curves)
