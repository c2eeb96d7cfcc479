"""`open_study`: a study folder read as `python -m stability.report` reads it, as a `Study` (its
trials and curves as pandas frames, its verdicts, the `--json` summary as a dict and each report
figure as a plotly figure), through the report's own functions."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from stability.api.errors import StudyError
from stability.cli import UsageError


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


def open_folder(path: str, split_by: Sequence[str], facet_by: str, seed: int) -> Study:
    """The study at `path`; UsageError (the report's one line) when it holds none."""
    from stability.analysis.facets import FACET_BY
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
        return open_folder(os.fspath(path_or_uri), split_by, facet_by, seed)
    except (UsageError, SpecError) as exc:
        message = str(exc)
    raise StudyError(message)  # raised here, outside the handler: no chained traceback from inside
