"""A study folder's finished trials as MLflow runs (`python -m stability.report STUDY --to-mlflow
URI`, and the sweep's closing pass): a trial whose run is already there and ended is left as it is,
one a stopped sweep left open is completed, any other gets its run; so a second export adds no run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stability.results.schema import BASE_COLUMNS, TRIAL_COLUMNS
from stability.tracking.runs import StudyRuns, missing, trial_params

ROW_PARAMS = tuple(c.name for c in TRIAL_COLUMNS if c.role == "config" and c.name not in ("point", "repeat"))


def planned_configs(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The trial configs of a study's saved spec (its study.yaml record) by trial id; empty when
    there is none this version reads."""
    import yaml

    from stability.sampling import plan_trials
    from stability.spec import SpecError, parse_spec

    spec = (record or {}).get("spec")
    if not isinstance(spec, dict):
        return {}
    try:
        return {cfg.trial_id: cfg for cfg in plan_trials(parse_spec(yaml.safe_dump(spec), "study.yaml"))}
    except (SpecError, ValueError, TypeError):
        return {}


def row_params(row: Mapping[str, Any]) -> dict[str, str]:
    """The params of a trial the saved spec does not plan (rows written by other tools): its config
    and knob columns."""
    keys = [*ROW_PARAMS, *sorted(k for k in row if k not in BASE_COLUMNS)]
    return {k: str(row[k]) for k in keys if k in row and not missing(row[k])}


def run_name(model: Any, optimizer: Any, trial_id: str) -> str:
    return f"{model} {optimizer} {trial_id[:8]}"


def export_trials(runs: StudyRuns, trials: pd.DataFrame, curves: pd.DataFrame,
                  configs: Mapping[str, Any]) -> tuple[int, int]:
    """Each trial of `trials` as a child run of `runs` with its curve; returns (runs added, trials
    whose run was already there)."""
    by_trial = {str(k): g for k, g in curves.groupby("trial_id")} if len(curves) else {}
    added = kept = 0
    for row in trials.to_dict(orient="records"):
        trial_id = str(row["trial_id"])
        existing = runs.trials.get(trial_id)
        if existing is not None and existing.done:
            kept += 1
            continue
        cfg = configs.get(trial_id)
        params = trial_params(cfg) if cfg is not None else row_params(row)
        run = runs.trial(trial_id, run_name(row.get("model"), row.get("optimizer"), trial_id), params,
                         {"point": row.get("point"), "repeat": row.get("repeat")})
        added += existing is None
        curve = by_trial.get(trial_id)
        runs.log_epochs(run, [] if curve is None else curve.sort_values("epoch").to_dict(orient="records"))
        runs.finish(run, row)
    return added, kept


def export_study(uri: str, trials: pd.DataFrame, curves: pd.DataFrame,
                 record: Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    """Every study in the frames (one folder's) as an MLflow experiment of that name with its parent
    run and one child run per trial: {study: (runs added, already there)}. Raises what MLflow raises
    for a store it cannot reach."""
    configs = planned_configs(record)
    done = {}
    for study, rows in trials.groupby("study", sort=True):
        runs = StudyRuns(uri, str(study))
        done[str(study)] = export_trials(runs, rows, curves[curves["study"] == study], configs)
        runs.end_study()
    return done
