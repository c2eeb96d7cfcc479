"""The verdicts of one study, optimizer and budget as a matrix (rendered by `analysis.plots`).

A 9-model study makes 36 pairs per optimizer and budget: as sentences they are a wall. The
matrix puts the models in rows and columns (in the figures' order); the cell of row r and column c
holds P(r better than c) from the verdict of that pair (`analysis.verdicts`; the cell across the
diagonal holds one minus it), marks the decided pairs, and carries the pair's sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MATRIX_MODELS = 4  # from this many models on, the verdicts open with matrices (fewer: the sentences)


@dataclass
class MatrixData:
    """P(row better than column) per cell (NaN on the diagonal and where no verdict exists), which
    cells are decided (for the row or against it) and each cell's sentence."""

    title: str
    models: list[str]
    p: np.ndarray
    decided: np.ndarray
    sentences: list[list[str]]
    subtitle: str = ""


def verdict_keys(verdicts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The (study, optimizer, epochs) of the verdicts, in order."""
    keys = sorted({(str(v["study"]), str(v["optimizer"]), int(v["epochs"])) for v in verdicts})
    return [{"study": s, "optimizer": o, "epochs": e} for s, o, e in keys]


def matrix_models(verdicts: Sequence[dict[str, Any]]) -> int:
    """The most models any (study, optimizer, epochs) compares."""
    models: dict[tuple, set[str]] = {}
    for v in verdicts:
        models.setdefault((v["study"], v["optimizer"], v["epochs"]), set()).update((v["a"], v["b"]))
    return max((len(m) for m in models.values()), default=0)


def verdict_matrix_data(verdicts: Sequence[dict[str, Any]], study: str, optimizer: str, epochs: int,
                        order: Sequence[str] = ()) -> MatrixData:
    """The matrix of one study, optimizer and budget; models in `order` first (the figures' order),
    any other after them alphabetically."""
    mine = [v for v in verdicts if (str(v["study"]), str(v["optimizer"]), int(v["epochs"])) == (study, optimizer, epochs)]
    present = {m for v in mine for m in (v["a"], v["b"])}
    models = [m for m in order if m in present] + sorted(present - set(order))
    at = {m: i for i, m in enumerate(models)}
    n = len(models)
    p = np.full((n, n), np.nan)
    decided = np.zeros((n, n), dtype=bool)
    sentences = [["" for _ in models] for _ in models]
    for v in mine:
        i, j = at[v["a"]], at[v["b"]]
        share = v["p_a_better"]
        p[i, j], p[j, i] = share, (1 - share if share is not None else np.nan)
        decided[i, j] = decided[j, i] = v["decision"] != "undecided"
        sentences[i][j] = sentences[j][i] = v["sentence"]
    holm = max((v.get("holm_n") or 0 for v in mine), default=0)
    subtitle = ("cell: P(row better than column) over the paired points\nframed, in bold: decided (Wilson interval "
                f"clear of 0.5 and Wilcoxon p < 0.05,\nHolm-adjusted over {holm} comparisons); hover: the verdict")
    return MatrixData(f"Verdicts: {optimizer}, {epochs} epochs", models, p, decided, sentences, subtitle)
