"""The results schema (version 1, docs/architecture.md "The Parquet schema"): every column of the trials and curves
tables with its Arrow type and role, and the builders of their rows. Every writer and reader
of results uses this module.

Roles: `key` identifies a row; `config` is what the trial was asked to do; `outcome` is what it
measured; `knob` columns (one per other sampled or overridden knob) come from the plan and are
added per study (`extra_column_type`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from stability.spec.trial import SEED_STRIDE, TrialConfig

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "failed")
Role = Literal["key", "config", "outcome", "knob"]


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    role: Role
    doc: str


TRIAL_COLUMNS: tuple[Column, ...] = (
    Column("study", pa.string(), "key", "study name"),
    Column("trial_id", pa.string(), "key", "hash of the trial's resolved config (stable across resumes)"),
    Column("model", pa.string(), "config", "model name"),
    Column("optimizer", pa.string(), "config", "adamw or sgd"),
    Column("lr", pa.float64(), "config", "peak learning rate"),
    Column("weight_decay", pa.float64(), "config", "weight decay"),
    Column("epochs", pa.int64(), "config", "training length in epochs"),
    Column("seed", pa.int64(), "config", "seed of every random source of the trial"),
    Column("batch_size", pa.int64(), "config", "images per optimizer step"),
    Column("point", pa.int64(), "config", "index of the sampled point within its optimizer's plan (paired across models)"),
    Column("repeat", pa.int64(), "config", "seed index at that point (0 .. repeats-1)"),
    Column("status", pa.string(), "outcome", "ok, diverged or failed"),
    Column("top1_err", pa.float64(), "outcome", "top-1 error (%) at the last epoch"),
    Column("best_top1_err", pa.float64(), "outcome", "lowest top-1 error (%) of any epoch"),
    Column("train_loss", pa.float64(), "outcome", "mean training loss of the last epoch"),
    Column("wall_time_s", pa.float64(), "outcome", "seconds the trial trained and evaluated"),
    Column("images_per_s", pa.float64(), "outcome", "training throughput"),
    Column("params", pa.int64(), "outcome", "model parameters"),
    Column("gflops", pa.float64(), "outcome", "multiply-adds per image (the paper's convention), in G"),
    Column("patch_cos_sim", pa.float64(), "outcome", "mean pairwise cosine similarity of last-layer patch tokens"),
    Column("error", pa.string(), "outcome", "message of a failed trial, else empty"),
    Column("patch_cos_sim_layers", pa.list_(pa.float64()), "outcome", "the same similarity after every block"),
)
CURVE_COLUMNS: tuple[Column, ...] = (
    Column("study", pa.string(), "key", "study name"),
    Column("trial_id", pa.string(), "key", "the trial"),
    Column("epoch", pa.int64(), "key", "epoch, from 1"),
    Column("train_loss", pa.float64(), "outcome", "mean training loss of the epoch"),
    Column("top1_err", pa.float64(), "outcome", "top-1 error (%) after the epoch"),
    Column("lr", pa.float64(), "outcome", "learning rate at the end of the epoch"),
    Column("elapsed_s", pa.float64(), "outcome", "seconds since the trial started"),
)

BASE_COLUMNS = frozenset(c.name for c in TRIAL_COLUMNS)  # every trials column that is not a knob
REQUIRED_COLUMNS = ("study", "trial_id", "model", "optimizer", "lr", "weight_decay", "epochs", "status", "top1_err")
OUTCOME_COLUMNS = tuple(c.name for c in TRIAL_COLUMNS if c.role == "outcome")
METRICS = ("status", "top1_err", "best_top1_err", "train_loss", "wall_time_s", "images_per_s", "params", "gflops",
           "patch_cos_sim")  # what a trial's metrics give a row (besides error and patch_cos_sim_layers)


CONFIG_KNOBS = {("opt", "lr"): "lr", ("opt", "weight_decay"): "weight_decay", ("train", "batch_size"): "batch_size"}


def knob_column(path: tuple[str, ...]) -> str:
    """Result column of a knob at `path` (its section first, e.g. ("train", "distillation", "type")):
    a config column for lr, weight decay and batch size; else the path below the section, dotted,
    unless that name is a base column (then the whole path)."""
    if path in CONFIG_KNOBS:
        return CONFIG_KNOBS[path]
    leaf = ".".join(path[1:])
    return ".".join(path) if leaf in BASE_COLUMNS else leaf


def extra_column_type(values: list[Any]) -> pa.DataType:
    """Arrow type of a knob column from every value the plan gives it."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def recover_positions(trials, study_seed: int | None):
    """`point` and `repeat` of results written before those columns existed, from the seed
    (`spec.trial.trial_seed`: study seed + SEED_STRIDE * repeat + point) and the saved spec's seed. Returns
    the frame itself when nothing is missing, else a copy."""
    missing = trials["point"].isna() if "point" in trials else None
    if study_seed is None or trials.empty or (missing is not None and not missing.any()):
        return trials
    trials = trials.copy()
    if missing is None:
        trials["point"], trials["repeat"] = None, None
        missing = trials["point"].isna()
    rows = missing & trials["seed"].notna() if "seed" in trials else missing & False
    offset = trials.loc[rows, "seed"].astype("int64") - int(study_seed)
    trials.loc[rows, "point"] = offset % SEED_STRIDE
    trials.loc[rows, "repeat"] = offset // SEED_STRIDE
    for column in ("point", "repeat"):
        trials[column] = trials[column].astype("int64" if trials[column].notna().all() else "Int64")
    return trials


def trial_schema(knob_columns: dict[str, pa.DataType]) -> pa.Schema:
    fields = [(c.name, c.type) for c in TRIAL_COLUMNS] + sorted(knob_columns.items())
    return pa.schema([pa.field(n, t) for n, t in fields], metadata={"stability_schema_version": str(SCHEMA_VERSION)})


def curve_schema() -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type) for c in CURVE_COLUMNS])


def trial_row(study: str, cfg: TrialConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """A trials-table row: the config's columns, the trial's metrics, its knob columns."""
    row = {
        "study": study, "trial_id": cfg.trial_id, "model": cfg.model, "optimizer": cfg.optimizer,
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "epochs": cfg.epochs, "seed": cfg.seed,
        "batch_size": cfg.train.batch_size, "point": cfg.point, "repeat": cfg.repeat,
    }
    row.update({k: metrics.get(k) for k in METRICS})
    row["error"] = metrics.get("error") or ""
    row["patch_cos_sim_layers"] = list(metrics.get("patch_cos_sim_layers") or [])
    row.update(cfg.extras)
    return row


def failed_row(study: str, cfg: TrialConfig, message: str) -> dict[str, Any]:
    return trial_row(study, cfg, {"status": "failed", "error": message, "top1_err": math.nan})


def cell(value: Any, dtype: pa.DataType) -> Any:
    """A Python value as the column's Arrow type wants it (NaN as null, objects as JSON text)."""
    if value is None:
        return None
    if pa.types.is_list(dtype):
        return [cell(v, dtype.value_type) for v in value]
    if pa.types.is_string(dtype) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    if pa.types.is_floating(dtype):
        value = float(value)
        return value if not math.isnan(value) else None
    return value
