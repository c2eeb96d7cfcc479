"""The commands a sweep prints for its user to run next, built in one place.

A resume command repeats what decides where and how the study runs (STUDY, --storage, --address,
--mlflow, --report) and never a credential: URIs are shown without their user info or secret query
parameters (`stability.results.storage.public_uri`), since credentials belong in the environment.
"""

from __future__ import annotations

import argparse
import shlex

from stability.results.storage import public_uri


def resume_command(args: argparse.Namespace, study: str | None = None) -> str:
    """`python -m stability.sweep ... --resume` for the sweep whose command line gave `args` (`study`:
    what to name when the command line named no STUDY, e.g. the built-in default's name)."""
    words = ["python -m stability.sweep"]
    if getattr(args, "study", None) or study:
        words.append(shlex.quote(args.study or study))
    words += ["--storage", shlex.quote(public_uri(str(getattr(args, "storage", None) or "runs")))]
    if getattr(args, "address", None):
        words += ["--address", shlex.quote(args.address)]
    if getattr(args, "mlflow", None):
        words += ["--mlflow", shlex.quote(public_uri(args.mlflow))]
    if getattr(args, "report", False):
        words.append("--report")
    return " ".join([*words, "--resume"])
