"""Results store: schema-v1 Parquet datasets under `<storage>/<study>/`, written atomically.

Layout (DESIGN.md, "Results"):
    <storage>/<study>/study.yaml                 resolved spec, package versions
    <storage>/<study>/trials.parquet/<id>.parquet one row per finished trial
    <storage>/<study>/curves.parquet/<id>.parquet one row per epoch of that trial

One file per trial, written to a hidden temporary name and renamed into place, so a reader
never sees a half-written file, concurrent finishes never lose a row, and re-writing a trial
replaces it instead of duplicating it. `pandas.read_parquet(<dir>/trials.parquet)` reads the
whole table (Parquet readers skip names starting with "." or "_"). Knows Parquet, not Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
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
    trial_schema,
)
from stability.spec import SpecError, StudySpec, parse_path, parse_spec


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


@dataclass
class ResultsStore:
    """Writer and reader of one study's folder."""

    root: Path
    extra_columns: dict[str, pa.DataType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

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

    def finished_ids(self) -> set[str]:
        """Ids of trials whose row is on disk (cheap: file names only)."""
        if not self.trials_dir.is_dir():
            return set()
        return {p.stem for p in self.trials_dir.glob("*.parquet") if not p.name.startswith((".", "_"))}

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

    def write_spec(self, spec: StudySpec, versions: dict[str, str]) -> None:
        """study.yaml: the resolved spec, every sampled knob with its column and bounds, the versions."""
        record = {"schema_version": SCHEMA_VERSION, "spec": spec.resolved(), "knobs": knob_records(spec),
                  "versions": versions}
        atomic_write_text(self.spec_path, yaml.safe_dump(record, sort_keys=False))

    def read_spec(self) -> dict[str, Any] | None:
        """study.yaml as written (None when there is none); files written before `knobs` existed get
        them from their saved spec."""
        if not self.spec_path.is_file():
            return None
        record = yaml.safe_load(self.spec_path.read_text())
        if isinstance(record, dict) and "knobs" not in record and isinstance(record.get("spec"), dict):
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

    path: Path
    trials: Any  # pandas.DataFrame
    curves: Any  # pandas.DataFrame
    spec: dict[str, Any] | None  # study.yaml: schema_version, spec, knobs, versions

    @property
    def knobs(self) -> list[dict[str, Any]]:
        """The sampled knobs (column, optimizer, model, path, kind, values); empty without study.yaml."""
        return list((self.spec or {}).get("knobs") or [])


def read_study(path: str | os.PathLike) -> StudyResults:
    """Read a study folder (trials, curves, resolved spec). Raises FileNotFoundError if empty."""
    import pandas as pd

    store = ResultsStore(Path(path))
    if not store.trials_dir.exists():
        raise FileNotFoundError(f"no results in {path}: expected {store.trials_dir}")
    trials = pd.read_parquet(store.trials_dir)
    if store.curves_dir.exists() and any(store.curves_dir.glob("*.parquet")):
        curves = pd.read_parquet(store.curves_dir)
    else:
        curves = pd.DataFrame({c.name: pd.Series(dtype="object") for c in CURVE_COLUMNS})
    return StudyResults(path=Path(path), trials=trials, curves=curves, spec=store.read_spec())
