"""`run_study`: a sweep run in this process through the sweep's own code path, as `python -m
stability.sweep` runs it, and the study it wrote opened as a `Study`."""

from __future__ import annotations

import json
import os
from typing import Any

from stability.api.errors import StudyError
from stability.api.study import Study, open_folder
from stability.cli import UsageError


def _assignment(key: str, value: Any) -> str:
    """A keyword of run_study as the sweep's `--set key=value` (values as YAML: JSON is YAML)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--set={key}={text}"


def run_study(spec_or_path: str | os.PathLike = "default", *, storage: str | os.PathLike = "runs",
              address: str | None = None, resume: bool = False, mlflow: str | None = None, **sets: Any) -> Study:
    """Run a study in this process through the sweep's own code path (`python -m stability.sweep
    SPEC --storage STORAGE [--address ADDRESS] [--resume] [--mlflow URI] --set key=value ...`) and
    return it opened. `spec_or_path`: a study YAML file or a built-in study's name; `sets`: spec
    keys to override, e.g. `samples=2`, `epochs=[5, 10]`, `**{"train.mixup": 0.8}`. Without
    `address` a private local Ray instance is started for the run and stopped after it; Ray must
    not be initialised in this process already. Finished trials are never re-run. Raises
    StudyError on bad input (nothing written, Ray not started) and on a sweep that stopped before
    every trial ended."""
    message = _run(os.fspath(spec_or_path), os.fspath(storage), address, resume, mlflow, sets)
    if isinstance(message, Study):
        return message
    raise StudyError(message)  # raised here, outside the handlers: no chained traceback from inside


def _run(study: str, storage: str, address: str | None, resume: bool, mlflow: str | None,
         sets: dict[str, Any]) -> Study | str:
    """The opened study, or the one-line message of what stopped it."""
    import ray

    from stability.results.storage import full_uri
    from stability.spec import SpecError, load_spec
    from stability.sweep.__main__ import sweep
    from stability.sweep.lifecycle import storage_root
    from stability.sweep.errors import storage_errors

    assignments = [_assignment(k, v) for k, v in sets.items()]
    argv = ["--storage", storage, *(["--address", address] if address else []), *(["--resume"] if resume else []),
            *(["--mlflow", mlflow] if mlflow is not None else []), *assignments, "--", study]
    if ray.is_initialized():
        return ("Ray is already initialised in this process: run_study connects on its own (call ray.shutdown() "
                "first; give address= to join a cluster)")
    try:
        name = load_spec(study, [a.removeprefix("--set=") for a in assignments]).name
        with storage_errors(argv):
            code = sweep(argv)
        where = full_uri(storage_root(storage) / name)
    except (UsageError, SpecError) as exc:
        return str(exc)
    finally:
        if ray.is_initialized():  # the connection this run made (a cluster joined by address keeps running)
            ray.shutdown()
    if code != 0:
        return (f"the sweep stopped before every trial ended (exit {code}); finished trials are kept: "
                f"run_study(..., resume=True) finishes it")
    try:
        return open_folder(where, (), "auto", 0)
    except UsageError as exc:
        return str(exc)
