"""The Python API, for notebooks (docs/python-api.md): `open_study` reads a study folder as the report
does, `run_study` runs a sweep in this process as `python -m stability.sweep` does, and both give a
`Study`: its trials and curves as pandas frames, its verdicts, the `--json` summary as a dict and
each report figure as a plotly figure.

Bad input (a folder that holds no study, an invalid spec, a refused storage) raises one
`StudyError` whose message is the line the command line prints after `error: `, without the
exception it came from. Imported by `stability` on first use only (`import stability` stays cheap).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from stability.cli import UsageError


class StudyError(Exception):
    """Bad input, said in one line: the command line's message (what follows its `error: `)."""


class Study:
    """A study folder as the report reads it (finished trials; a running study's running trials are
    in `records`). `split_by`, `facet_by` and `seed` are the report's options of those names."""

    def __init__(self, path: str, trials, curves, records: list[dict[str, Any]], split_by: Sequence[str] = (),
                 facet_by: str = "auto", seed: int = 0):
        self.path = path
        self.trials = trials  # pandas.DataFrame: one row per finished trial (README, "Results")
        self.curves = curves  # pandas.DataFrame: one row per trial and epoch
        self.records = records  # per folder: path, studies, spec (study.yaml), knobs, skipped, running trials
        self.split_by, self.facet_by, self.seed = list(split_by), facet_by, seed

    def __repr__(self) -> str:
        models = sorted(self.trials["model"].astype(str).unique())
        return f"<Study {self.path}: {len(self.trials)} trials, models {', '.join(models)}>"

    @cached_property
    def _built(self) -> tuple[str, Any]:
        """The summary as `--json` prints it (text) and the page model: computed once, on first use."""
        from stability.report.build import build

        data, page = build(self.trials, self.curves, self.records, self.split_by, self.seed, self.facet_by)
        return json.dumps(data, allow_nan=False), page

    @property
    def spec(self) -> dict[str, Any] | None:
        """The resolved study spec saved beside the results (study.yaml's `spec`), None without one."""
        record = self.records[0].get("spec") if self.records else None
        return record.get("spec") if isinstance(record, dict) else None

    def summary(self) -> dict[str, Any]:
        """Exactly what `python -m stability.report PATH --json` prints, as a new dict each call."""
        return json.loads(self._built[0])

    @property
    def verdicts(self):
        """The verdicts (the summary's `verdicts`: per pair of models, optimizer and epochs) as a pandas
        DataFrame, one row each."""
        import pandas as pd

        return pd.DataFrame(self.summary()["verdicts"])

    @property
    def figures(self) -> dict[str, Any]:
        """Every figure of the report by its export name, in page order: plotly figures (shown inline
        by Jupyter), those folded on the page included."""
        return {f.name: f.figure for f in self._built[1].figures()}

    def figure(self, name: str):
        """One figure of the report by name (`list(study.figures)` names them all)."""
        figures = self.figures
        if name not in figures:
            raise KeyError(f"no figure {name!r} in this report; figures: {', '.join(figures)}")
        return figures[name]


def _open(path: str, split_by: Sequence[str], facet_by: str, seed: int) -> Study:
    from analysis.facets import FACET_BY
    from stability.report.columns import check_split_by
    from stability.report.load import load

    if facet_by not in FACET_BY:
        raise UsageError(f"facet_by {facet_by!r}: expected one of {', '.join(FACET_BY)}")
    trials, curves, records = load([path])
    check_split_by(trials, list(split_by))
    return Study(path, trials, curves, records, split_by, facet_by, seed)


def open_study(path_or_uri: str | os.PathLike, *, split_by: Sequence[str] = (), facet_by: str = "auto",
               seed: int = 0) -> Study:
    """A study folder (`<storage>/<study>`, a local path or a pyarrow.fs URI such as
    `s3://bucket/runs/default`) read as `python -m stability.report` reads it. Raises StudyError
    when it holds no study of ours."""
    from stability.spec import SpecError

    try:
        return _open(os.fspath(path_or_uri), split_by, facet_by, seed)
    except (UsageError, SpecError) as exc:
        message = str(exc)
    raise StudyError(message)  # raised here, outside the handler: no chained traceback from inside


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
    from stability.sweep.__main__ import storage_root, sweep
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
        return _open(where, (), "auto", 0)
    except UsageError as exc:
        return str(exc)
