"""Reading result folders: trials and curves of every folder, and one record per folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stability.cli import UsageError
from stability.results.schema import REQUIRED_COLUMNS


def _read(folder: str):
    """One folder's results; UsageError naming the folder when it holds none or not ours."""
    from stability.results.store import read_study

    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{folder}: no such results folder")
    try:
        res = read_study(path)
    except FileNotFoundError:
        raise UsageError(f"{folder}: holds no results (expected {path / 'trials.parquet'})") from None
    except Exception as exc:  # a damaged or foreign Parquet file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{folder}: cannot read results: {first}") from None
    if res.trials.empty:
        raise UsageError(f"{folder}: holds no results (trials.parquet has no rows)")
    missing = [c for c in REQUIRED_COLUMNS if c not in res.trials]
    if missing:
        raise UsageError(f"{folder}: trials table lacks column(s) {', '.join(missing)}; not a stability results folder")
    return res


def load(dirs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Trials and curves of every folder, concatenated, and one record per folder (path,
    study names, spec). Study names that repeat across folders get the folder appended."""
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
        records.append({"path": str(res.path), "studies": sorted(t["study"].unique()), "spec": res.spec,
                        "knobs": res.knobs})
    return pd.concat(trials, ignore_index=True), pd.concat(curves, ignore_index=True), records
