"""Typed configuration of one trial: what the trial engine needs and nothing about Ray.

Every key is documented in one line (the `description` of its field); `python -m
stability.sweep --help-spec` prints them. A study spec (stability.spec) resolves into one
`TrialConfig` per trial.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, PrivateAttr, model_validator

OPTIMIZERS = ("adamw", "sgd")
Number = Union[int, float]  # ints stay ints: trial ids hash the values as given
SEED_LIMIT = 2**63  # seeds are int64 in the results and seed torch's generators
SEED_STRIDE = 1000  # a trial's seed: study seed + SEED_STRIDE * repeat + point


def trial_seed(study_seed: int, point: int, repeat: int) -> int:
    """The seed of the `repeat`-th trial at sampled point `point` (results written before the
    `point` and `repeat` columns are read back by inverting it)."""
    return study_seed + SEED_STRIDE * repeat + point


class StrictModel(BaseModel):
    """Base of every spec and config model: unknown keys are errors, instances are immutable, and
    every float is finite (inf or nan as an lr, a decay or a recipe weight is a typo, not a value)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimizerArgs(StrictModel):
    """Optimizer arguments besides lr and weight decay; unset (None) means the optimizer's default."""

    momentum: Number | None = Field(None, description="SGD momentum (default 0.9)")
    nesterov: bool | None = Field(None, description="SGD Nesterov momentum (default true; off when momentum is 0)")
    betas: tuple[Number, Number] | None = Field(None, description="AdamW betas (default [0.9, 0.999])")
    eps: Number | None = Field(None, description="AdamW epsilon (default 1e-8)")

    @model_validator(mode="after")
    def _ranges(self) -> "OptimizerArgs":
        if self.momentum is not None and not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        if self.eps is not None and not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        return self

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {  # the one place optimizer defaults live
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8},
    "sgd": {"momentum": 0.9, "nesterov": True},
}


class DatasetConfig(StrictModel):
    """Which data a trial trains on."""

    name: str = Field("digits", description="dataset name: digits, cifar10, cifar100, imagefolder, shards (python -m stability.data prepare) or synthetic (random images, for benchmarks)")
    root: str | None = Field(None, description="folder holding the dataset files (not needed for digits)")
    img_size: PositiveInt | None = Field(None, description="input resolution in pixels (default: the dataset's own)")
    download: bool = Field(False, description="allow torchvision to download cifar10/cifar100 into root")
    options: dict[str, Any] = Field(default_factory=dict, description="extra loader options, e.g. num_workers, auto_augment, min_scale")


class TeacherRecipe(StrictModel):
    """How the sweep trains a teacher given by model name (the study's data and recipe otherwise)."""

    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="teacher optimizer")
    lr: float = Field(1e-3, gt=0, description="teacher peak learning rate")
    weight_decay: float = Field(0.05, ge=0, description="teacher weight decay")
    epochs: PositiveInt = Field(30, description="teacher training length in epochs")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="teacher seed")


class Distillation(StrictModel):
    """DeiT knowledge distillation (Touvron et al. 2021): a frozen teacher's logits as extra targets."""

    type: Literal["none", "soft", "hard"] = Field("none", description="none, soft (KL at temperature tau) or hard (teacher argmax)")
    teacher: str | None = Field(None, description="teacher: a model name (trained once by the sweep) or a checkpoint path (.pt)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation loss; the label loss gets 1 - alpha")
    tau: float = Field(1.0, gt=0, description="softmax temperature of soft distillation")
    teacher_recipe: TeacherRecipe = Field(default_factory=TeacherRecipe, description="how a teacher given by name is trained")

    @model_validator(mode="after")
    def _needs_teacher(self) -> "Distillation":
        if self.type != "none" and not self.teacher:
            raise ValueError(f"distillation type {self.type!r} needs a teacher (a model name or a checkpoint path)")
        return self

    @property
    def active(self) -> bool:
        return self.type != "none"


class PatchLosses(StrictModel):
    """Weights of the over-smoothing losses of Gong et al. 2021 (Gong et al. 2021); 0 = off."""

    cosine: float = Field(0.0, ge=0, description="penalty: mean pairwise cosine similarity of last-layer patch tokens")
    contrastive: float = Field(0.0, ge=0, description="each last-layer patch must match its own first-layer embedding")
    mixing: float = Field(0.0, ge=0, description="patch-aligned CutMix; the head classifies every patch by its source image")

    @property
    def active(self) -> bool:
        return self.cosine > 0 or self.contrastive > 0 or self.mixing > 0


FUSED = {"fused": True}  # Recipe marks, see Recipe
TEACHER = {"teacher": True}


class Recipe(StrictModel):
    """The training recipe (Xiao et al. 2021, section 5.4). Defaults suit short small-image runs.

    Each field says itself who shares it: FUSED, the fused engine implements it as the lone engine
    does (any other key keeps its default in a fused group); TEACHER, a teacher trained by name
    takes it from its students (the regularisers and the study's factors stay at their defaults, so
    the students' sampled knobs share one teacher)."""

    @classmethod
    def keys(cls, mark: str) -> frozenset[str]:
        """The fields marked `mark` ("fused" or "teacher")."""
        return frozenset(name for name, field in cls.model_fields.items()
                         if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(mark))

    batch_size: PositiveInt = Field(128, description="images per optimizer step (all workers together)",
                              json_schema_extra=FUSED | TEACHER)
    warmup_epochs: float = Field(5.0, ge=0, description="linear warm-up length in epochs (per-iteration)",
                              json_schema_extra=FUSED | TEACHER)
    warmup_start: float = Field(0.1, gt=0, le=1, description="warm-up starts at this fraction of the peak lr",
                              json_schema_extra=FUSED | TEACHER)
    lr_floor: float = Field(0.005, ge=0, le=1, description="half-cosine ends at this fraction of the peak lr",
                              json_schema_extra=FUSED | TEACHER)
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the cross-entropy targets",
                              json_schema_extra=FUSED | TEACHER)
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0 = off; the paper uses 0.8)")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off; the paper uses 1.0)")
    ema: bool = Field(False, description="evaluate an exponential moving average of the weights")
    ema_decay: float = Field(0.9998, gt=0, lt=1, description="EMA decay per step (warmed up from 0 as in timm)")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth rate (timm drop_path_rate)")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value (None = off)",
                              json_schema_extra=FUSED)
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16 autocast on CUDA; the CPU always runs fp32",
                              json_schema_extra=FUSED | TEACHER)
    augment: bool = Field(True, description="random translation/crop (and flip where the dataset allows)",
                              json_schema_extra=FUSED | TEACHER)
    eval_batch_size: PositiveInt = Field(512, description="images per evaluation step",
                              json_schema_extra=FUSED | TEACHER)
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU trials only)",
                              json_schema_extra=TEACHER)
    channels_last: bool = Field(True, description="channels-last memory format for conv stems on CUDA",
                              json_schema_extra=FUSED | TEACHER)
    distillation: Distillation = Field(default_factory=Distillation, description="DeiT distillation (see Distillation)")
    patch_losses: PatchLosses = Field(default_factory=PatchLosses, description="over-smoothing loss weights (see PatchLosses)")

    @model_validator(mode="after")
    def _mixing_brings_its_own_cutmix(self) -> "Recipe":
        if self.patch_losses.mixing > 0 and (self.mixup > 0 or self.cutmix > 0):
            raise ValueError("patch_losses.mixing brings its own patch-aligned CutMix: set mixup and cutmix to 0")
        return self


class TrialConfig(StrictModel):
    """One fully resolved trial: a point of the study plus the recipe.

    Where the plan put it (`point`: index of its sampled point within its optimizer's plan;
    `repeat`: its seed index) is kept beside the fields, not in them, so it never enters the
    trial id; the sampler sets it and the results row records it."""

    _point: int | None = PrivateAttr(default=None)
    _repeat: int | None = PrivateAttr(default=None)

    model: str = Field(description="model name from stability.models.list_models()")
    optimizer: Literal["adamw", "sgd"] = Field(description="adamw or sgd")
    lr: float = Field(gt=0, description="peak learning rate")
    weight_decay: float = Field(ge=0, description="weight decay (AdamW: decoupled, multiplied by lr in PyTorch)")
    epochs: PositiveInt = Field(description="training length in epochs")
    seed: int = Field(0, ge=0, lt=SEED_LIMIT, description="seed of every random source of the trial (data: see data_seed)")
    data_seed: int | None = Field(None, ge=0, lt=SEED_LIMIT, description="seed of the data order and augmentation (None: seed); trials with one data_seed see the same batches")
    optimizer_args: OptimizerArgs = Field(default_factory=OptimizerArgs, description="momentum, nesterov (sgd); betas, eps (adamw)")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, description="the data")
    train: Recipe = Field(default_factory=Recipe, description="the recipe")
    model_args: dict[str, Any] = Field(default_factory=dict, description="keyword overrides for build_model")
    extras: dict[str, Any] = Field(default_factory=dict, description="other sampled knobs, kept as result columns")

    @model_validator(mode="after")
    def _arguments_of_this_optimizer(self) -> "TrialConfig":
        valid = OPTIMIZER_DEFAULTS[self.optimizer]
        wrong = sorted(set(self.optimizer_args.given()) - set(valid))
        if wrong:
            raise ValueError(f"{self.optimizer} takes no {', '.join(wrong)}; its arguments: {', '.join(valid)}")
        return self

    @property
    def point(self) -> int | None:
        return self._point

    @property
    def repeat(self) -> int | None:
        return self._repeat

    def placed(self, point: int, repeat: int) -> "TrialConfig":
        """This config, marked as the plan's `repeat`-th trial of sampled point `point`."""
        self._point, self._repeat = point, repeat
        return self

    @property
    def batches_seed(self) -> int:
        """What draws the trial's data order and augmentation: data_seed, else the trial's seed."""
        return self.seed if self.data_seed is None else self.data_seed

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Arguments of the optimizer besides lr and weight decay, defaults filled in."""
        return {**OPTIMIZER_DEFAULTS[self.optimizer], **self.optimizer_args.given()}

    @property
    def trial_id(self) -> str:
        """Stable id: a hash of the resolved config's non-default values (the same after a resume,
        and after an upgrade that adds knobs with defaults)."""
        blob = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]
