"""Experiment trackers: a study's trials as MLflow runs, one parent run per study and one child run
per trial (params: every knob of the trial's config; metrics: train_loss, top1_err and lr per epoch,
the epoch as step; tags: study, trial_id, status, point, repeat).

Two writers, the same runs: the sweep's driver as trials report (`python -m stability.sweep ...
--mlflow URI`, `stability.sweep.tracking`) and the export of a study folder (`python -m
stability.report STUDY --to-mlflow URI`, `stability.tracking.export`). Runs are found again by their
tags, so neither adds a run that is already there. MLflow is an optional extra (`pip install
"stability[mlflow]"`); importing this package does not import it.
"""

from __future__ import annotations

from stability.cli import UsageError

MISSING = ('{flag} needs MLflow, an optional extra: pip install "stability[mlflow]" (from a checkout: '
           'pip install ".[mlflow]")')


def check_mlflow(flag: str, uri: str) -> None:
    """UsageError (one line) when MLflow cannot be imported or the tracking URI is empty: said before
    any work starts."""
    if not uri.strip():
        raise UsageError(f"{flag}: expected a tracking URI such as sqlite:///mlflow.db or http://host:5000")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError(MISSING.format(flag=flag)) from None
