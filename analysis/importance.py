"""Hyper-parameter importance per group (docs/architecture.md, "Background"): which sampled knob the error
depends on most, through Optuna's importance evaluators on an in-memory Optuna study built from
the trials. PED-ANOVA (Watanabe et al. 2023; what tells the top quantile of trials from the
rest) is the default, fANOVA (Hutter et al. 2014) on request. Both vary between runs, so each
importance comes with a percentile bootstrap interval over trials. Failed trials are left out;
diverged trials count at their recorded error.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.importance import (
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from stability.analysis.edges import knobs_for
from stability.analysis.stats import ERROR, GROUP_KEYS, _plain, iter_groups, usable_trials

METHODS = ("ped_anova", "fanova")
MIN_TRIALS = 6  # PED-ANOVA's top quantile max(0.1, 5/n) must leave trials outside it
TOO_FEW = f"fewer than {MIN_TRIALS} usable trials"
FLAT = "every trial has the same error"
_PRIMITIVE = (type(None), bool, int, float, str)


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's log lines and warnings silenced for the block, its verbosity restored after."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _choice(value: Any) -> Any:
    """A choice as a value Optuna's categorical distribution takes (others as canonical JSON)."""
    value = _plain(value)
    return value if isinstance(value, _PRIMITIVE) else json.dumps(value, sort_keys=True, default=str)


def distribution(knob: dict[str, Any], observed: Sequence[Any] = ()) -> BaseDistribution | None:
    """The Optuna distribution of a knob record (log_uniform, uniform, int_uniform, choice);
    choices also take the `observed` values the record lacks. None for a malformed record."""
    kind, values = knob.get("kind"), list(knob.get("values") or [])
    try:
        if kind == "choice":
            choices = list(dict.fromkeys(_choice(v) for v in values))
            choices += [c for c in dict.fromkeys(_choice(v) for v in observed) if c not in choices and c is not None]
            return CategoricalDistribution(choices) if choices else None
        low, high = float(values[0]), float(values[1])
        if kind == "int_uniform":
            return IntDistribution(math.ceil(low), math.floor(high))
        if kind in ("log_uniform", "uniform"):
            return FloatDistribution(low, high, log=kind == "log_uniform")
    except (IndexError, TypeError, ValueError):
        return None
    return None


def _param(value: Any, dist: BaseDistribution) -> Any:
    """A trial's knob value as a parameter of `dist` (numbers clipped into the range), None when
    missing."""
    if isinstance(dist, CategoricalDistribution):
        choice = _choice(value)
        return choice if choice is not None and choice in dist.choices else None
    number = pd.to_numeric(pd.Series([_plain(value)]), errors="coerce").iloc[0]
    if pd.isna(number):
        return None
    if isinstance(dist, IntDistribution):
        return int(np.clip(round(float(number)), dist.low, dist.high))
    return float(np.clip(float(number), dist.low, dist.high))


def frozen_trials(rows: pd.DataFrame, dists: dict[str, BaseDistribution]) -> list[FrozenTrial]:
    """One complete Optuna trial per row: the knob values as params, top1_err as value."""
    out = []
    for record in rows[[*dists, ERROR]].to_dict("records"):
        params = {name: _param(record[name], dist) for name, dist in dists.items()}
        params = {k: v for k, v in params.items() if v is not None}
        out.append(create_trial(params=params, distributions={k: dists[k] for k in params},
                                value=float(record[ERROR])))
    return out


def evaluator(method: str, n: int, seed: int):
    """PED-ANOVA with top quantile max(0.1, 5/n), or fANOVA seeded with `seed`."""
    if method == "ped_anova":
        return PedAnovaImportanceEvaluator(target_quantile=max(0.1, 5 / n))
    if method == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


class _Trials:
    """What Optuna's importance evaluators read of a study (its complete trials, one minimised
    objective) over a list of trials that may repeat (a bootstrap resample): each entry a shallow
    copy with its own number and id, as `Study.add_trials` numbers them. Hand-written because
    `add_trials` deep-copies and checks every trial, which was half of a paper-sized report's build;
    `tests/test_importance_edges.py` checks that both give the same importances."""

    directions = [StudyDirection.MINIMIZE]

    def __init__(self, trials: Sequence[FrozenTrial]):
        self._trials = []
        for number, trial in enumerate(trials):
            entry = copy.copy(trial)
            entry.number, entry._trial_id = number, number
            self._trials.append(entry)

    @property
    def direction(self) -> StudyDirection:
        return self.directions[0]

    def _is_multi_objective(self) -> bool:
        return False

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        trials = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


def evaluate(trials: Sequence[FrozenTrial], names: Sequence[str], method: str, seed: int,
             study: Any = None) -> dict[str, float]:
    """Normalised importances of `names` over `trials` (0 for a knob no trial sets); `study`: an
    Optuna study holding exactly `trials` (default: a view of them, see `_Trials`)."""
    study = _Trials(trials) if study is None else study
    present = [name for name in names if any(name in t.params for t in trials)]
    found = get_param_importances(study, evaluator=evaluator(method, len(trials), seed), params=present) \
        if present else {}
    return {name: float(found.get(name, 0.0)) for name in names}


def _group(rows: pd.DataFrame, knobs: Sequence[dict[str, Any]], method: str, n_boot: int, seed: int,
           ci_level: float) -> dict[str, Any] | None:
    dists = {}
    for knob in knobs:
        column = knob.get("column")
        if column in rows and column not in dists:
            dist = distribution(knob, rows[column].drop_duplicates().tolist() if knob.get("kind") == "choice" else ())
            if dist is not None and not dist.single():
                dists[column] = dist
    if not dists:
        return None
    n = len(rows)
    trials = frozen_trials(rows, dists)
    names = [name for name in dists if any(name in t.params for t in trials)]  # knobs some trial sets
    if not names:
        return None
    out: dict[str, Any] = {"method": method, "n": n, "note": None}
    note = TOO_FEW if n < MIN_TRIALS else FLAT if np.ptp(rows[ERROR].to_numpy(float)) == 0 else None
    if note is not None:
        out.update(knobs={name: {"importance": None, "ci": None} for name in names}, note=note)
        return out
    point = evaluate(trials, names, method, seed)
    rng = np.random.default_rng(seed)
    boots = {name: [] for name in names}
    for b in range(n_boot):
        found = evaluate([trials[i] for i in rng.integers(0, n, n)], names, method, seed + 1 + b)
        for name in names:
            boots[name].append(found[name])
    tail = 100 * (1 - ci_level) / 2
    out["knobs"] = {
        name: {"importance": point[name],
               "ci": [float(v) for v in np.percentile(boots[name], [tail, 100 - tail])] if n_boot >= 2 else None}
        for name in names}
    return out


def importance(trials: pd.DataFrame, knobs: Sequence[dict[str, Any]], method: str = "ped_anova", n_boot: int = 20,
               seed: int = 0, ci_level: float = 0.95) -> list[dict[str, Any]]:
    """Per (study, model, optimizer, epochs) group with a sampled knob that varies:
    {study, model, optimizer, epochs, method, n, note, knobs: {knob: {importance, ci: [lo, hi]}}}.

    Importances are Optuna's (normalised to sum to 1 over the group's knobs): PED-ANOVA with top
    quantile max(0.1, 5/n) ("ped_anova") or fANOVA ("fanova"), the error minimised; `ci` is a
    percentile bootstrap interval over trials (n_boot resamples). `knobs` are study.yaml's knob
    records (column, optimizer, model, kind, values); knobs whose column is absent, that no trial
    of the group sets or whose range is a single value are skipped. A trial without a value for
    a knob (NaN) leaves it out of that trial's params: PED-ANOVA treats it as conditional,
    fANOVA uses only the trials that set every knob. With fewer than MIN_TRIALS usable trials,
    or one error for every trial, each importance is None and `note` says why."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    usable = usable_trials(trials)
    rows = []
    with quiet_optuna():
        for key, g in iter_groups(usable, GROUP_KEYS):
            found = _group(g, knobs_for(knobs, key["model"], key["optimizer"]), method, n_boot, seed, ci_level)
            if found is not None:
                rows.append({**key, **found})
    return rows
