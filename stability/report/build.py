"""The report's content from loaded frames: the `--json` summary and the page model (its figures),
as `python -m stability.report` and `stability.open_study` both compute them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from stability.report.columns import factors, sampled_params
from stability.report.page import Page
from stability.report.sections import build_page
from stability.report.summary import summary


def build(trials: pd.DataFrame, curves: pd.DataFrame, records: list[dict[str, Any]], split_by: Sequence[str] = (),
          seed: int = 0, facet_by: str = "auto") -> tuple[dict[str, Any], Page]:
    """The summary (`--json`, `facets` included) and the page of loaded results (`load.load`)."""
    split_by = list(split_by)
    params = sampled_params(trials, records)
    knobs = [knob for rec in records for knob in rec.get("knobs") or []]
    data = summary(trials, split_by, params, seed, factors(trials, split_by, params), knobs)
    page = build_page(trials, curves, records, data, split_by, params, seed, facet_by)
    data["facets"] = page.facets
    return data, page
