"""Reading result folders: trials and curves of every folder, and one record per folder.

A folder is refused in one line (UsageError) when it holds no results of ours, or when a column
the report computes with has the wrong type or empty values (naming the column and the folder);
damaged files the results layer skipped are listed on stderr and in each folder's record. A folder
may be a `pyarrow.fs` URI (`s3://bucket/runs/study?endpoint_override=...`). A study still running
is drawn from its finished trials; how many are still running (its `running.json`) is said on
stderr and in the folder's record (`running`, and `running_trials`: one entry per trial). That
file is advisory: a damaged or absent one counts as no running trial, never as an error."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from stability.cli import UsageError, first_line
from stability.results.schema import CURVE_COLUMNS, REQUIRED_COLUMNS, STATUSES, TRIAL_COLUMNS

NOT_EMPTY = ("study", "trial_id", "model", "optimizer", "status", "epochs")  # every row is grouped by these


def _kind(dtype: pa.DataType) -> str | None:
    if pa.types.is_floating(dtype) or pa.types.is_integer(dtype):
        return "numbers"
    if pa.types.is_string(dtype):
        return "text"
    return None  # lists: not checked here


def _holds(series: pd.Series) -> str:
    """What a column holds, in words: numbers, text, or the type of its first odd value."""
    values = series.dropna()
    if values.empty:
        return "nothing"
    if pd.api.types.is_bool_dtype(series):
        return "booleans"
    if pd.api.types.is_numeric_dtype(series):
        return "numbers"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _holds(pd.Series(series.cat.categories))
    if pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
        return "timestamps" if pd.api.types.is_datetime64_any_dtype(series) else "durations"
    types = values.map(type)
    if pd.api.types.is_string_dtype(series) and types.eq(str).all():
        return "text"
    odd = values[~types.eq(str)]
    return f"{type(odd.iloc[0]).__name__} values" if not odd.empty else "text"


def check_columns(frame: pd.DataFrame, columns, table: str, folder: str) -> None:
    """UsageError naming the first column (of those present) whose values are not of its schema's kind."""
    for column in columns:
        kind = _kind(column.type)
        if kind is None or column.name not in frame:
            continue
        held = _holds(frame[column.name])
        if held not in (kind, "nothing"):
            raise UsageError(f"{folder}: {table} column {column.name!r} holds {held}, expected {kind}; "
                             f"not a stability results folder, or a damaged one")


def check_trials(trials: pd.DataFrame, folder: str) -> None:
    """Types of the trials columns, no empty value in the columns every row is grouped by, and
    statuses the report knows."""
    check_columns(trials, TRIAL_COLUMNS, "trials", folder)
    for column in NOT_EMPTY:
        if column in trials:
            empty = int(trials[column].isna().sum())
            if empty:
                raise UsageError(f"{folder}: trials column {column!r} has {empty} empty value(s)"
                                 + (f"; expected {', '.join(STATUSES)}" if column == "status" else ""))
    unknown = sorted(set(trials["status"]) - set(STATUSES))
    if unknown:
        raise UsageError(f"{folder}: trials column 'status' has value {unknown[0]!r}; expected {', '.join(STATUSES)}")


def _read(folder: str):
    """One folder's results; UsageError naming the folder when it holds none or not ours."""
    from stability.results.storage import location
    from stability.results.store import read_study

    try:
        path = location(folder)
    except (OSError, ValueError, NotImplementedError) as exc:  # a URI pyarrow cannot resolve (scheme, query, store)
        raise UsageError(f"{_shown(folder)}: {first_line(exc)}") from None
    folder = str(path) if not isinstance(path, Path) else folder  # a URI is shown without query secrets
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:  # the store refused (missing bucket, credentials)
        raise UsageError(f"{folder}: cannot read results: {first_line(exc)}") from None
    if not is_dir:
        raise UsageError(f"{folder}: no such results folder")
    try:
        res = read_study(path)
    except FileNotFoundError:
        raise UsageError(f"{folder}: holds no results (expected {path / 'trials.parquet'})") from None
    except Exception as exc:  # a damaged or foreign Parquet file
        raise UsageError(f"{folder}: cannot read results: {first_line(exc)}") from None
    if res.trials.empty:
        raise UsageError(f"{folder}: holds no results (trials.parquet has no rows)")
    missing = [c for c in REQUIRED_COLUMNS if c not in res.trials]
    if missing:
        raise UsageError(f"{folder}: trials table lacks column(s) {', '.join(missing)}; not a stability results folder")
    check_trials(res.trials, folder)
    check_columns(res.curves, CURVE_COLUMNS, "curves", folder)
    return res


def _shown(folder: str) -> str:
    from stability.results.storage import public_uri

    return public_uri(folder)


def running_trials(res) -> list[dict[str, Any]]:
    """The trials of the folder's study running now (its running.json, kept current by the sweep):
    {trial_id, model, optimizer, epoch, epochs, updated (Unix time)}, values that do not read as
    their kind left None; entries that are not records, and trials whose row is already stored,
    are left out. Empty when the file is missing or unreadable."""
    from stability.results.store import ResultsStore

    try:
        running = ResultsStore(res.path).read_running()
    except (OSError, ValueError, TypeError, AttributeError):  # advisory: an unreadable file counts as none
        return []
    done = set(res.trials["trial_id"].astype(str))
    found = []
    for trial_id, entry in running.items() if isinstance(running, dict) else ():
        if str(trial_id) in done or not isinstance(entry, dict):
            continue
        found.append({"trial_id": str(trial_id), "model": _text(entry.get("model")),
                      "optimizer": _text(entry.get("optimizer")), "epoch": _number(entry.get("epoch"), int),
                      "epochs": _number(entry.get("epochs"), int), "updated": _number(entry.get("updated"), float)})
    return sorted(found, key=lambda t: (t["model"] or "", t["optimizer"] or "", t["trial_id"]))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any, kind: type) -> Any:
    """An int or float from JSON, None for anything else (text, booleans, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = kind(value)
    except (OverflowError, ValueError):  # an int too large for a float, NaN or infinity as an int
        return None
    return number if kind is int or math.isfinite(number) else None


def skipped_files(res) -> list[str]:
    """Damaged files the results layer left out when it read the folder."""
    return [str(p) for p in (getattr(res, "skipped", None) or [])]


def load(dirs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Trials and curves of every folder, concatenated, and one record per folder (path,
    study names, spec, knobs, skipped: damaged files left out, also said on stderr). Study names
    that repeat across folders get the folder appended."""
    loaded = [_read(d) for d in dict.fromkeys(dirs)]  # a folder named twice is read once
    names = [set(r.trials["study"].astype(str)) for r in loaded]
    trials, curves, records = [], [], []
    for res, own in zip(loaded, names):
        t, c = res.trials.copy(), res.curves.copy()
        t["study"], c["study"] = t["study"].astype(str), c["study"].astype(str)
        clash = {s for s in own if sum(s in other for other in names) > 1}
        for s in clash:
            label = f"{s} ({res.path})"
            t.loc[t["study"] == s, "study"] = label
            c.loc[c["study"] == s, "study"] = label
        trials.append(t)
        curves.append(c)
        skipped = skipped_files(res)
        if skipped:
            print(f"warning: {res.path}: skipped {len(skipped)} damaged file(s): {', '.join(skipped)}", file=sys.stderr)
        running = running_trials(res)
        if running:
            print(f"note: {res.path}: {len(running)} trial(s) still running; the report draws the {len(t)} finished",
                  file=sys.stderr)
        records.append({"path": str(res.path), "studies": sorted(t["study"].unique()), "spec": res.spec,
                        "knobs": res.knobs, "skipped": skipped, "running": len(running), "running_trials": running})
    return pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True), records
