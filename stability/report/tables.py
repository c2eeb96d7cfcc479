"""The report's tables as page-model blocks: group statistics, KS tests, failed trials, specs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from stability.report.page import Cell, Listing, Note, Table

SHORT = {"weight_decay": "wd"}
STAT_COLUMNS = ("n", "diverged / failed", "best", "median", "mean", "q25 - q75", "near-opt 1 pt", "near-opt 2 pts",
                "lr sensitivity", "expected best of k trials")


def text(x: Any) -> str:
    """Any value as cell text; blank when missing."""
    return "" if x is None else str(x)


def fmt(x: Any, digits: int = 2) -> str:
    """A number for a table cell; blanks for missing values."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x)


def fmt_p(p: float | None) -> str:
    """A p-value: scientific below 0.001."""
    if p is None or not math.isfinite(p):
        return ""
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _g(x: Any) -> str:
    return "" if x is None else f"{x:.2g}"


def _with_ci(stat: dict[str, Any], name: str) -> Cell:
    """A statistic with its bootstrap interval below it."""
    lo, hi = (stat.get("ci") or {}).get(name) or (None, None)
    return Cell(fmt(stat[name]), "" if lo is None or hi is None else f"[{fmt(lo)}, {fmt(hi)}]")


def _sensitivity(stat: dict[str, Any]) -> Cell:
    """The lr sensitivity (`analysis.sensitivity`) with its interval below it."""
    s = stat.get("lr_sensitivity") or {}
    ci = s.get("ci")
    return Cell(fmt(s.get("value")), f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def _good_range(stat: dict[str, Any], param: str) -> Cell:
    r = (stat.get("good_range") or {}).get(param)
    if not r or r.get("median") is None:
        return Cell("")
    return Cell(_g(r["median"]), f"[{_g(r['lo'])}, {_g(r['hi'])}]")


def summary_table(groups: list[dict[str, Any]], split_by: Sequence[str], params: Sequence[str],
                  multi_study: bool, model_order: Sequence[str] = ()) -> Table:
    """One row per group of the `--json` summary: statistics, intervals, expected best, good ranges;
    models in `model_order` (the figures' order) come first, in that order, each study apart."""
    keys = (["study"] if multi_study else []) + ["model", "optimizer", "epochs"] + list(split_by)
    columns = [(k, "text") for k in keys] + [(c, "") for c in STAT_COLUMNS] + [(f"good {SHORT.get(p, p)}", "")
                                                                               for p in params]
    rank = {m: i for i, m in enumerate(model_order)}
    rows = []
    for g in sorted(groups, key=lambda g: (str(g.get("study")), rank.get(g.get("model"), len(rank)))):
        expected = ", ".join(f"{k}:\u00a0{fmt(v, 1)}" for k, v in (g.get("expected_best") or {}).items())
        rows.append([Cell(text(g.get(k)), cls="text") for k in keys] + [
            Cell(fmt(g["n"])), Cell(f'{fmt(g["n_diverged"])} / {fmt(g["n_failed"])}'), Cell(fmt(g["min"])),
            _with_ci(g, "median"), _with_ci(g, "mean"),
            Cell(f'{fmt(g["q25"])} - {fmt(g["q75"])}' if g["q25"] is not None else ""),
            _with_ci(g, "near_opt_1"), _with_ci(g, "near_opt_2"), _sensitivity(g), Cell(expected, cls="wrap", small=True),
        ] + [_good_range(g, p) for p in params])
    return Table(columns, rows)


def ks_table(rows: list[dict[str, Any]], first: Sequence[str]) -> Table | Note:
    """KS tests between arms (a, b) within each slice named by the `first` columns."""
    if not rows:
        return Note("Nothing to compare: each slice holds a single arm.")
    columns = [(k, "text") for k in [*first, "a", "b"]] + [(c, "") for c in ("D", "p", "n a", "n b")]
    return Table(columns, [[Cell(text(r.get(k)), cls="text") for k in [*first, "a", "b"]] + [
        Cell(fmt(r["D"], 3)), Cell(fmt_p(r["p"])), Cell(fmt(r["n_a"])), Cell(fmt(r["n_b"]))] for r in rows])


def failed_table(trials: pd.DataFrame) -> Table:
    """Every failed trial with its message."""
    failed = trials[trials["status"].astype(str) == "failed"]
    columns = [("study", "text"), ("trial", "text"), ("model", "text"), ("optimizer", "text"), ("lr", ""), ("wd", ""),
               ("message", "text")]
    return Table(columns, [[Cell(text(r.get(k)), cls="text") for k in ("study", "trial_id", "model", "optimizer")] + [
        Cell(fmt(r.get("lr"))), Cell(fmt(r.get("weight_decay"))), Cell(text(r.get("error")), cls="msg")]
        for r in failed.to_dict(orient="records")])


def spec_listings(records: Sequence[dict[str, Any]]) -> list[Listing]:
    """Each folder's study.yaml as YAML, less its sampled-knob records (the spec already says them)."""
    import yaml

    def shown(saved: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in saved.items() if k != "knobs"} if isinstance(saved, dict) else saved

    return [Listing(f'{rec["path"]}: {", ".join(rec["studies"])}',
                    yaml.safe_dump(shown(rec["spec"]), sort_keys=False, default_flow_style=None, width=110)
                    if rec["spec"] else "(no study.yaml in this folder)") for rec in records]


def trials_table(trials: pd.DataFrame, optimizer: str, epochs: int, params: Sequence[str]) -> Table:
    """Every trial of one (optimizer, epochs) slice, failed ones included: by study, model and error."""
    rows = trials[(trials["optimizer"].astype(str) == optimizer) & (trials["epochs"] == epochs)]
    rows = rows.sort_values([c for c in ("study", "model", "top1_err", "trial_id") if c in rows], kind="stable",
                            na_position="last")
    multi = rows["study"].nunique() > 1
    keys = (["study"] if multi else []) + ["trial_id", "model"]
    shown = [p for p in params if p in rows]
    columns = [("trial" if k == "trial_id" else k, "text") for k in keys] + [
        (SHORT.get(p, p), "") for p in shown] + [("status", "text"), ("top-1 error", "")]
    return Table(columns, [[Cell(text(r.get(k)), cls="text") for k in keys] + [Cell(_g(r.get(p))) for p in shown] + [
        Cell(text(r.get("status")), cls="text"), Cell(fmt(r.get("top1_err")))] for r in rows.to_dict(orient="records")])


def _since(updated: float | None, now: float) -> str:
    """A time stamp as UTC clock time and how long before `now` it was."""
    if updated is None:
        return ""
    import datetime

    try:
        clock = datetime.datetime.fromtimestamp(updated, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # not a time this machine can show
        return ""
    ago = max(0.0, now - updated)
    return f"{clock} ({ago / 60:.0f} min before this report)" if ago >= 90 else f"{clock} ({ago:.0f} s before this report)"


def running_table(records: Sequence[dict[str, Any]], now: float) -> Table:
    """The trials running when the report was written (each folder's running.json, as read by
    `stability.report.load.running_trials`)."""
    multi = len(records) > 1
    columns = ([("folder", "text")] if multi else []) + [(c, "text") for c in ("trial", "model", "optimizer")] + [
        ("progress", "text"), ("last epoch ended", "text")]
    rows = []
    for rec in records:
        for t in rec.get("running_trials") or []:
            epoch, epochs = t.get("epoch"), t.get("epochs")
            progress = (f"epoch {epoch} of {epochs}" + (f" ({epoch / epochs:.0%})" if epochs else "")
                        if epoch is not None and epochs is not None else "" if epoch is None else f"epoch {epoch}")
            rows.append(([Cell(rec["path"], cls="text")] if multi else []) + [
                Cell(text(t.get(k)), cls="text") for k in ("trial_id", "model", "optimizer")] + [
                Cell(progress, cls="text"), Cell(_since(t.get("updated"), now), cls="text")])
    return Table(columns, rows)
