"""Fused trials: K sampled configurations of one model trained in one forward/backward."""

from .engine import check_fusable_configs, run_fused_trials
from .model import FusedViT, check_fusable, supported_models

__all__ = ["FusedViT", "check_fusable", "check_fusable_configs", "run_fused_trials", "supported_models"]
