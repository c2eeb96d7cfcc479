"""Study specs: YAML -> validated, typed `StudySpec` (docs/architecture.md).

Safe, bounded YAML only (`yaml_loader`: size, aliases, depth, duplicate keys). Every problem
becomes a `SpecError` whose one-line message names the key or file at fault and, for names, the
valid choices; echoed input is cut short. Numbers are finite, and trial seeds fit in int64.
Nothing here starts Ray or writes files.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from stability.spec.errors import check_keys, short, validation_message
from stability.spec.knobs import KnobPath, dotted, flatten, parse_path
from stability.spec.trial import (
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    SEED_LIMIT,
    trial_seed,
    DatasetConfig,
    Recipe,
    StrictModel,
)

DISTRIBUTIONS = ("log_uniform", "uniform", "int_uniform", "choice")
SAMPLERS = ("random", "sobol", "grid")
MAX_NAME_CHARS = 100  # study and model names: folder names, Ray trial names and messages stay short


def _non_finite(value: Any) -> Any:
    """The first non-finite float in a value (walking lists and maps), else None."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((bad for bad in map(_non_finite, items) if bad is not None), None)


def _check_finite(value: Any) -> None:
    bad = _non_finite(value)
    if bad is not None:
        raise ValueError(f"must be a finite number, got {short(bad)}" + (f" in {short(value)}" if value is not bad else ""))


class Distribution(BaseModel):
    """A sampled knob: exactly one of the distribution keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["log_uniform", "uniform", "int_uniform", "choice"]
    values: tuple[Any, ...]

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty list")
            _check_finite(list(self.values))
            return self
        if len(self.values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            raise ValueError(f"{self.kind} needs two numbers [low, high], got {short(list(self.values))}")
        if not all(_fits_float(v) for v in self.values):
            raise ValueError(f"{self.kind} bounds must be finite numbers, got {short(list(self.values))}")
        low, high = self.values
        if self.kind == "log_uniform" and low <= 0:
            raise ValueError(f"log_uniform bounds must be positive, got {list(self.values)}")
        if low >= high:
            raise ValueError(f"{self.kind} needs low < high, got {list(self.values)}")
        return self

    def dump(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def _fits_float(value: float) -> bool:
    """A finite number that a float can hold (the sampler maps bounds through floats)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


Knob = Union[Distribution, bool, int, float, str, list, None]


def _to_knob(value: Any) -> Any:
    """Read `{log_uniform: [lo, hi]}` style maps as Distributions; constants must be finite."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"a distribution is a map with one key ({', '.join(DISTRIBUTIONS)}), "
                             f"got {short(sorted(map(str, value)))}")
        (kind, values), = value.items()
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {short(kind)}; choose from: {', '.join(DISTRIBUTIONS)}")
        if not isinstance(values, list):
            raise ValueError(f"{kind} takes a list, got {short(values)}")
        if kind != "choice":  # YAML reads 1e-3 (no dot) as a string
            values = [_number(v) for v in values]
        return Distribution(kind=kind, values=tuple(values))
    _check_finite(value)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _knob_map(value: Any, prefix: str = "") -> Any:
    """Each value of a knob map read by `_to_knob`; an error names its key (after `prefix`)."""
    if not isinstance(value, dict):
        return value
    knobs = {}
    for key, item in value.items():
        try:
            knobs[key] = _to_knob(item)
        except ValidationError as exc:
            raise ValueError(f"{prefix}{short(key, quote=False)}: {validation_message(exc)}") from None
        except ValueError as exc:
            raise ValueError(f"{prefix}{short(key, quote=False)}: {exc}") from None
    return knobs


def _is_distribution_map(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def nested_section(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The pydantic model of a nested recipe section (e.g. `distillation`), else None."""
    field = model.model_fields.get(key) if model is not None else None
    annotation = field.annotation if field is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _section_at(model: type[BaseModel], path: KnobPath) -> type[BaseModel] | None:
    for key in path:
        model = nested_section(model, key)
    return model


def _flatten_sections(value: Any, model: type[BaseModel]) -> Any:
    """`{distillation: {type: {choice: [..]}}}` -> `{"distillation.type": {choice: [..]}}`, so every
    leaf of a nested section (at any depth) can be a knob; dotted keys pass through."""
    if not isinstance(value, dict):
        return value
    is_section = lambda path, item: not _is_distribution_map(item) and _section_at(model, path) is not None  # noqa: E731
    return {dotted(path): item for path, item in flatten(value, is_section).items()}


def _check_recipe_key(key: str) -> None:
    """A flattened train key must name a Recipe field, walking nested sections."""
    model: type[BaseModel] | None = Recipe
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = "train" + "".join(f".{p}" for p in parts[:depth])
        check_keys([part], model.model_fields, short(where, quote=False))
        if depth < len(parts) - 1:
            model = nested_section(model, part)
            if model is None:
                raise ValueError(f"{short('train.' + '.'.join(parts[:depth + 1]), quote=False)} is not a section with keys")


def _optimizer_knob_maps(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _knob_map(knobs, f"{short(name, quote=False)}.") for name, knobs in value.items()}
    return value


class Resources(StrictModel):
    """How trials are placed on the cluster."""

    workers_per_trial: PositiveInt = Field(1, description="Ray Train workers per trial (data-parallel when > 1)")
    cpus_per_worker: PositiveFloat = Field(1, description="CPUs reserved per worker")
    gpus_per_worker: float | None = Field(None, ge=0, description="GPUs per worker (default: 1/trials_per_gpu when the cluster has GPUs, else 0)")
    trials_per_gpu: PositiveInt = Field(1, description="small trials sharing one GPU")
    max_failures: NonNegativeInt = Field(1, description="retries of a trial that raises before it is recorded as failed")
    max_concurrent: PositiveInt | None = Field(None, description="cap on trials running at once (default: what resources allow)")
    fused_trials: PositiveInt = Field(1, description="train up to K sampled configs of one model together in one process (one forward/backward for all)")
    checkpoint_every: NonNegativeInt | None = Field(None, description="epochs between mid-trial checkpoints; 0 = off; default: after the first epoch ending 5 minutes after the last checkpoint")

    @model_validator(mode="after")
    def _fused_runs_in_one_process(self) -> "Resources":
        if self.fused_trials > 1 and self.workers_per_trial > 1:
            raise ValueError("fused_trials > 1 needs workers_per_trial 1 (fused trials run in one process)")
        return self


class ModelEntry(StrictModel):
    """A model with its own search ranges (e.g. RegNetY's wider lr range)."""

    name: str = Field(description="model name")
    optimizers: dict[str, dict[str, Knob]] = Field(default_factory=dict, description="per-optimizer knob overrides")
    model_args: dict[str, Any] = Field(default_factory=dict, description="build_model overrides for this model")

    @field_validator("optimizers", mode="before")
    @classmethod
    def _read_distributions(cls, value: Any) -> Any:
        return _optimizer_knob_maps(value)

    @field_validator("model_args", mode="before")
    @classmethod
    def _finite_model_args(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key, item in value.items():
                try:
                    _check_finite(item)
                except ValueError as exc:
                    raise ValueError(f"{short(key, quote=False)}: {exc}") from None
        return value


class StudySpec(StrictModel):
    """A whole study: what to train, how to sample, how to run."""

    name: str = Field(description="study name; results go to <storage>/<name>/")
    description: str = Field("", description="what the study reproduces")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, description="the data (see DatasetConfig)")
    models: list[Union[str, ModelEntry]] = Field(min_length=1, description="model names, or {name, optimizers, model_args}")
    optimizers: dict[str, dict[str, Knob]] = Field(min_length=1, description="optimizer -> knobs (lr and weight_decay required)")
    sampler: Literal["random", "sobol", "grid"] = Field("sobol", description="random, sobol (scrambled quasi-random) or grid")
    samples: PositiveInt = Field(8, description="sampled points per model and optimizer (grid: about this many)")
    epochs: Union[PositiveInt, list[PositiveInt]] = Field(10, description="training length; a list makes a training-length study")
    repeats: PositiveInt = Field(1, description="seeds per sampled point")
    seed: NonNegativeInt = Field(0, description="seed of the sampler and of the trials")
    data_order: Literal["trial", "repeat"] = Field("trial", description="trial: each trial's batches come from its own seed; repeat: every trial of a repeat (all models and points) sees the same batches, read once per fused group")
    train: dict[str, Knob] = Field(default_factory=dict, description="recipe overrides (keys of stability.spec.trial.Recipe)")
    model_args: dict[str, Knob] = Field(default_factory=dict, description="build_model overrides for every model")
    resources: Resources = Field(default_factory=Resources, description="placement (see Resources)")

    @field_validator("optimizers", mode="before")
    @classmethod
    def _read_distributions(cls, value: Any) -> Any:
        return _optimizer_knob_maps(value)

    @field_validator("train", mode="before")
    @classmethod
    def _read_train_knobs(cls, value: Any) -> Any:
        return _knob_map(_flatten_sections(value, Recipe))

    @field_validator("model_args", mode="before")
    @classmethod
    def _read_knob_distributions(cls, value: Any) -> Any:
        return _knob_map(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if len(value) > MAX_NAME_CHARS:
            raise ValueError(f"at most {MAX_NAME_CHARS} characters (it names the results folder), got {len(value):,}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"must be letters, digits, '_', '-' or '.', got {short(value)}")
        return value

    @field_validator("models")
    @classmethod
    def _models_once(cls, value: list[str | ModelEntry]) -> list[str | ModelEntry]:
        """A model listed twice with the same ranges would run every trial twice (one id, one row)."""
        seen: set[str] = set()
        for item in value:
            entry = item if isinstance(item, ModelEntry) else ModelEntry(name=item)
            if len(entry.name) > MAX_NAME_CHARS:
                raise ValueError(f"a model name is at most {MAX_NAME_CHARS} characters, got {short(entry.name)}")
            key = _canonical(entry.model_dump())
            if key in seen:
                raise ValueError(f"{entry.name} is listed twice (give each entry its own optimizers or model_args, "
                                 f"or list it once)")
            seen.add(key)
        return value

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("the epochs list is empty")
            seen: set[int] = set()
            for epochs in value:
                if epochs in seen:
                    raise ValueError(f"{epochs} is listed twice (it would run every trial twice)")
                seen.add(epochs)
        return value

    @model_validator(mode="after")
    def _trial_seeds_fit(self) -> "StudySpec":
        top = trial_seed(self.seed, self.samples, self.repeats)
        if top >= SEED_LIMIT:
            raise ValueError(f"seed: trial seeds are seed + 1000*repeat + point and must stay below 2**63; "
                             f"seed + 1000*repeats + samples is {short(top)}: lower seed")
        return self

    @field_validator("train")
    @classmethod
    def _train_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            _check_recipe_key(key)
        return value

    @field_validator("optimizers")
    @classmethod
    def _optimizer_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, knobs in value.items():
            if name not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer {short(name)}; choose from: {', '.join(OPTIMIZERS)}")
            check_keys(knobs, ("lr", "weight_decay", *OPTIMIZER_DEFAULTS[name]), f"optimizers.{name}")
            for required in ("lr", "weight_decay"):
                if required not in knobs:
                    raise ValueError(f"{name}: {required} is required")
        return value

    @property
    def epoch_list(self) -> list[int]:
        return list(self.epochs) if isinstance(self.epochs, list) else [self.epochs]

    def model_entries(self) -> list[ModelEntry]:
        return [ModelEntry(name=m) if isinstance(m, str) else m for m in self.models]

    def knob_table(self, entry: ModelEntry, optimizer: str) -> dict[KnobPath, Any]:
        """Every knob of one model under one optimizer by path, section first ("opt", "train" or
        "model_args"): a constant or a Distribution; the model's own entries win."""
        table: dict[KnobPath, Any] = {}
        for section, knobs in (("opt", self.optimizers[optimizer]), ("opt", entry.optimizers.get(optimizer, {})),
                               ("train", self.train), ("model_args", self.model_args), ("model_args", entry.model_args)):
            table.update({(section, *parse_path(key)): value for key, value in knobs.items()})
        return table

    def sampled_knobs(self) -> list[dict[str, Any]]:
        """Each sampled knob per optimizer and model: its path, kind and bounds (or choices)."""
        return [{"optimizer": optimizer, "model": entry.name, "path": dotted(path), "kind": value.kind,
                 "values": list(value.values)}
                for optimizer in self.optimizers for entry in self.model_entries()
                for path, value in self.knob_table(entry, optimizer).items() if isinstance(value, Distribution)]

    def resolved(self) -> dict[str, Any]:
        """The spec as plain data (distributions as `{kind: [..]}`), for study.yaml."""
        return _plain(self.model_dump())


def _canonical(value: Any) -> str:
    """One text per value, equal for equal values (key order ignored where keys sort)."""
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys of mixed types
        return repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"kind", "values"} and value["kind"] in DISTRIBUTIONS:
        return {value["kind"]: list(value["values"])}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
