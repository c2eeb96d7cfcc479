"""Typed configuration of one trial: what the trial engine needs and nothing about Ray.

Every key is documented in one line (the `description` of its field); `python -m
stability.sweep --help-spec` prints them. A study spec (stability.spec) resolves into one
`TrialConfig` per trial.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

OPTIMIZERS = ("adamw", "sgd")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Which data a trial trains on."""

    name: str = Field("digits", description="dataset name: digits, cifar10, cifar100, imagefolder or synthetic (random images, for benchmarks)")
    root: str | None = Field(None, description="folder holding the dataset files (not needed for digits)")
    img_size: PositiveInt | None = Field(None, description="input resolution in pixels (default: the dataset's own)")
    download: bool = Field(False, description="allow torchvision to download cifar10/cifar100 into root")
    options: dict[str, Any] = Field(default_factory=dict, description="extra loader options, e.g. num_workers, auto_augment")


class TeacherRecipe(_Strict):
    """How the sweep trains a teacher given by model name (the study's data and recipe otherwise)."""

    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="teacher optimizer")
    lr: float = Field(1e-3, gt=0, description="teacher peak learning rate")
    weight_decay: float = Field(0.05, ge=0, description="teacher weight decay")
    epochs: PositiveInt = Field(30, description="teacher training length in epochs")
    seed: int = Field(0, ge=0, description="teacher seed")


class Distillation(_Strict):
    """DeiT knowledge distillation (REFERENCE.md section 2): a frozen teacher's logits as extra targets."""

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


class PatchLosses(_Strict):
    """Weights of the over-smoothing losses of Gong et al. 2021 (REFERENCE.md section 3); 0 = off."""

    cosine: float = Field(0.0, ge=0, description="penalty: mean pairwise cosine similarity of last-layer patch tokens")
    contrastive: float = Field(0.0, ge=0, description="each last-layer patch must match its own first-layer embedding")
    mixing: float = Field(0.0, ge=0, description="patch-aligned CutMix; the head classifies every patch by its source image")

    @property
    def active(self) -> bool:
        return self.cosine > 0 or self.contrastive > 0 or self.mixing > 0


class Recipe(_Strict):
    """The training recipe (REFERENCE.md section 1). Defaults suit short small-image runs."""

    batch_size: PositiveInt = Field(128, description="images per optimizer step (all workers together)")
    warmup_epochs: float = Field(5.0, ge=0, description="linear warm-up length in epochs (per-iteration)")
    warmup_start: float = Field(0.1, gt=0, le=1, description="warm-up starts at this fraction of the peak lr")
    lr_floor: float = Field(0.005, ge=0, le=1, description="half-cosine ends at this fraction of the peak lr")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the cross-entropy targets")
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0 = off; the paper uses 0.8)")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off; the paper uses 1.0)")
    ema: bool = Field(False, description="evaluate an exponential moving average of the weights")
    ema_decay: float = Field(0.9998, gt=0, lt=1, description="EMA decay per step (warmed up from 0 as in timm)")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth rate (timm drop_path_rate)")
    grad_clip: float | None = Field(None, gt=0, description="clip the global gradient norm to this value (None = off)")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16 autocast on CUDA; the CPU always runs fp32")
    augment: bool = Field(True, description="random translation/crop (and flip where the dataset allows)")
    eval_batch_size: PositiveInt = Field(512, description="images per evaluation step")
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU trials only)")
    channels_last: bool = Field(True, description="channels-last memory format for conv stems on CUDA")
    distillation: Distillation = Field(default_factory=Distillation, description="DeiT distillation (see Distillation)")
    patch_losses: PatchLosses = Field(default_factory=PatchLosses, description="over-smoothing loss weights (see PatchLosses)")

    @model_validator(mode="after")
    def _mixing_brings_its_own_cutmix(self) -> "Recipe":
        if self.patch_losses.mixing > 0 and (self.mixup > 0 or self.cutmix > 0):
            raise ValueError("patch_losses.mixing brings its own patch-aligned CutMix: set mixup and cutmix to 0")
        return self


class TrialConfig(_Strict):
    """One fully resolved trial: a point of the study plus the recipe."""

    model: str = Field(description="model name from stability.models.list_models()")
    optimizer: Literal["adamw", "sgd"] = Field(description="adamw or sgd")
    lr: float = Field(gt=0, description="peak learning rate")
    weight_decay: float = Field(ge=0, description="weight decay (AdamW: decoupled, multiplied by lr in PyTorch)")
    epochs: PositiveInt = Field(description="training length in epochs")
    seed: int = Field(0, ge=0, description="seed of every random source of the trial")
    optimizer_args: dict[str, Any] = Field(default_factory=dict, description="momentum, nesterov (sgd); betas, eps (adamw)")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig, description="the data")
    train: Recipe = Field(default_factory=Recipe, description="the recipe")
    model_args: dict[str, Any] = Field(default_factory=dict, description="keyword overrides for build_model")
    extras: dict[str, Any] = Field(default_factory=dict, description="other sampled knobs, kept as result columns")

    @field_validator("optimizer_args")
    @classmethod
    def _known_optimizer_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - {"momentum", "nesterov", "betas", "eps"}
        if unknown:
            raise ValueError(f"unknown optimizer argument(s) {sorted(unknown)}; valid: momentum, nesterov, betas, eps")
        return value

    @property
    def trial_id(self) -> str:
        """Stable id: a hash of the resolved config's non-default values (the same after a resume,
        and after an upgrade that adds knobs with defaults)."""
        blob = json.dumps(self.model_dump(mode="json", exclude_defaults=True), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]
