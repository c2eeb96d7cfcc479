"""Sampling: a study spec -> the full, deterministic list of trials (the plan).

Points are drawn once per optimizer in the unit cube (random: NumPy's PCG64; sobol: SciPy's
scrambled Sobol sequence; grid: an even lattice) and mapped through each model's own ranges,
so by default every model sees the same points (a paired design: differences between models
are not sampling noise) even when a model has wider ranges. The plan depends only on the
spec, so a resumed study asks for exactly the same trials and trial ids.

Why not Ray Tune's or Optuna's samplers: they draw points lazily while trials run; the
paired design, `--dry-run` and `--resume` all need the whole plan before anything starts.

The plan is counted (`count_trials`, arithmetic only) before it is built: a plan over
`MAX_TRIALS` trials, or one whose trial seeds would not fit in int64, is a `SpecError`, so no
spec can make the planner run out of memory or time.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from typing import Any

import numpy as np
from pydantic import ValidationError
from scipy.stats import qmc

from stability.results.schema import CONFIG_KNOBS, knob_column
from stability.spec import (
    Distribution,
    KnobPath,
    SpecError,
    StudySpec,
    TrialConfig,
    dotted,
    validation_message,
)
from stability.spec.knobs import nest
from stability.spec.trial import SEED_LIMIT, trial_seed

MAX_TRIALS = 1_000_000  # a planned trial costs ~7 kB and ~0.1 ms: the largest plan takes ~7 GB and ~2 min
_FLOAT_SAFE = 10**300  # samples beyond this cannot be raised to a fractional power as a float


def grid_axis_points(samples: int, continuous: int) -> int:
    """Points per continuous axis of a grid of about `samples` points."""
    return max(2, round(samples ** (1 / continuous)))


def unit_points(sampler: str, samples: int, dims: list[Distribution], seed: int) -> np.ndarray:
    """(n, d) points in [0, 1) for the given distributions."""
    d = len(dims)
    if d == 0:
        return np.zeros((1, 0))
    if sampler == "random":
        return np.random.default_rng(seed).random((samples, d))
    if sampler == "sobol":
        with warnings.catch_warnings():  # balance warning for non-powers of two: fine for an EDF
            warnings.simplefilter("ignore")
            return qmc.Sobol(d, scramble=True, seed=seed).random(samples)
    continuous = [dist for dist in dims if dist.kind != "choice"]
    per_axis = grid_axis_points(samples, len(continuous)) if continuous else 1
    axes = []
    for dist in dims:
        if dist.kind == "choice":
            k = len(dist.values)
            axes.append([(i + 0.5) / k for i in range(k)])
        else:
            axes.append(list(np.linspace(0.0, 1.0, per_axis)))
    return np.array(list(itertools.product(*axes)), dtype=float)


def map_unit(dist: Distribution, u: float) -> Any:
    """Value of a distribution at quantile u (grid end points included)."""
    if dist.kind == "choice":
        return dist.values[min(int(u * len(dist.values)), len(dist.values) - 1)]
    low, high = dist.values
    if dist.kind == "log_uniform":
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    if dist.kind == "int_uniform":
        return int(min(high, low + math.floor(u * (high - low + 1))))
    return float(low + u * (high - low))


def _sampled(spec: StudySpec, optimizer: str) -> tuple[dict[str, dict[KnobPath, Any]], list[KnobPath], list[Distribution]]:
    """Each model's knob table under one optimizer, the sampled knob paths, and their distributions."""
    tables = {entry.name: spec.knob_table(entry, optimizer) for entry in spec.model_entries()}
    # sorted as dotted text: the order fixes which unit-cube axis drives which knob (and so the trial ids)
    sampled = sorted({k for t in tables.values() for k, v in t.items() if isinstance(v, Distribution)}, key=dotted)
    dims = [next(t[k] for t in tables.values() if isinstance(t.get(k), Distribution)) for k in sampled]
    return tables, sampled, dims


def count_points(sampler: str, samples: int, dims: list[Distribution]) -> int:
    """len(unit_points(sampler, samples, dims, seed)), by arithmetic (nothing is drawn or built)."""
    if not dims:
        return 1
    if sampler != "grid":
        return samples
    choices = math.prod(len(dist.values) for dist in dims if dist.kind == "choice")
    continuous = sum(dist.kind != "choice" for dist in dims)
    if not continuous:
        return choices
    if samples > _FLOAT_SAFE:  # about `samples` points: far over any limit
        return samples * choices
    per_axis = grid_axis_points(samples, continuous)
    if continuous * math.log2(per_axis) > 256:  # over 2**256 points: no need to count them exactly
        return 2**256 * choices
    return per_axis**continuous * choices


def points_per_optimizer(spec: StudySpec) -> dict[str, int]:
    """How many unit-cube points each optimizer's plan has (every model of the study gets them all)."""
    return {optimizer: count_points(spec.sampler, spec.samples, _sampled(spec, optimizer)[2])
            for optimizer in spec.optimizers}


def count_trials(spec: StudySpec) -> int:
    """len(plan_trials(spec)) without building the plan: points x models x epochs x repeats."""
    per_model = sum(points_per_optimizer(spec).values())
    return per_model * len(spec.models) * len(spec.epoch_list) * spec.repeats


def _count_text(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{int(math.log10(n))}"


def check_plan(spec: StudySpec) -> int:
    """The number of trials of the plan; SpecError when it is over MAX_TRIALS or when a trial seed
    (seed + 1000*repeat + point) would not fit in int64."""
    trials = count_trials(spec)
    if trials > MAX_TRIALS:
        raise SpecError(f"study {spec.name}: the plan has {_count_text(trials)} trials; the limit is {MAX_TRIALS:,}: lower samples, "
                        f"repeats, epochs or models" + (" (or the knobs sampled on the grid)" if spec.sampler == "grid" else ""))
    top_seed = trial_seed(spec.seed, max(points_per_optimizer(spec).values()) - 1, spec.repeats - 1)
    if top_seed >= SEED_LIMIT:
        raise SpecError(f"study {spec.name}: seed: trial seeds (seed + 1000*repeat + point) reach {top_seed:,}, over the int64 limit 2**63 - 1: "
                        f"lower seed")
    return trials


def plan_trials(spec: StudySpec) -> list[TrialConfig]:
    """Every trial of the study in run order (points outermost, so partial studies stay balanced).
    Counted first: SpecError for a plan over MAX_TRIALS (see `check_plan`)."""
    check_plan(spec)
    per_optimizer = {}
    for optimizer in spec.optimizers:
        tables, sampled, dims = _sampled(spec, optimizer)
        seed = spec.seed * 1_000_003 + zlib.crc32(optimizer.encode())
        per_optimizer[optimizer] = (tables, sampled, unit_points(spec.sampler, spec.samples, dims, seed))
    plan: list[TrialConfig] = []
    n_points = max(len(points) for _, _, points in per_optimizer.values())
    for point in range(n_points):
        for entry in spec.model_entries():
            for optimizer, (tables, sampled, points) in per_optimizer.items():
                if point >= len(points):
                    continue
                knobs = _resolve(tables[entry.name], sampled, points[point])
                for epochs in spec.epoch_list:
                    for repeat in range(spec.repeats):
                        data_seed = trial_seed(spec.seed, 0, repeat) if spec.data_order == "repeat" else None
                        plan.append(_trial(spec, entry.name, optimizer, knobs, epochs, trial_seed(spec.seed, point, repeat),
                                           data_seed).placed(point, repeat))
    return plan


def _resolve(knobs: dict[KnobPath, Any], sampled: list[KnobPath], u: np.ndarray) -> dict[KnobPath, Any]:
    values = dict(knobs)
    for key, q in zip(sampled, u):
        if isinstance(values.get(key), Distribution):
            values[key] = map_unit(values[key], float(q))
    return values


def _trial(spec: StudySpec, model: str, optimizer: str, knobs: dict[KnobPath, Any], epochs: int, seed: int,
           data_seed: int | None = None) -> TrialConfig:
    """The trial of one model at one resolved point: its sections nested, its knob columns named."""
    sections = {"opt": {}, "train": {}, "model_args": {}, **nest(knobs)}
    opt = sections["opt"]
    extras = {knob_column(path): value for path, value in knobs.items() if path not in CONFIG_KNOBS}
    raw = {
        "model": model, "optimizer": optimizer, "lr": opt.pop("lr"), "weight_decay": opt.pop("weight_decay"),
        "epochs": epochs, "seed": seed, "data_seed": data_seed, "optimizer_args": opt, "dataset": spec.dataset.model_dump(),
        "train": sections["train"], "model_args": sections["model_args"], "extras": extras,
    }
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, f"{model}/{optimizer}", show_input=True)) from None


def plan_summary(spec: StudySpec, plan: list[TrialConfig]) -> dict[str, Any]:
    """The `--dry-run` object: totals, distinct epochs, counts per model and optimizer."""
    counts: dict[str, dict[str, int]] = {}
    for cfg in plan:
        counts.setdefault(cfg.model, {}).setdefault(cfg.optimizer, 0)
        counts[cfg.model][cfg.optimizer] += 1
    return {
        "study": spec.name,
        "trials": len(plan),
        "epochs": sorted({cfg.epochs for cfg in plan}),
        "counts": counts,
        "sampler": spec.sampler,
        "total_epochs": sum(cfg.epochs for cfg in plan),
    }
