"""`python -m stability.report STUDY --to-mlflow URI`: a study folder exported to MLflow as the sweep's
`--mlflow` logs it (`stability.tracking`): one parent run per study, one child run per finished trial.
Idempotent: a trial whose run is there already gets no second one."""

from __future__ import annotations

import sys

from stability.cli import UsageError
from stability.tracking import check_mlflow


def to_mlflow(dirs: list[str], uri: str) -> int:
    """Export every folder; every folder is read (and refused in one line) before anything is sent."""
    from stability.report.load import load
    from stability.results.storage import public_uri

    check_mlflow("--to-mlflow", uri)
    loaded = [load([folder]) for folder in dict.fromkeys(dirs)]
    from mlflow.exceptions import MlflowException

    from stability.tracking.export import export_study

    for trials, curves, records in loaded:
        try:
            done = export_study(uri, trials, curves, records[0].get("spec"))
        except (MlflowException, OSError) as exc:  # an unreachable server, a store that refuses the request
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UsageError(f"--to-mlflow {public_uri(uri)}: cannot log to MLflow: {first}") from None
        for study, (added, kept) in done.items():
            print(f"{study}: {added} run(s) added to MLflow experiment {study!r} at {public_uri(uri)}"
                  f"{f', {kept} already there' if kept else ''}", file=sys.stdout)
    return 0
